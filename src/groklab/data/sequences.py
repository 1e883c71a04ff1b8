"""What the sequence tasks (structural grokking: Dyck, question formation, tense inflection) share: drawing distinct
examples from a seeded generator into splits, and turning token strings into next-token tensors under a loss mask.

A task module builds a `SequenceTask` (its vocabulary, its splits as token strings, its score); groklab.data turns it
into a Dataset. Every example is one language-model sequence `<s> w_1 ... w_n </s>`: the model reads `<s> w_1 ... w_n`
and predicts `w_1 ... w_n </s>`, so the loss covers every real token and no padding.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from groklab.config import TaskConfig
from groklab.errors import UserError

Tensor = torch.Tensor
Forward = Callable[[Tensor], Tensor]
Score = Callable[[Forward, Tensor, Tensor, Tensor, Tensor], Tensor]
"""(forward, x (n, seq), logits (n, seq, vocab) = forward(x), y (n, seq), mask (n, seq)) -> (n,) per-example
correctness in {0, 1}. `forward` (the model as evaluation runs it) lets a score decode greedily."""

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SPECIALS = (PAD, BOS, EOS)
"""Token ids 0, 1, 2 of every sequence task's vocabulary."""
SPLITS = ("train", "val", "test", "gen")


@dataclass(frozen=True)
class SequenceTask:
    vocab: tuple[str, ...]
    """Token strings by id, starting with SPECIALS."""
    splits: dict[str, list[tuple[str, ...]]]
    """Each split of SPLITS -> its examples as words (without <s> and </s>)."""
    score: Score


def make_vocab(words: set[str]) -> tuple[str, ...]:
    """SPECIALS, then the task's words in sorted order (so ids do not depend on the order examples were drawn in)."""
    return (*SPECIALS, *sorted(words))


def draw(
    rng: random.Random, make: Callable[[random.Random], tuple[str, ...] | None], n: int, used: set[tuple[str, ...]], what: str
) -> list[tuple[str, ...]]:
    """n examples `make(rng)` that return one (None = not one for this split) whose source sentence (the words before
    the first ".", or all of them) is in no other example drawn with the same `used` set (which grows), or a one-line
    UserError naming the size `what` when the generator cannot supply that many within 200·n + 1000 draws."""
    out: list[tuple[str, ...]] = []
    for _ in range(200 * n + 1000):
        if len(out) == n:
            return out
        example = make(rng)
        if example is None or (key := source(example)) in used:
            continue
        used.add(key)
        out.append(example)
    if len(out) == n:
        return out
    raise UserError(f"{what}={n} is not valid: the generator found only {len(out)} distinct such examples; ask for fewer")


def draw_splits(
    seed: int, task: TaskConfig, in_distribution: Callable[[random.Random], tuple[str, ...] | None],
    generalization: Callable[[random.Random], tuple[str, ...] | None],
) -> dict[str, list[tuple[str, ...]]]:
    """train / val / test from `in_distribution`, gen from `generalization`, every source sentence in one split only."""
    rng, used = random.Random(seed), set[tuple[str, ...]]()
    return {
        "train": draw(rng, in_distribution, task.train_size, used, "task.train_size"),
        "val": draw(rng, in_distribution, task.eval_size, used, "task.eval_size"),
        "test": draw(rng, in_distribution, task.eval_size, used, "task.eval_size"),
        "gen": draw(rng, generalization, task.gen_size, used, "task.gen_size"),
    }


def source(example: tuple[str, ...]) -> tuple[str, ...]:
    """The input sentence of an example: its words before the first "." (all of them when there is none)."""
    return example[: example.index(".")] if "." in example else example


def encode(sequences: list[tuple[str, ...]], vocab: tuple[str, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Sequences of words -> x (N, seq) `<s> w... </s>` padded (the last token cut), y (N, seq) `w... </s>` (the next token at every position),
    mask (N, seq) bool: y is a real token, not padding. seq is the longest sequence's length + 1."""
    index = {token: i for i, token in enumerate(vocab)}
    seq = max(len(s) for s in sequences) + 1
    ids = torch.full((len(sequences), seq + 1), index[PAD], dtype=torch.long)
    for row, words in enumerate(sequences):
        tokens = [index[BOS], *(index[w] for w in words), index[EOS]]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    y = ids[:, 1:]
    return ids[:, :-1], y, y != index[PAD]


def answer_right(logits: Tensor, y: Tensor, at: Tensor) -> Tensor:
    """Whether the prediction at one position per example is its target: logits (n, seq, vocab), y (n, seq), at (n,)
    -> (n,) float. Greedy decoding's first word of an answer whose prompt ends at `at`."""
    rows = torch.arange(len(y), device=y.device)
    return (logits[rows, at].argmax(-1) == y[rows, at]).float()


def decoded_right(forward: Forward, x: Tensor, logits: Tensor, y: Tensor, mask: Tensor, start: Tensor, at: Tensor, pos: Tensor) -> Tensor:
    """Greedy decoding of every answer, scored as Murty et al.'s code scores tense inflection: (n,) float, 1 where
    the answer decoded from target position `start` (after the prompt) ends where the target ends, has the target's
    part of speech (`pos`: a class per token id) at every position, and the target's word at `at`.

    x, y, mask: (n, seq) as `encode` makes them; logits = forward(x). Decoded to a fixed point instead of token by
    token: feed the reference answer; while a row's greedy prediction differs from the token fed after it, put the
    first difference in its place and run that row again. Predictions before the first difference are then greedy's
    own, so every pass settles one more position, and a row the model gets right takes none."""
    n, seq = y.shape
    positions = torch.arange(seq, device=y.device)
    end = mask.sum(-1) - 1  # (n,) the target's </s>
    answer = (positions >= start[:, None]) & (positions <= end[:, None])  # (n, seq)
    out, pred, rows = y.clone(), logits.argmax(-1), torch.arange(n, device=y.device)
    right = torch.zeros(n, device=y.device)
    while len(rows):
        differs = answer[rows] & (pred != out[rows])
        first = differs.int().argmax(-1)  # (active,) the first difference (0 where there is none)
        settled = ~differs.any(-1)
        done = rows[settled]
        right[done] = (out[done, at[done]] == y[done, at[done]]).float()
        word = pred[torch.arange(len(rows), device=y.device), first]
        same_pos = pos[word] == pos[y[rows, first]]  # else the decoded answer's structure is wrong: 0
        fix = ~settled & same_pos
        rows, first, word = rows[fix], first[fix], word[fix]
        out[rows, first] = word
        if len(rows):
            pred = forward(torch.cat([x[rows, :1], out[rows, :-1]], 1)).argmax(-1)  # x is <s> then y shifted
    return right


def marker_position(y: Tensor, markers: Tensor) -> Tensor:
    """(n,) index of the first target that is one of the token ids `markers`: y (n, seq) -> (n,)."""
    return torch.isin(y, markers).int().argmax(-1)
