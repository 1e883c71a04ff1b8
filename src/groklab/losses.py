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


def stablemax_log_s(logits: Tensor) -> Tensor:
    """log s(x) elementwise, with s(x) = x + 1 for x >= 0 and 1 / (1 - x) for x < 0 (StableMax's softmax-free exp).

    Each branch sees only its own half of the inputs (clamped), so neither puts a NaN into the other's gradient.
    """
    return torch.where(logits >= 0, torch.log1p(logits.clamp(min=0)), -torch.log1p((-logits).clamp(min=0)))


def stablemax(logits: Tensor) -> Tensor:
    """StableMax probabilities (Prieto et al. 2025): s(x_i) / sum_j s(x_j) over the last dimension, (..., n_classes).

    s grows linearly, not exponentially, so large logits cannot round the probabilities to exactly 0 and 1.
    """
    s = stablemax_log_s(logits).exp()
    return s / s.sum(-1, keepdim=True)


def stablemax_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Mean of -log stablemax(logits)[y] over the batch: logits (batch, n_classes), y (batch,)."""
    log_s = stablemax_log_s(logits)  # (batch, n_classes)
    return (torch.logsumexp(log_s, dim=-1) - log_s.gather(-1, y[:, None]).squeeze(-1)).mean()


LOSSES: dict[str, LossFn] = {"cross_entropy": cross_entropy, "mse": mse, "stablemax": stablemax_cross_entropy}


def make_loss(name: str, dtype: str) -> LossFn:
    """The loss `name`, computed in `dtype` (float64 delays softmax collapse; Prieto et al.)."""
    base, target = LOSSES[name], getattr(torch, dtype)
    if target == torch.float32:
        return base
    return lambda logits, y: base(logits.to(target), y)


def softmax_collapse_fraction(logits: Tensor, y: Tensor) -> float:
    """Fraction of samples whose float32 cross-entropy gradient wrt their logits is exactly zero (softmax collapse).

    logits (n, n_classes), y (n,). Once the correct logit leads by enough, float32 rounds softmax to an exact one-hot
    and the sample stops contributing any gradient at all (Prieto et al. 2025); this counts such samples, using
    the very backward pass that float32 training runs.
    """
    with torch.enable_grad():
        x = logits.detach().to(torch.float32).requires_grad_(True)
        F.cross_entropy(x, y, reduction="sum").backward()
    assert x.grad is not None
    return float((x.grad == 0).all(dim=-1).float().mean())
