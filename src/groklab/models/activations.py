"""Hidden activations shared by the models."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def relu(x: Tensor) -> Tensor:
    # Under torch.compile, (x + |x|) / 2: same values and gradient as ReLU except at exactly 0, and the compiled
    # ReLU backward is slow on CPU. Eagerly, that form costs three extra passes over the tensor: plain ReLU there.
    if torch.compiler.is_compiling():
        return (x + x.abs()) / 2
    return F.relu(x)


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": relu,
    "gelu": F.gelu,
    "quadratic": torch.square,
    "tanh": torch.tanh,
    "silu": F.silu,
}
