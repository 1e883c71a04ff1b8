"""Tree-structuredness of a language model's computation (tree projections, Murty et al. ICLR 2023; used as the
structural-grokking measure of Murty et al. 2023).

For a sentence of n tokens and every span (i, j), compare two sums of final-layer vectors over the span: computed
with attention restricted to the span at every layer (the span read in isolation) and with full context. Their
cosine score(i, j) is high when the model builds the span's meaning from the span alone. A greedy top-down parse
splits each span (i, j) at the k that maximises score(i, k) + score(k+1, j); a sentence's tree-structuredness is the
sum over the parse's nodes of (the best split's value − a uniformly random split's value) at that node, and a
model's is the mean over a fixed sample of sentences. A model that ignores context everywhere scores 0 (every split
is as good as any other); the more one bracketing stands out, the higher the score.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


def span_scores(full: Tensor, restricted: Tensor) -> Tensor:
    """full (n, d): the sentence's final-layer vectors with full context; restricted (n, n, d): [i, t] token t's
    vector with attention restricted to the span starting at i (read for t >= i). -> (n, n) [i, j] = the cosine of
    the two sums over tokens i..j (NaN for j < i)."""
    n = len(full)
    upper = torch.ones(n, n, dtype=torch.bool, device=full.device).triu()  # [i, t]: t >= i
    span_restricted = (restricted * upper[..., None]).cumsum(1)  # [i, j] = sum_{t=i..j} restricted[i, t]
    sums = full.cumsum(0)
    span_full = sums[None, :, :] - (sums - full)[:, None, :]  # [i, j] = sum_{t=i..j} full[t]
    cos = F.cosine_similarity(span_restricted, span_full, dim=-1)
    return cos.masked_fill(~upper, float("nan"))


def split_values(scores: Tensor, i: int, j: int) -> Tensor:
    """score(i, k) + score(k+1, j) for k = i .. j−1: (j − i,)."""
    k = torch.arange(i, j)
    return scores[i, k] + scores[k + 1, j]


def greedy_parse(scores: Tensor) -> list[tuple[int, int, int]]:
    """The top-down greedy binary parse of a sentence with span scores (n, n): its internal nodes (i, j, k), span i..j
    split into i..k and k+1..j, parents before children."""
    nodes, todo = [], [(0, len(scores) - 1)]
    while todo:
        i, j = todo.pop(0)
        if j <= i:
            continue
        k = i + int(split_values(scores, i, j).argmax())
        nodes.append((i, j, k))
        todo += [(i, k), (k + 1, j)]
    return nodes


def sentence_score(scores: Tensor, generator: torch.Generator) -> float:
    """Sum over the greedy parse's nodes of (the best split's value − a random split's value), scores (n, n)."""
    total = 0.0
    for i, j, k in greedy_parse(scores):
        values = split_values(scores, i, j)
        random_k = int(torch.randint(j - i, (1,), generator=generator))
        total += float(values[k - i] - values[random_k])
    return total


@torch.no_grad()
def sentence_vectors(model: nn.Module, x: Tensor, start: int, end: int) -> tuple[Tensor, Tensor]:
    """(full (n, d), restricted (n, n, d)) for the sentence at positions start..end−1 of the sequence x (seq,), from
    the transformer's final residual stream (`residual`, with `first` restricting attention to a span)."""
    n = end - start
    full = model.residual(x[None])[0, start:end]  # type: ignore[operator]
    first = torch.arange(start, end, device=x.device)
    restricted = model.residual(x[None].expand(n, -1), first=first)[:, start:end]  # type: ignore[operator]  # [i, t]
    return full, restricted


def tree_structuredness(model: nn.Module, x: Tensor, spans: list[tuple[int, int]], seed: int = 0) -> float:
    """Mean tree-structuredness over sentences: x (n_sentences, seq) tokens, spans[s] = (start, end) of sentence s's
    tokens in x[s]; the random splits are drawn from `seed`. Sentences under 3 tokens have no choice and are skipped."""
    generator = torch.Generator().manual_seed(seed)
    values = [
        sentence_score(span_scores(*sentence_vectors(model, row, start, end)).cpu(), generator)
        for row, (start, end) in zip(x, spans, strict=True)
        if end - start >= 3
    ]
    return sum(values) / len(values) if values else float("nan")
