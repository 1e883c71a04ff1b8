"""Hidden activations shared by the models."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,  # its backward reads its output, which the next layer keeps anyway (docs/performance.md)
    "gelu": F.gelu,
    "quadratic": torch.square,
    "tanh": torch.tanh,
    "silu": F.silu,
}
