"""Modular binary operations a ∘ b mod p (Power et al. 2022, Table 1), as vectorized functions of tensors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

Tensor = torch.Tensor


@dataclass(frozen=True)
class ModOp:
    fn: Callable[[Tensor, Tensor, int], Tensor]
    """c = fn(x, y, p) on long tensors of the same shape."""
    divides: bool = False
    """Uses y⁻¹ mod p: the modulus must be prime."""
    nonzero_y: bool = False
    """Defined only for y ≠ 0 (then the table has p·(p−1) pairs)."""


def inverse(y: Tensor, p: int) -> Tensor:
    """y⁻¹ mod p elementwise (p prime, y ≠ 0) by Fermat's little theorem, via a lookup table."""
    table = torch.tensor([pow(v, p - 2, p) if v else 0 for v in range(p)], dtype=torch.long)
    return table[y]


def _div(x: Tensor, y: Tensor, p: int) -> Tensor:
    return x * inverse(y, p) % p


MODULAR_OPS: dict[str, ModOp] = {
    "x+y": ModOp(lambda x, y, p: (x + y) % p),
    "x-y": ModOp(lambda x, y, p: (x - y) % p),
    "x*y": ModOp(lambda x, y, p: x * y % p),
    "x/y": ModOp(_div, divides=True, nonzero_y=True),
    "x/y_or_x-y": ModOp(lambda x, y, p: torch.where(y % 2 == 1, _div(x, y, p), (x - y) % p), divides=True),
    "x^2+y^2": ModOp(lambda x, y, p: (x * x + y * y) % p),
    "x^2+xy+y^2": ModOp(lambda x, y, p: (x * x + x * y + y * y) % p),
    "x^2+xy+y^2+x": ModOp(lambda x, y, p: (x * x + x * y + y * y + x) % p),
    "x^3+xy": ModOp(lambda x, y, p: (x * x % p * x + x * y) % p),
    "x^3+xy^2+y": ModOp(lambda x, y, p: (x * x % p * x + x * (y * y % p) + y) % p),
}
