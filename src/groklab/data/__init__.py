"""Tasks: a registry of task families, each giving tensors and a seeded train / val / test split.

A new task family is one file here plus one line in ``TASKS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from groklab.config import TaskConfig, UserError, is_prime
from groklab.data import addition, dyck, images, parity, question_formation, tense_inflection
from groklab.data.modular import MODULAR_OPS, ModOp
from groklab.data.permutations import ORDER as S5_ORDER
from groklab.data.permutations import S5_OPS
from groklab.data.sequences import SPLITS, Score, SequenceTask, encode
from groklab.data.split import split_indices, split_sizes

Tensor = torch.Tensor


@dataclass
class Dataset:
    """Every example of a task, on one device, with index tensors for the three splits (and any task-defined ones)."""

    x: Tensor
    """Inputs: (N, seq) long tokens (`binop`: `a op b =`), or (N, features) float."""
    y: Tensor
    """(N,) long class labels (for `binop`, the answer c predicted at the last position); (N, seq) for sequence tasks."""
    n_classes: int
    vocab_size: int
    """Number of input tokens (0 for float features)."""
    train: Tensor
    val: Tensor
    test: Tensor
    operand_positions: tuple[int, ...] = ()
    """Token positions of the operands (the MLP embeds only these)."""
    mask: Tensor | None = None
    """Sequence tasks: (N, seq) bool, the positions that have a target (the model then gives logits at every position)."""
    extra_splits: dict[str, Tensor] = field(default_factory=dict)
    """Task-defined splits beside train/val/test, evaluated and logged as `<name>/loss` and `<name>/acc` (e.g. `gen`)."""
    score: Score | None = None
    """Task-defined correctness: (forward, x, logits, y, mask) of some examples -> (n,) per-example score in [0, 1],
    whose mean is the split's `acc` (see groklab.data.sequences.Score). Default: argmax == y (sequence tasks: over
    every target position together)."""
    vocab: tuple[str, ...] = ()
    """Sequence tasks: the token strings by id (so runs and reports can print examples)."""

    @property
    def split_names(self) -> tuple[str, ...]:
        return ("train", "val", "test", *self.extra_splits)

    def indices(self, name: str) -> Tensor:
        return self.extra_splits[name] if name in self.extra_splits else getattr(self, name)

    def to(self, device: torch.device) -> Dataset:
        move = {k: getattr(self, k).to(device) for k in ("x", "y", "train", "val", "test")}
        return dataclasses.replace(
            self,
            **move,
            mask=None if self.mask is None else self.mask.to(device),
            extra_splits={k: v.to(device) for k, v in self.extra_splits.items()},
        )

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        idx = self.indices(name)
        return self.x[idx], self.y[idx]


# ---------------------------------------------------------------------------------------------
# Binary operation tables: modular ops, S5 ops, and ops users register from Python.

_USER_OPS: dict[str, ModOp] = {}


def register_op(name: str, fn: Callable[[Tensor, Tensor, int], Tensor], *, divides: bool = False, nonzero_y: bool = False) -> None:
    """Add a binary op mod p: ``fn(x, y, p)`` maps long tensors of operands to answers in [0, p).

    ``divides`` marks ops that need p prime; ``nonzero_y`` drops the pairs with y = 0. Register the op in
    every process that trains or resumes with it (configs hold its name, never code).
    """
    if name in MODULAR_OPS or name in S5_OPS:
        raise UserError(f"op {name!r} is built in; register a user op under another name")
    _USER_OPS[name] = ModOp(fn, divides=divides, nonzero_y=nonzero_y)


def op_names() -> list[str]:
    return [*MODULAR_OPS, *S5_OPS, *_USER_OPS]


def check_task(task: TaskConfig) -> None:
    """Raise UserError for a task the registries cannot build (config.validate checks the plain value ranges)."""
    if task.name == "binop":
        check_op(task.op, task.p)


def check_op(name: str, p: int) -> None:
    """Raise UserError unless op `name` is known and defined for modulus p."""
    if name in S5_OPS:
        return
    op = MODULAR_OPS.get(name) or _USER_OPS.get(name)
    if op is None:
        raise UserError(f"task.op={name!r} is not valid: expected one of {', '.join(op_names())}")
    if p < 2:
        raise UserError(f"task.p={p} is not valid: expected an integer >= 2")
    if op.divides and not is_prime(p):
        raise UserError(f"task.p={p} is not valid for task.op={name!r}: division needs a prime modulus")


def op_table(name: str, p: int) -> tuple[Tensor, Tensor, Tensor]:
    """(a, b, c): 1-D long tensors over every valid pair, in row-major order of (a, b), with c = a ∘ b.

    For S5 ops the elements are indices into ``list(itertools.permutations(range(5)))`` and p is ignored.
    """
    check_op(name, p)
    if name in S5_OPS:
        a, b = torch.cartesian_prod(torch.arange(S5_ORDER), torch.arange(S5_ORDER)).T
        return a, b, S5_OPS[name](a, b)
    op = MODULAR_OPS.get(name) or _USER_OPS[name]
    a, b = torch.cartesian_prod(torch.arange(p), torch.arange(1 if op.nonzero_y else 0, p)).T
    c = op.fn(a, b, p).long()
    if c.shape != a.shape or bool(((c < 0) | (c >= p)).any()):
        raise UserError(f"task.op={name!r} returned values outside [0, {p}) or of the wrong shape")
    return a, b, c


def n_elements(task: TaskConfig) -> int:
    return S5_ORDER if task.op in S5_OPS else task.p


# ---------------------------------------------------------------------------------------------
# Task builders: TaskConfig -> Dataset (on the CPU; the trainer moves it to the device).


def _binop(task: TaskConfig, split_seed: int) -> Dataset:
    a, b, c = op_table(task.op, task.p)
    n = n_elements(task)
    op_token, eq_token = n, n + 1
    x = torch.stack([a, torch.full_like(a, op_token), b, torch.full_like(a, eq_token)], dim=1)  # (N, 4)
    n_train, n_val = split_sizes(len(c), task.train_frac, task.val_frac)
    splits = split_indices(len(c), n_train, n_val, split_seed)
    return Dataset(x, c, n_classes=n, vocab_size=n + 2, train=splits[0], val=splits[1], test=splits[2], operand_positions=(0, 2))


def _parity(task: TaskConfig, split_seed: int) -> Dataset:
    x, y = parity.parity_data(task.n_bits, task.k_bits, task.n_samples, split_seed)
    n_train, n_val = split_sizes(len(y), task.train_frac, task.val_frac)
    return Dataset(x, y, 2, 0, *split_indices(len(y), n_train, n_val, split_seed))


def _addition(task: TaskConfig, split_seed: int) -> Dataset:
    x, y = addition.addition_pairs(task.p)
    n_train, n_val = split_sizes(len(y), task.train_frac, task.val_frac)
    return Dataset(x, y, 2 * task.p - 1, task.p, *split_indices(len(y), n_train, n_val, split_seed), operand_positions=(0, 1))


def _images(x: Tensor, y: Tensor, task: TaskConfig, split_seed: int) -> Dataset:
    n_val = round(task.val_frac * len(y))
    if task.train_size + n_val >= len(y):
        raise UserError(
            f"task.train_size={task.train_size} is not valid: with val_frac={task.val_frac:g} it must be below "
            f"{len(y) - n_val} so the test split of the {len(y)} images is not empty"
        )
    return Dataset(x, y, int(y.max()) + 1, 0, *split_indices(len(y), task.train_size, n_val, split_seed))


def _sequences(task: SequenceTask) -> Dataset:
    """A sequence task's splits as one next-token Dataset: the splits are consecutive index ranges, `gen` an extra split."""
    x, y, mask = encode([s for name in SPLITS for s in task.splits[name]], task.vocab)
    ends = torch.tensor([len(task.splits[name]) for name in SPLITS]).cumsum(0).tolist()
    train, val, test, gen = (torch.arange(a, b) for a, b in zip([0, *ends[:-1]], ends, strict=True))
    vocab = len(task.vocab)
    return Dataset(x, y, vocab, vocab, train, val, test, mask=mask, extra_splits={"gen": gen}, score=task.score, vocab=task.vocab)


TASKS: dict[str, Callable[[TaskConfig, int], Dataset]] = {
    "binop": _binop,
    "parity": _parity,
    "addition": _addition,
    "digits": lambda task, seed: _images(*images.digits_data(), task, seed),
    "mnist": lambda task, seed: _images(*images.mnist_data(task.data_dir), task, seed),
    "dyck": lambda task, seed: _sequences(dyck.build(task, seed)),
    "question_formation": lambda task, seed: _sequences(question_formation.build(task, seed)),
    "tense_inflection": lambda task, seed: _sequences(tense_inflection.build(task, seed)),
}


def build_task(task: TaskConfig, split_seed: int) -> Dataset:
    return TASKS[task.name](task, split_seed)


__all__ = ["Dataset", "build_task", "check_op", "op_names", "op_table", "register_op", "TASKS"]
