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

import numpy as np
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


def effective_loss(emb: Tensor, pairs: Tensor) -> float:
    """Liu et al.'s effective loss ℓ_eff = ℓ₀ / Z₀ of an embedding on the training pairs of an addition task.

    emb: (n, d) one row per operand value; pairs: (m, 2) the training examples (a, b). ℓ₀ is the mean of
    ‖E_i + E_j − E_m − E_n‖² over the training parallelograms (two distinct training pairs with i + j = m + n),
    Z₀ = Σ_k ‖E_k‖². The embedding is centered first: a common shift changes no parallelogram and the decoder
    can absorb it, so it should not lower ℓ_eff. ℓ_eff is 0 for a linear representation and does not change
    when the embedding is rescaled; 0 when the training set holds no parallelogram (nothing to violate).
    """
    e = emb.detach().double()
    e = e - e.mean(0, keepdim=True)
    z0 = float(e.pow(2).sum())
    a, b = pairs[:, 0].long(), pairs[:, 1].long()
    sums, vec = a + b, e[a] + e[b]  # (m,), (m, d)
    same = sums[:, None] == sums[None, :]
    distinct = torch.triu(torch.ones_like(same), 1)  # each unordered pair of training pairs once
    quads = same & distinct
    if z0 <= 0 or not bool(quads.any()):
        return 0.0
    violation = torch.cdist(vec, vec).pow(2)  # (m, m) ‖E_i + E_j − E_m − E_n‖²
    return float(violation[quads].mean()) / z0


def parallelogram_rows(pairs: Tensor | np.ndarray, n: int) -> np.ndarray:
    """The equations E_a + E_b − E_c − E_d = 0 that the training pairs ask of a 1-D representation E_0..E_{n−1}.

    pairs: (m, 2) the training examples (a, b) of addition over 0..n−1; one row (of n coefficients) per two distinct
    training pairs with a + b = c + d. NumPy, not torch: a recipe calls this for thousands of small training sets.
    """
    pairs = np.asarray(pairs, dtype=np.int64)
    a, b = pairs[:, 0], pairs[:, 1]
    i, j = np.nonzero(np.triu((a + b)[:, None] == (a + b)[None, :], 1))  # each parallelogram of training pairs once
    rows, at = np.zeros((len(i), n)), np.arange(len(i))
    for col, sign in ((a[i], 1), (b[i], 1), (a[j], -1), (b[j], -1)):
        np.add.at(rows, (at, col), sign)  # add.at: a pair (k, k) puts 2 in column k
    return rows


def rank(rows: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(rows)) if len(rows) else 0


def representation_freedom(pairs: Tensor | np.ndarray, n: int) -> int:
    """Degrees of freedom of a 1-D representation that satisfies every parallelogram of the training pairs.

    The dimension of the solution space of `parallelogram_rows`. A linear representation E_k = s + t·k solves every
    such equation, so the freedom is at least 2; exactly 2 means the training set leaves the linear representation (up
    to translation and scale) as the only one (Liu et al. 2022, Fig 4a).
    """
    return n - rank(parallelogram_rows(pairs, n))


def inferable(train: Tensor | np.ndarray, pairs: Tensor | np.ndarray, n: int) -> np.ndarray:
    """For each of `pairs` (k, 2): whether the training pairs determine its answer (Liu et al.'s D̄).

    A pair (i, j) is inferable when some training pair (c, d) with c + d = i + j gives an equation E_i + E_j = E_c + E_d
    that the training parallelograms imply: then every representation that fits the training set sends (i, j) to the
    decoder's input for (c, d), whose answer it was trained on. Its mean over held-out pairs is the ideal accuracy.
    """
    train, pairs = np.asarray(train, dtype=np.int64), np.asarray(pairs, dtype=np.int64)
    rows = parallelogram_rows(train, n)
    base = rank(rows)
    out = []
    for i, j in pairs:
        same = train[train.sum(1) == i + j]
        asks = [np.bincount([i, j], minlength=n) - np.bincount([c, d], minlength=n) for c, d in same]
        out.append(any(rank(np.vstack([rows, ask])) == base for ask in asks))
    return np.array(out, dtype=bool)
