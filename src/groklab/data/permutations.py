"""Operations on the symmetric group S5 (Power et al.: x∘y, x∘y∘x⁻¹, x∘y∘x).

Elements are indices into ``list(itertools.permutations(range(5)))`` (120 of them). Composition is
defined once, here: ``(x∘y)[i] = x[y[i]]`` — apply y first, then x (the usual function composition).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import cache

import torch

Tensor = torch.Tensor


@cache
def elements() -> list[tuple[int, ...]]:
    return list(itertools.permutations(range(5)))


@cache
def tables() -> tuple[Tensor, Tensor]:
    """(compose, invert): compose[x, y] = index of x∘y (120, 120); invert[x] = index of x⁻¹ (120,)."""
    perms = elements()
    index = {perm: i for i, perm in enumerate(perms)}
    compose = torch.tensor([[index[tuple(x[y[i]] for i in range(5))] for y in perms] for x in perms])
    invert = torch.tensor([index[tuple(sorted(range(5), key=lambda i: x[i]))] for x in perms])
    return compose, invert


def _xy(x: Tensor, y: Tensor) -> Tensor:
    return tables()[0][x, y]


def _xyx_inv(x: Tensor, y: Tensor) -> Tensor:
    compose, invert = tables()
    return compose[compose[x, y], invert[x]]


def _xyx(x: Tensor, y: Tensor) -> Tensor:
    compose = tables()[0]
    return compose[compose[x, y], x]


S5_OPS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"s5:xy": _xy, "s5:xyx^-1": _xyx_inv, "s5:xyx": _xyx}
ORDER = 120
