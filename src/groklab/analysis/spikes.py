"""Spike detection for logged curves: the slingshot effect (Thilak et al. 2022) shows as sudden jumps of the
last-layer weight norm and bursts of the training loss when Adam trains without weight decay.

Pure functions on 1-d arrays (one value per logged step); they return indices into the array.
"""

from __future__ import annotations

import numpy as np


def _events(mask: np.ndarray, gap: int) -> list[int]:
    """Indices of flagged points that start an event: flags within `gap` points of an earlier flag belong to its event."""
    out: list[int] = []
    last = -gap - 1
    for i in np.nonzero(mask)[0].tolist():
        if i - last > gap:
            out.append(i)
        last = i
    return out


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
    return _events(flags, 1)


def norm_breaks(norm: np.ndarray, z: float = 5.0, window: int = 20, min_dev: float = 1e-3, gap: int = 3) -> list[int]:
    """Indices where the growth of `norm` (n,) between two logged points breaks abruptly from its recent pace.

    Under Adam without weight decay the last-layer norm grows steadily while the loss shrinks; at a slingshot it
    jumps or stalls. Either way its relative growth r_i = norm_i / norm_(i-1) - 1
    departs from the median of the preceding `window` growths by more than z times their median absolute
    deviation (MAD) and by at least `min_dev` (0.1% of the norm per logged interval), so the smooth slowing of
    the early descent is not an event. Flags within `gap` points of each other are one event.
    """
    norm = np.asarray(norm, dtype=float)
    if norm.size < window + 2:
        return []
    rel = norm[1:] / np.maximum(norm[:-1], 1e-30) - 1.0  # rel[i-1] is the growth into point i
    flags = np.zeros(norm.size, dtype=bool)
    for i in range(window + 1, norm.size):
        past = rel[i - 1 - window : i - 1]
        med = np.nanmedian(past)
        mad = np.nanmedian(np.abs(past - med))
        dev = abs(rel[i - 1] - med)
        flags[i] = bool(dev > min_dev and dev > z * max(mad, 1e-12))
    return _events(flags, gap)


__all__ = ["loss_spikes", "norm_breaks"]
