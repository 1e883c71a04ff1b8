"""Davies et al. 2023 (unifying grokking and double descent): model-wise grokking.

One sweep over the MLP's hidden width at fixed data and a fixed step budget. Figures: test loss vs width, at the
end and at a few step snapshots (log-spaced through the budget), and test loss vs steps for each width. The
finding is whether final test loss is non-monotone in width: a peak at an intermediate width (worse than a
smaller one and a larger one), the model-wise analogue of the epoch-wise rise and fall of test loss in grokking.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, band, group, mean_curve, rows, run_data
from groklab.report.plots import Figure, Series

N_SNAPSHOTS = 3
"""Step snapshots drawn besides the final one (log-spaced through the budget)."""


def loss_at(curve: tuple[list[float], list[float], list[float], list[float]], step: float) -> float:
    """Mean test loss at the last logged step <= `step`."""
    steps, mean, _, _ = curve
    i = int(np.searchsorted(steps, step, side="right")) - 1
    return mean[max(i, 0)]


def bumps(widths: list[int], losses: list[float]) -> list[int]:
    """Widths whose loss is above both a smaller and a larger width's: the peaks of a non-monotone curve."""
    return [w for i, w in enumerate(widths) if max(losses[:i], default=np.inf) < losses[i] > min(losses[i + 1 :], default=np.inf) and i]


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    sweep = dirs["width"]
    groups = sorted(group(rows(sweep), "model.width").items())
    first = groups[0][1][0]
    budget = int(first["steps"])
    curves = {}
    per_step_series = []
    for i, ((width,), members) in enumerate(groups):
        runs = [run_data(sweep, r) for r in members]
        curves[width] = mean_curve(runs, "test/loss")
        per_step_series += band(runs, "test/loss", f"width {width}", PALETTE[i % len(PALETTE)])
    widths = [w for (w,), _ in groups]
    snapshots = [int(s) for s in np.unique(np.geomspace(max(first["eval_every"], budget / 30), budget, N_SNAPSHOTS + 1).round(-1))][:-1]
    final = [curves[w][1][-1] for w in widths]
    width_series = [
        Series("line", widths, [loss_at(curves[w], s) for w in widths], name=f"step {s}", color=PALETTE[(k + 1) % len(PALETTE)], dash=True)
        for k, s in enumerate(snapshots)
    ]
    width_series.append(Series("line", widths, final, name=f"final (step {budget})", color=PALETTE[0]))
    width_series.append(Series("markers", widths, final, color=PALETTE[0], legend=False))
    task = (
        f"{first['task.op']} mod {first['task.p']}, {first['task.train_frac']:.0%} train"
        if first["task.name"] == "binop"
        else f"{first['task.name']}"
    )
    setting = f"{task}, MLP depth {first['model.depth']}, {first['loss']} loss, lr {first['optim.lr']}, wd {first['optim.weight_decay']}"
    figures = [
        Figure(
            "modelwise_width",
            f"Model-wise: test loss vs MLP width ({setting})",
            "hidden width (units per layer, log scale)",
            "test loss (log scale)",
            width_series,
            xlog=True,
            ylog=True,
            caption=f"Mean over {len(groups[0][1])} seed(s). Solid: after {budget} steps; dashed: at earlier steps.",
        ),
        Figure(
            "modelwise_steps",
            "Test loss vs steps per width",
            "step (optimizer updates, log scale)",
            "test loss (log scale)",
            per_step_series,
            xlog=True,
            ylog=True,
            caption="Mean over seeds with 95% bands.",
        ),
    ]
    peaks = bumps(widths, final)
    test_acc = {w: float(np.mean([r["test/acc"] for r in members])) for (w,), members in groups}
    numbers: dict[str, Any] = {
        "setting": setting,
        "budget_steps": budget,
        "widths": widths,
        "final_test_loss": dict(zip(map(str, widths), final, strict=True)),
        "final_test_acc": {str(w): a for w, a in test_acc.items()},
        "test_loss_at_steps": {str(s): {str(w): loss_at(curves[w], s) for w in widths} for s in snapshots},
        "non_monotone": bool(peaks),
        "peak_widths": peaks,
        "best_width": widths[int(np.argmin(final))],
    }
    shown = ", ".join(f"{w}: {v:.3g}" for w, v in zip(widths, final, strict=True))
    numbers["headline"] = (
        f"Final test loss vs width is {'non-monotone, peaking at width ' + ', '.join(map(str, peaks)) if peaks else 'monotone (no peak)'} "
        f"(width: loss after {budget} steps — {shown}); lowest at width {numbers['best_width']}."
    )
    return Findings(numbers, figures)


RECIPES = [
    Recipe(
        "modelwise",
        "Davies et al. 2023: model-wise grokking, test loss vs MLP width at fixed data (and vs steps per width)",
        ("width",),
        analyze,
    ),
]
