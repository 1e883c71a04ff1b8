"""Softmax collapse under the loss a run actually trains with (Prieto et al. 2025).

losses.softmax_collapse_fraction asks the question for float32 softmax cross-entropy, whatever the run trains with,
which measures how far the logits have grown. This asks it for the run's own loss function and precision: the share
of samples that give the optimizer no gradient at all. StableMax and a float64 loss are meant to keep it near zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor


def zero_gradient_fraction(loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, y: Tensor) -> float:
    """Fraction of samples whose gradient of `loss_fn` wrt their own logits is exactly zero.

    logits (n, n_classes) as the model returns them, y (n,). `loss_fn` is a mean over the batch, so each sample's
    gradient is its own loss gradient divided by n: zero exactly when the sample's is.
    """
    with torch.enable_grad():
        x = logits.detach().clone().requires_grad_(True)
        loss_fn(x, y).backward()
    assert x.grad is not None
    return float((x.grad == 0).all(dim=-1).float().mean())


__all__ = ["zero_gradient_fraction"]
