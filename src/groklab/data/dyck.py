"""Dyck-(k, m) (Murty et al. 2023): well-nested strings of k bracket types, at most m deep, modelled as a language.

Sampler (the paper's): with an empty stack, end with probability ½, else open one of the k types; below the depth
limit, close with ½, else open; at the limit, close; strings under 4 tokens (or over the task's `max_len`) are drawn again.

Split: a string's *shapes* are the sequences of stack depths (after each token) of its top-level constituents
(`(a (b b) a) (c c)` has shapes (1, 2, 1, 0) and (1, 0)). Val and test hold strings every shape of which occurs in
training; the generalization split `gen` holds strings with at least one shape that never does. Eval strings are
distinct from each other and from the training strings.

Score: at every position where the next token closes a bracket at least `min_distance` tokens after its opener, the
argmax over the closing brackets is the right one; a string counts when every such bracket does (with
min_distance > 1 the eval splits keep only strings that have one).
"""

from __future__ import annotations

import random
import string

import torch

from groklab.config import TaskConfig
from groklab.data.sequences import SPECIALS, Forward, SequenceTask, draw, make_vocab

Tensor = torch.Tensor


def bracket_names(k: int) -> list[str]:
    """k type names: a, b, ... (numbers beyond 26 types)."""
    return list(string.ascii_lowercase[:k]) if k <= 26 else [str(t) for t in range(k)]


def sample(rng: random.Random, names: list[str], max_depth: int, max_len: int = 0) -> tuple[str, ...]:
    """One string of at least 4 (and, if max_len, at most max_len) tokens: `(a` opens type a, `a)` closes it."""
    while True:
        out: list[str] = []
        stack: list[str] = []
        while True:
            if not stack and rng.random() < 0.5:
                break
            if stack and (len(stack) == max_depth or rng.random() < 0.5):
                out.append(f"{stack.pop()})")
            else:
                stack.append(rng.choice(names))
                out.append(f"({stack[-1]}")
        if len(out) >= 4 and (not max_len or len(out) <= max_len):
            return tuple(out)


def shapes(tokens: tuple[str, ...]) -> list[tuple[int, ...]]:
    """The depth sequence of each top-level constituent, in order."""
    out, current, depth = [], [], 0
    for token in tokens:
        depth += 1 if token.startswith("(") else -1
        current.append(depth)
        if depth == 0:
            out.append(tuple(current))
            current = []
    return out


def opener_distances(tokens: tuple[str, ...]) -> list[int]:
    """For each token: its distance in tokens to its opener if it closes a bracket, else 0."""
    out, opened = [], []
    for t, token in enumerate(tokens):
        if token.startswith("("):
            opened.append(t)
            out.append(0)
        else:
            out.append(t - opened.pop())
    return out


def closing_distances(y: Tensor, first_close: int, k: int, max_depth: int) -> Tensor:
    """opener_distances over target tensors: y (n, seq) with ids first_close - k .. first_close - 1 opening and
    first_close .. first_close + k - 1 closing -> (n, seq) long (0 where y does not close a bracket)."""
    n, seq = y.shape
    is_open = (y >= first_close - k) & (y < first_close)
    is_close = (y >= first_close) & (y < first_close + k)
    rows = torch.arange(n, device=y.device)
    depth = torch.zeros(n, dtype=torch.long, device=y.device)
    opened_at = torch.zeros(n, max_depth + 2, dtype=torch.long, device=y.device)  # position of the open bracket per depth
    out = torch.zeros_like(y)
    for t in range(seq):  # one pass over positions, every string at once
        depth = depth + is_open[:, t]
        opened_at[rows, depth] = torch.where(is_open[:, t], t, opened_at[rows, depth])
        out[:, t] = torch.where(is_close[:, t], t - opened_at[rows, depth], 0)
        depth = depth - is_close[:, t].long()
    return out


def build(task: TaskConfig, seed: int) -> SequenceTask:
    names = bracket_names(task.n_brackets)
    vocab = make_vocab({f"({n}" for n in names} | {f"{n})" for n in names})
    assert vocab[len(SPECIALS) + task.n_brackets] == f"{names[0]})"  # sorted: every `(x` before every `x)`
    rng = random.Random(seed)
    used: set[tuple[str, ...]] = set()
    train = draw(rng, lambda r: sample(r, names, task.max_depth, task.max_len), task.train_size, used, "task.train_size")
    seen = {shape for s in train for shape in shapes(s)}

    def scorable(s: tuple[str, ...]) -> bool:
        return task.min_distance <= 1 or max(opener_distances(s)) >= task.min_distance

    def in_distribution(r: random.Random) -> tuple[str, ...] | None:
        s = sample(r, names, task.max_depth, task.max_len)
        return s if scorable(s) and all(shape in seen for shape in shapes(s)) else None

    def out_of_distribution(r: random.Random) -> tuple[str, ...] | None:
        s = sample(r, names, task.max_depth, task.max_len)
        return s if scorable(s) and any(shape not in seen for shape in shapes(s)) else None

    splits = {
        "train": train,
        "val": draw(rng, in_distribution, task.eval_size, used, "task.eval_size"),
        "test": draw(rng, in_distribution, task.eval_size, used, "task.eval_size"),
        "gen": draw(rng, out_of_distribution, task.gen_size, used, "task.gen_size"),
    }
    first_close = len(SPECIALS) + task.n_brackets

    def score(forward: Forward, x: Tensor, logits: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """(n, seq, vocab), (n, seq) -> (n,): every scored closing bracket is the argmax among the closing brackets."""
        closes = (y >= first_close) & (y < first_close + task.n_brackets)
        if task.min_distance > 1:
            closes &= closing_distances(y, first_close, task.n_brackets, task.max_depth) >= task.min_distance
        predicted = logits[..., first_close : first_close + task.n_brackets].argmax(-1) + first_close
        return ((predicted == y) | ~closes).all(-1).float()

    return SequenceTask(vocab, splits, score)
