"""Training losses on logits (batch, n_classes) and integer labels (batch,).

Sequence tasks (targets at many positions) pass logits (batch, seq, n_classes), labels (batch, seq) and a bool mask
(batch, seq) of the positions that have a target: the loss is the mean over those positions. The mask is applied as
weights, not by indexing, so the loss keeps static shapes under torch.func.vmap (ensembles).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LossFn = Callable[..., Tensor]
"""loss_fn(logits, y, mask=None) -> scalar (see the module docstring for the shapes)."""


def cross_entropy(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    return F.cross_entropy(logits, y, reduction=reduction)


def mse(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Mean squared error between logits and one-hot targets (Omnigrok's loss for MNIST); per sample: mean over classes."""
    err = F.mse_loss(logits, F.one_hot(y, logits.shape[-1]).to(logits.dtype), reduction=reduction)
    return err if reduction == "mean" else err.mean(-1)


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


def stablemax_cross_entropy(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """-log stablemax(logits)[y], averaged over the batch unless reduction="none": logits (batch, n_classes), y (batch,)."""
    log_s = stablemax_log_s(logits)  # (batch, n_classes)
    per_sample = torch.logsumexp(log_s, dim=-1) - log_s.gather(-1, y[:, None]).squeeze(-1)
    return per_sample.mean() if reduction == "mean" else per_sample


def hinge(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Multi-class hinge (Weston-Watkins, as torch's MultiMarginLoss): (1/C) Σ_{j≠y} max(0, 1 − x_y + x_j) per sample.

    Merrill et al.'s loss for sparse parity. Written with elementwise ops rather than F.multi_margin_loss so that
    it runs under torch.func.vmap (ensembles). logits (batch, C), y (batch,).
    """
    correct = logits.gather(-1, y[:, None])  # (batch, 1)
    margins = (1 - correct + logits).clamp(min=0) * (1 - F.one_hot(y, logits.shape[-1]).to(logits.dtype))  # (batch, C)
    per_sample = margins.sum(-1) / logits.shape[-1]
    return per_sample.mean() if reduction == "mean" else per_sample


def target_mse(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """MSE to the correct class's target vector, for models whose logits are −(that MSE) for every class (the toy model)."""
    per_sample = -logits.gather(-1, y[:, None]).squeeze(-1)
    return per_sample.mean() if reduction == "mean" else per_sample


LOSSES: dict[str, LossFn] = {
    "cross_entropy": cross_entropy,
    "mse": mse,
    "stablemax": stablemax_cross_entropy,
    "hinge": hinge,
    "target_mse": target_mse,
}


def make_loss(name: str, dtype: str) -> LossFn:
    """The loss `name`, computed in `dtype` (float64 delays softmax collapse; Prieto et al.), with an optional target mask."""
    base, target = LOSSES[name], getattr(torch, dtype)

    def loss(logits: Tensor, y: Tensor, mask: Tensor | None = None) -> Tensor:
        logits = logits if target == torch.float32 else logits.to(target)
        if mask is None:
            return base(logits, y)
        per_position = base(logits.flatten(0, -2), y.flatten(), reduction="none")  # (batch * seq,)
        weights = mask.flatten().to(per_position.dtype)
        return (per_position * weights).sum() / weights.sum().clamp(min=1)

    return loss


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
