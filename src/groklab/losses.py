"""Training losses on logits (batch, n_classes) and integer labels (batch,)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LossFn = Callable[[Tensor, Tensor], Tensor]


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


def mse(logits: Tensor, y: Tensor) -> Tensor:
    """Mean squared error between logits and one-hot targets (Omnigrok's loss for MNIST)."""
    return F.mse_loss(logits, F.one_hot(y, logits.shape[-1]).to(logits.dtype))


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "mse": mse}


def make_loss(name: str, dtype: str) -> LossFn:
    """The loss `name`, computed in `dtype` (float64 delays softmax collapse; Prieto et al.)."""
    base, target = LOSSES[name], getattr(torch, dtype)
    if target == torch.float32:
        return base
    return lambda logits, y: base(logits.to(target), y)
