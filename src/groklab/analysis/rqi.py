"""Representation quality index (Liu et al. 2022, "Towards understanding grokking: an effective theory").

An additive task is solved by a *linear* representation when E_i + E_j = E_m + E_n whenever
i + j = m + n: the embeddings form parallelograms. RQI is the fraction of such quadruples the embedding
satisfies within a tolerance δ. The embedding is first centered and scaled to unit RMS row norm, so δ is
relative to the embedding's own size and RQI does not change when the weights are rescaled.

Note that the Fourier circuits of modular addition put tokens on *circles*, which are not parallelograms
(cos wi + cos wj depends on i − j, not only on i + j): a model that grokked x+y mod p through Fourier
features can have a low RQI. RQI measures Liu et al.'s linear structure, not generalization as such.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

RQI_DELTA = 0.1
"""Default tolerance: a quadruple counts when ‖E_i + E_j − E_m − E_n‖ ≤ 0.1 × the RMS embedding norm."""


def rqi(emb: Tensor, delta: float = RQI_DELTA, modulus: int | None = None) -> float:
    """Fraction of parallelograms i + j = m + n (or ≡ mod `modulus`) with ‖E_i + E_j − E_m − E_n‖ ≤ δ.

    emb: (n, d) one row per operand value 0..n−1. Quadruples are counted once per unordered pair of
    distinct unordered pairs {i, j} ≠ {m, n}. Returns a number in [0, 1].
    """
    e = emb.detach().double()
    e = e - e.mean(0, keepdim=True)
    scale = e.pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
    e = e / scale
    n = e.shape[0]
    i, j = torch.triu_indices(n, n)  # unordered pairs i <= j
    sums = (i + j) % modulus if modulus else i + j
    pair_vec = e[i] + e[j]  # (n_pairs, d)
    satisfied = total = 0
    order = torch.argsort(sums, stable=True)
    counts = torch.bincount(sums)
    for group in torch.split(order, counts.tolist()):
        if len(group) < 2:
            continue
        dist = torch.cdist(pair_vec[group], pair_vec[group])  # (g, g)
        upper = torch.triu(torch.ones_like(dist, dtype=torch.bool), 1)
        satisfied += int((dist[upper] <= delta).sum())
        total += int(upper.sum())
    return satisfied / total if total else 0.0
