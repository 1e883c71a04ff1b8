"""Hidden activations shared by the models."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def relu(x: Tensor) -> Tensor:
    # Same values and gradient as ReLU except at exactly 0; torch.compile's ReLU backward is slow on CPU.
    return (x + x.abs()) / 2


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": relu,
    "gelu": F.gelu,
    "quadratic": torch.square,
    "tanh": torch.tanh,
    "silu": F.silu,
}
