"""The phase of a run (Liu et al. 2022) and Nanda et al.'s three phases of grokking, from metric curves.

Phase of a run, from the first steps where train accuracy and validation accuracy reach ``FIT_ACC``:

* **confusion**: train accuracy never reaches FIT_ACC (the model does not even memorize);
* **memorization**: train reaches it, validation never does;
* **grokking**: validation reaches it, but more than ``GROK_FACTOR`` × the steps train needed after train
  did (val_step − train_step > GROK_FACTOR · train_step): a long plateau between memorizing and generalizing;
* **comprehension**: validation reaches it within that delay: the model generalizes about as fast as it fits.

Nanda's phases (memorization → circuit formation → cleanup) are estimated from the validation loss on a
log scale, which rises or plateaus while the network memorizes and falls when the circuit takes over:

* memorization ends when train accuracy first reaches FIT_ACC;
* circuit formation ends (cleanup starts) when log val loss has fallen ``CLEANUP_START`` (10%) of the way
  from its peak after memorization to its final value;
* cleanup ends when it has fallen ``CLEANUP_END`` (90%) of the way; when the run logged ``fourier/gini``
  (``--analysis fourier``), the end of cleanup is instead when the Gini has risen 90% of the way from its
  value at memorization to its maximum, since sparsity arrives with cleanup.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from groklab.stats import GROK_ACC, first_step

FIT_ACC = GROK_ACC
GROK_FACTOR = 1.0
"""Grokking iff the val delay after fitting exceeds this multiple of the steps it took to fit."""
CLEANUP_START = 0.1
CLEANUP_END = 0.9
PHASES = ("comprehension", "grokking", "memorization", "confusion")


def classify_phase(
    steps: Sequence[int],
    train_acc: Sequence[float | None],
    val_acc: Sequence[float | None],
    fit_acc: float = FIT_ACC,
    grok_factor: float = GROK_FACTOR,
) -> str:
    """One of comprehension, grokking, memorization, confusion (rules in the module docstring)."""
    fit = first_step(steps, train_acc, fit_acc)
    gen = first_step(steps, val_acc, fit_acc)
    if fit is None:
        return "confusion"
    if gen is None:
        return "memorization"
    return "grokking" if gen - fit > grok_factor * max(fit, 1) else "comprehension"


def _first_fraction_of_way(
    steps: Sequence[int], values: Sequence[float], start: int, begin: float, end: float, fraction: float
) -> int | None:
    """First step ≥ start where value has moved `fraction` of the way from begin to end."""
    target = begin + fraction * (end - begin)
    rising = end > begin
    for s, v in zip(steps, values, strict=True):
        if s >= start and (v >= target if rising else v <= target):
            return int(s)
    return None


def phase_boundaries(
    steps: Sequence[int],
    train_acc: Sequence[float | None],
    val_acc: Sequence[float | None],
    val_loss: Sequence[float | None],
    gini: Sequence[float | None] | None = None,
) -> dict[str, Any] | None:
    """Step estimates {memorization_end, circuit_formation_end, cleanup_end, cleanup_from} of Nanda's phases, or None.

    None unless the run both fits its train set and generalizes (val acc reaches FIT_ACC): the phases
    describe the road to generalization.
    `cleanup_from` names what the end of cleanup was read from ("fourier/gini" or "val/loss").
    """
    fit = first_step(steps, train_acc, FIT_ACC)
    if fit is None or first_step(steps, val_acc, FIT_ACC) is None:
        return None
    pts = [
        (int(s), math.log(max(v, 1e-30))) for s, v in zip(steps, val_loss, strict=True) if v is not None and s >= fit and math.isfinite(v)
    ]
    if len(pts) < 2:
        return None
    loss_steps, logs = [s for s, _ in pts], [v for _, v in pts]
    peak_i = max(range(len(logs)), key=logs.__getitem__)
    peak, final = logs[peak_i], logs[-1]
    if final >= peak - 1e-9:
        return None
    start = _first_fraction_of_way(loss_steps, logs, loss_steps[peak_i], peak, final, CLEANUP_START)
    end = _first_fraction_of_way(loss_steps, logs, loss_steps[peak_i], peak, final, CLEANUP_END)
    source = "val/loss"
    if gini is not None:
        g = [(int(s), float(v)) for s, v in zip(steps, gini, strict=True) if v is not None and s >= fit]
        if len(g) >= 2 and max(v for _, v in g) > g[0][1]:
            g_end = _first_fraction_of_way([s for s, _ in g], [v for _, v in g], fit, g[0][1], max(v for _, v in g), CLEANUP_END)
            if g_end is not None and start is not None and g_end >= start:
                end, source = g_end, "fourier/gini"
    return {"memorization_end": fit, "circuit_formation_end": start, "cleanup_end": end, "cleanup_from": source}
