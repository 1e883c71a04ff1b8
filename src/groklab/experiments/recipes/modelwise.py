"""Davies et al. 2023 (unifying grokking and double descent): model-wise grokking.

One sweep over the MLP's hidden width at fixed data and a fixed step budget. Figures: test loss vs width, at the
end and at a few step snapshots, and test loss vs steps for each width. The finding is whether test loss is
non-monotone in width (a peak at an intermediate width, worse than a smaller one and a larger one: the model-wise
analogue of the epoch-wise rise and fall of test loss in grokking), at the end of the budget and at which steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, band, group, mean_curve, rows, run_data
from groklab.report.plots import Figure, Series

SNAPSHOTS = (0.25, 0.5)
"""Fractions of the budget drawn as test-loss-vs-width curves, besides the final step and the step with the largest peak."""
MARGIN = 1.05
"""A width is a peak when its test loss exceeds the lowest loss of some smaller and of some larger width by this factor."""


def loss_at(curve: tuple[list[float], list[float], list[float], list[float]], step: float) -> float:
    """Mean test loss at the last logged step <= `step`."""
    steps, mean, _, _ = curve
    i = int(np.searchsorted(steps, step, side="right")) - 1
    return mean[max(i, 0)]


def peak(widths: list[int], losses: list[float]) -> tuple[int | None, float]:
    """The width whose loss stands highest above the lowest loss on each side of it, and that height as a ratio
    (loss / the larger of the two side minima; above MARGIN means test loss is non-monotone in width)."""
    best: tuple[int | None, float] = (None, 0.0)
    for i in range(1, len(widths) - 1):
        ratio = losses[i] / max(min(losses[:i]), min(losses[i + 1 :]))
        if ratio > best[1]:
            best = (widths[i], ratio)
    return best


def non_monotone_steps(peaks: dict[int, tuple[int | None, float]]) -> list[int]:
    """The steps (keys of `peaks`, step -> `peak`) at which test loss vs width peaks more than MARGIN above both sides."""
    return [step for step, (_, ratio) in peaks.items() if ratio > MARGIN]


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
    common = sorted(set.intersection(*(set(curves[w][0]) for w in widths)))
    peaks = {int(step): peak(widths, [loss_at(curves[w], step) for w in widths]) for step in common}
    strongest = max(peaks, key=lambda step: peaks[step][1])
    snapshots = sorted({int(round(budget * f, -1)) for f in SNAPSHOTS} | {strongest} - {budget})
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
            "Model-wise grokking: test loss vs MLP width",
            "hidden width (units per layer, log scale)",
            "test loss (log scale)",
            width_series,
            xlog=True,
            ylog=True,
            caption=f"{setting}. Mean over {len(groups[0][1])} seed(s). Solid: after {budget} steps; dashed: at earlier steps.",
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
    non_monotone = non_monotone_steps(peaks)
    test_acc = {w: float(np.mean([r["test/acc"] for r in members])) for (w,), members in groups}
    numbers: dict[str, Any] = {
        "setting": setting,
        "budget_steps": budget,
        "widths": widths,
        "final_test_loss": dict(zip(map(str, widths), final, strict=True)),
        "final_test_acc": {str(w): a for w, a in test_acc.items()},
        "test_loss_at_steps": {str(s): {str(w): loss_at(curves[w], s) for w in widths} for s in snapshots},
        "peak_margin": MARGIN,
        "non_monotone_steps": non_monotone,
        "strongest_peak": {"step": strongest, "width": peaks[strongest][0], "ratio": peaks[strongest][1]},
        "final_non_monotone": int(common[-1]) in non_monotone,
        "best_final_width": widths[int(np.argmin(final))],
    }
    shown = ", ".join(f"{w}: {v:.3g}" for w, v in zip(widths, final, strict=True))
    span = (
        f"at {len(non_monotone)} of {len(peaks)} logged steps ({min(non_monotone)}-{max(non_monotone)})"
        if non_monotone
        else "at no logged step"
    )
    numbers["headline"] = (
        f"Test loss vs width has an interior peak (>{MARGIN - 1:.0%} above both sides) {span}; the strongest at step {strongest}, width "
        f"{peaks[strongest][0]} ({peaks[strongest][1]:.2f}x). After {budget} steps it is {'non-monotone' if numbers['final_non_monotone'] else 'monotone'}"
        f" (width: loss {shown}); lowest at width {numbers['best_final_width']}."
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
