"""Nanda et al. 2023 (progress measures for grokking): the Fourier circuit forms during training, before the test loss falls.

One sweep with `--analysis fourier,norms` logs, every few evaluations, the restricted loss (the logits kept to
the key frequencies' directions), the excluded loss (those directions removed), the Gini of the embedding's
Fourier spectrum, its number of key frequencies and the weight norm. Findings per seed: when the restricted loss
and the val loss first fall below the same level (Nanda: restricted first), how far the excluded loss rises over
training, Nanda's three phases (memorization, circuit formation, cleanup) and the key frequencies at the end
(Nanda: 5 for p = 113).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from groklab.analysis.phases import phase_boundaries
from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, SPLIT_COLORS, band, censored_stats, estimate, rows, run_data, summary_steps
from groklab.report.data import RunData
from groklab.report.plots import Figure
from groklab.stats import mean_ci

LOSS_LEVEL = 1.0
"""Restricted and val loss are compared at the first step each falls below this cross-entropy (chance is log p ≈ 4.7)."""


def logged(run: RunData, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows where `key` was logged."""
    values = run.columns.get(key, np.full(len(run.steps), math.nan))
    keep = ~np.isnan(values)
    return run.steps[keep].astype(int), values[keep]


def first_below(run: RunData, key: str, level: float) -> int | None:
    steps, values = logged(run, key)
    hit = np.nonzero(values < level)[0]
    return int(steps[hit[0]]) if hit.size else None


def excluded_rise(run: RunData) -> float | None:
    """Peak excluded loss after the train set is fitted over the excluded loss at that point (> 1: it rose)."""
    fit = run.first_step("train/acc")
    steps, values = logged(run, "fourier/excluded_loss")
    after = values[steps >= fit] if fit is not None else values[:0]
    return float(after.max() / after[0]) if after.size and after[0] > 0 else None


def seed_findings(run: RunData) -> dict[str, Any]:
    col = lambda key: [None if v != v else float(v) for v in run.columns.get(key, np.full(len(run.steps), math.nan))]  # noqa: E731
    steps = run.steps.astype(int).tolist()
    has_gini = "fourier/gini" in run.columns
    _, n_key = logged(run, "fourier/n_key")
    return {
        "restricted_below": first_below(run, "fourier/restricted_loss", LOSS_LEVEL),
        "val_below": first_below(run, "val/loss", LOSS_LEVEL),
        "excluded_rise": excluded_rise(run),
        "phases": phase_boundaries(steps, col("train/acc"), col("val/acc"), col("val/loss"), col("fourier/gini") if has_gini else None),
        "final_n_key": int(n_key[-1]) if n_key.size else None,
    }


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    sweep = dirs["sweep"]
    members = rows(sweep)
    runs = [run_data(sweep, r) for r in members]
    per_seed = [seed_findings(r) for r in runs]
    # steps by which the restricted loss got below LOSS_LEVEL before the val loss did (None: one of them never did)
    leads = [None if s["val_below"] is None or s["restricted_below"] is None else s["val_below"] - s["restricted_below"] for s in per_seed]
    first = members[0]
    setting = f"{first['task.op']} mod {first['task.p']}, {first['task.train_frac']:.0%} train, {first['model.name']} ({first['model.n_layers']} layer)"
    n_keys = [s["final_n_key"] for s in per_seed if s["final_n_key"] is not None]
    numbers: dict[str, Any] = {
        "setting": setting,
        "steps_to_train_acc_99": summary_steps(members, "steps_to_train_acc_99"),
        "steps_to_val_acc_99": summary_steps(members, "steps_to_val_acc_99"),
        "restricted_before_val": {
            "level": LOSS_LEVEL,
            "lead_steps": censored_stats(leads),
            "seeds_restricted_first": sum(d is not None and d > 0 for d in leads),
            "seeds": len(per_seed),
        },
        "excluded_rise": estimate(mean_ci([s["excluded_rise"] for s in per_seed if s["excluded_rise"] is not None])),
        "final_key_frequencies": n_keys,
        "per_seed": per_seed,
    }
    numbers["headline"] = (
        f"{setting}: the restricted loss fell below {LOSS_LEVEL:g} before the val loss in {numbers['restricted_before_val']['seeds_restricted_first']}"
        f" of {len(per_seed)} seeds; the excluded loss rose {numbers['excluded_rise']['mean'] or float('nan'):.3g}× after memorization (mean); "
        f"key frequencies at the end: {', '.join(map(str, n_keys)) or 'none logged'} (Nanda et al.: 5 for p = 113)."
    )
    series = (
        band(runs, "fourier/restricted_loss", "restricted loss (train)", PALETTE[2])
        + band(runs, "fourier/excluded_loss", "excluded loss (train)", PALETTE[3])
        + band(runs, "train/loss", "train loss", SPLIT_COLORS["train"], dash=True)
        + band(runs, "val/loss", "val loss", SPLIT_COLORS["val"], dash=True)
    )
    figure = Figure(
        "progress_measures",
        f"Progress measures: {setting}",
        "step (optimizer updates)",
        "cross-entropy (log scale)",
        series,
        xlog=True,
        ylog=True,
        caption="Restricted loss: the logits kept to the key frequencies' directions; excluded: those removed (Nanda et al. 2023).",
    )
    return Findings(numbers, [figure])


RECIPES = [
    Recipe(
        "nanda-progress",
        "Nanda et al. 2023: progress measures (restricted / excluded loss, Fourier sparsity, weight norm) while a 1-layer transformer groks x+y mod 113",
        ("sweep",),
        analyze,
    ),
]
