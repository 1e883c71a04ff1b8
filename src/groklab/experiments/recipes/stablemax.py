"""Softmax collapse (Prieto et al. 2025): without weight decay, once the training set is fitted the logits keep
growing along the same direction until float32 rounds softmax to an exact one-hot; those samples then give no
gradient at all and learning stops before the network generalizes. StableMax (a softmax whose exponential is
replaced by a function that grows linearly) and ⊥Grad (the gradient's part orthogonal to the weights) prevent it
and give grokking without weight decay; computing the loss in float64 delays it.

stablemax: one sweep, no weight decay anywhere, arms ([zip] in the spec) softmax cross-entropy (the baseline),
StableMax, StableMax with ⊥Grad, softmax with ⊥Grad and softmax in float64, with `--analysis collapse` logging the
fraction of training samples whose gradient has vanished (analysis.collapse).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, arms, band, estimate, last_logged, summary_steps
from groklab.report.plots import Figure
from groklab.stats import mean_ci

OWN = "collapse/train_own_loss"
"""Logged by `--analysis collapse`: correct-class gradient exactly zero under the run's own loss (the first stage)."""
FULL = "collapse/train"
"""Logged by `--analysis collapse`: every float32 softmax cross-entropy gradient entry underflowed (the last stage)."""
LOSS_NAMES = {"cross_entropy": "softmax CE", "stablemax": "StableMax CE", "mse": "MSE"}


def arm_label(row: dict[str, Any]) -> str:
    name = LOSS_NAMES.get(row["loss"], row["loss"])
    if row["loss_dtype"] == "float64":
        name += " (float64)"
    if row["optim.orthograd"]:
        name += " + ⊥Grad"
    return name


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    groups = arms(dirs["sweep"], arm_label)
    per_arm: dict[str, Any] = {}
    acc_series, collapse_series = [], []
    for i, (name, (members, runs)) in enumerate(groups.items()):
        color = PALETTE[i % len(PALETTE)]
        own = [r.columns[OWN] for r in runs]
        per_arm[name] = {
            "steps": int(runs[0].config["steps"]),  # the budget (runs.parquet's "steps" is where a run stopped)
            "weight_decay": members[0]["optim.weight_decay"],
            "steps_to_train_acc_99": summary_steps(members, "steps_to_train_acc_99"),
            "steps_to_val_acc_99": summary_steps(members, "steps_to_val_acc_99"),
            "final_val_acc": estimate(mean_ci([float(r["val/acc"]) for r in members])),
            "final_test_acc": estimate(mean_ci([float(r["test/acc"]) for r in members])),
            "collapsed_own_loss_final": estimate(mean_ci([last_logged(r, OWN) for r in runs])),
            "collapsed_own_loss_max": estimate(mean_ci([float(np.nanmax(c)) for c in own])),
            "softmax_gradient_underflow_final": estimate(mean_ci([last_logged(r, FULL) for r in runs])),
        }
        acc_series += band(runs, "val/acc", name, color)
        collapse_series += band(runs, OWN, name, color)
    acc_fig = Figure(
        "stablemax_val_acc",
        "Grokking without weight decay: val accuracy per loss",
        "step (optimizer updates)",
        "val accuracy",
        acc_series,
        caption="Mean over seeds with 95% t-bands; no arm uses weight decay.",
    )
    collapse_fig = Figure(
        "stablemax_collapse",
        "Softmax collapse: training samples whose correct-class gradient is exactly zero",
        "step (optimizer updates)",
        "fraction of training samples",
        collapse_series,
        caption="Under each run's own loss and precision (analysis.collapse): the loss of these samples rounds to exactly 0.",
    )
    return Findings({"headline": headline(per_arm), "arms": per_arm}, [acc_fig, collapse_fig])


def headline(per_arm: dict[str, Any]) -> str:
    parts = []
    for name, a in per_arm.items():
        val, n = a["steps_to_val_acc_99"], len(a["steps_to_val_acc_99"]["per_seed"])
        got = n - val["censored"]
        reach = f"val 99% at step {val['mean']:.0f} ({got}/{n} seeds)" if got else f"val never 99% (final {a['final_val_acc']['mean']:.2f})"
        parts.append(f"{name}: {reach}, collapsed at most {a['collapsed_own_loss_max']['mean']:.2f} of the training set")
    return "no weight decay; " + "; ".join(parts)


RECIPES = [
    Recipe(
        "stablemax",
        "Prieto et al. 2025: softmax collapse stops learning without wd; StableMax, ⊥Grad and float64 vs softmax CE",
        ("sweep",),
        analyze,
    ),
]
