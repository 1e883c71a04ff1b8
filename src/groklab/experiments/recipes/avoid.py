"""Avoiding grokking (Pope's review, after Thilak et al.): without explicit or implicit regularization there is no
delayed generalization, because there is no generalization at all; implicit regularization brings it back.

avoid-grokking: one sweep whose arms differ in several fields at once ([zip] in the spec):
- the grokking baseline: weight decay, minibatches (train fits first, val follows much later);
- regularization off: no weight decay, a low learning rate, full batch and the loss in float64. Train fits and val
  does not move within the budget (Pope: "fully avoid grokking" in the sense of no generalization);
- implicit regularization back on, still without weight decay: batch 50, or a learning rate of 7e-2, which Pope
  reports generalizing within 3·10⁴ steps.
The finding per arm is the delay: steps from 99% train to 99% val accuracy (censored when val never got there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, arms, band, censored_stats, estimate, summary_steps
from groklab.report.plots import STEP_LABEL, Figure
from groklab.stats import mean_ci


def arm_label(row: dict[str, Any]) -> str:
    """A readable name of the setting a run belongs to (its seeds share it)."""
    wd, lr, batch = row["optim.weight_decay"], row["optim.lr"], row["optim.batch_size"]
    batch_text = "full batch" if batch == 0 else f"batch {batch}"
    dtype = "float64 loss" if row["loss_dtype"] == "float64" else "float32 loss"
    head = f"wd {wd:g}" if wd else "no wd"
    return f"{head}, {row['optim.name']} lr {lr:g}, {batch_text}, {dtype}"


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    groups = arms(dirs["sweep"], arm_label)
    per_arm: dict[str, Any] = {}
    series = []
    for i, (name, (members, runs)) in enumerate(groups.items()):
        color = PALETTE[i % len(PALETTE)]
        delays = [r["grok_delay"] if r.get("grok_delay") is not None else None for r in members]
        per_arm[name] = {
            "weight_decay": members[0]["optim.weight_decay"],
            "steps": int(runs[0].config["steps"]),  # the budget (runs.parquet's "steps" is where a run stopped)
            "steps_to_train_acc_99": summary_steps(members, "steps_to_train_acc_99"),
            "steps_to_val_acc_99": summary_steps(members, "steps_to_val_acc_99"),
            "grok_delay": censored_stats(delays),
            "final_val_acc": estimate(mean_ci([float(r["val/acc"]) for r in members])),
            "final_test_acc": estimate(mean_ci([float(r["test/acc"]) for r in members])),
        }
        series += band(runs, "val/acc", f"val: {name}", color)
        series += [s for s in band(runs, "train/acc", f"train: {name}", color, dash=True) if s.kind == "line"]
    figure = Figure(
        "avoid_curves",
        "Avoiding grokking: train (dashed) and val accuracy per setting",
        STEP_LABEL,
        "accuracy",
        series,
        xlog=True,
        caption="Mean over seeds with 95% t-bands on val. Weight decay groks late; no regularization at all (full batch, "
        "low lr, float64 loss) fits train and never generalizes; small batches or a large lr generalize without weight decay.",
    )
    return Findings({"headline": headline(per_arm), "arms": per_arm}, [figure])


def headline(per_arm: dict[str, Any]) -> str:
    parts = []
    for name, a in per_arm.items():
        val, delay, n = a["steps_to_val_acc_99"], a["grok_delay"], len(a["grok_delay"]["per_seed"])
        reached = n - val["censored"]
        if reached == 0:
            parts.append(f"{name}: val never reached 99% in {a['steps']} steps (final val acc {a['final_val_acc']['mean']:.2f})")
        else:
            mean_delay = delay["mean"] if delay["mean"] is not None else float("nan")
            parts.append(f"{name}: val 99% at step {val['mean']:.0f} ({reached}/{n} seeds), {mean_delay:.0f} steps after train 99%")
    return "; ".join(parts)


RECIPES = [
    Recipe(
        "avoid-grokking",
        "Pope's review: no wd + low lr + full batch + float64 loss fits without generalizing; batch 50 or lr 7e-2 vs a wd baseline",
        ("sweep",),
        analyze,
    ),
]
