"""Spike detection for logged curves: the slingshot effect (Thilak et al. 2022) shows as sudden jumps of the
last-layer weight norm and bursts of the training loss when Adam trains without weight decay.

Pure functions on 1-d arrays (one value per logged step); they return indices into the array.
"""

from __future__ import annotations

import numpy as np


def _starts(mask: np.ndarray) -> list[int]:
    """Indices where a run of True values begins: consecutive flagged points are one spike, counted once."""
    if not mask.size:
        return []
    prev = np.concatenate([[False], mask[:-1]])
    return np.nonzero(mask & ~prev)[0].tolist()


def loss_spikes(loss: np.ndarray, factor: float = 10.0, window: int = 10, floor: float = 1e-3) -> list[int]:
    """Indices where `loss` (n,) first rises above `factor` times the median of the preceding `window` values.

    A loss spike is relative to where the loss has just been, so the same rule finds a burst from 1e-6 to 1e-4
    late in training and ignores the ordinary early descent. Values below `floor` never count as a spike (a jump
    from 1e-9 to 1e-7 is float rounding, not a slingshot). The first `window` points have no baseline and are skipped.
    """
    loss = np.asarray(loss, dtype=float)
    flags = np.zeros(loss.size, dtype=bool)
    for i in range(window, loss.size):
        base = np.nanmedian(loss[i - window : i])
        flags[i] = bool(loss[i] >= floor and loss[i] > factor * base)
    return _starts(flags)


def norm_jumps(norm: np.ndarray, z: float = 8.0, window: int = 20, min_rel: float = 0.01) -> list[int]:
    """Indices where the growth of `norm` (n,) between two logged points is an outlier: a slingshot jump.

    The relative growth r_i = norm_i / norm_{i-1} - 1 is compared with the median and the median absolute
    deviation (MAD) of the preceding `window` growths; a jump needs r_i > median + z·MAD and r_i > `min_rel`
    (a 1% rise at least), so the slow steady drift of a norm under Adam is not a spike.
    """
    norm = np.asarray(norm, dtype=float)
    if norm.size < 3:
        return []
    rel = norm[1:] / np.maximum(norm[:-1], 1e-30) - 1.0  # rel[i-1] is the growth into point i
    flags = np.zeros(norm.size, dtype=bool)
    for i in range(window + 1, norm.size):
        past = rel[i - 1 - window : i - 1]
        med = np.nanmedian(past)
        mad = np.nanmedian(np.abs(past - med))
        r = rel[i - 1]
        flags[i] = bool(r > min_rel and r > med + z * max(mad, 1e-12))
    return _starts(flags)


__all__ = ["loss_spikes", "norm_jumps"]
