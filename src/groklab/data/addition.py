"""Addition without a modulus (Liu et al. 2022's toy task): a + b over the unordered pairs of 0..p−1.

a + b and b + a are one example (p·(p+1)/2 of them: 55 for p = 10); the answer a + b is one of 2p − 1 classes.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def addition_pairs(p: int) -> tuple[Tensor, Tensor]:
    """(x (N, 2) long: the operands a <= b, y (N,) long: a + b in 0..2p−2), pairs in row-major order of (a, b)."""
    a, b = torch.triu_indices(p, p)  # every a <= b once
    return torch.stack([a, b], dim=1), a + b
