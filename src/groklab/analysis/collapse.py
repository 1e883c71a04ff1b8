"""Softmax collapse under the loss a run actually trains with (Prieto et al. 2025).

losses.softmax_collapse_fraction asks, for float32 softmax cross-entropy whatever the run trains with, whether a
sample's whole gradient has underflowed: a measure of how far the logits have grown. The collapse starts earlier:
once the correct logit leads by about 17, 1 + sum(e^(x_j - x_y)) rounds to 1 in float32 (absorption), the sample's
loss is exactly 0 and the gradient on its correct logit vanishes. This module asks that question for the run's own
loss function and precision, which StableMax and a float64 loss are meant to keep away from zero.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Tensor = torch.Tensor


def correct_gradient_zero_fraction(loss_fn: Callable[[Tensor, Tensor], Tensor], logits: Tensor, y: Tensor) -> float:
    """Fraction of samples whose gradient of `loss_fn` wrt their correct-class logit is exactly zero.

    logits (n, n_classes) as the model returns them, y (n,). `loss_fn` is a mean over the batch, so each sample's
    gradient is its own loss gradient divided by n: zero exactly when the sample's is. The gradient is read in the
    logits' dtype, as the optimizer receives it (a float64 loss's gradient returns to float32 logits).
    """
    with torch.enable_grad():
        x = logits.detach().clone().requires_grad_(True)
        loss_fn(x, y).backward()
    assert x.grad is not None
    return float((x.grad.gather(-1, y[:, None]) == 0).float().mean())


__all__ = ["correct_gradient_zero_fraction"]
