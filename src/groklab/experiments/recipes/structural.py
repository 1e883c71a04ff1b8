"""Structural grokking (Murty et al. 2023): transformer LMs trained far past in-distribution saturation start to
generalize hierarchically; how well is an inverted U in depth, and the best depth is the most tree-structured.

structural: one depth sweep (model.n_layers) per task (dyck, question-formation, tense-inflection), with
`--analysis tree`. Findings per task and depth, over seeds: generalization accuracy when in-distribution val
accuracy first reaches 99% (where early stopping on it would stop) and at the end, the share of seeds whose
generalization accuracy ever passes 80% (with Wilson's 95% interval), and the final tree-structuredness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, SPLIT_COLORS, band, estimate, first_step, group, last_logged, rows, run_data
from groklab.report.data import RunData
from groklab.report.plots import Figure, Series
from groklab.stats import GROK_ACC, mean_ci, share_interval

PASS = 0.8
"""Generalization accuracy a seed must pass at some evaluation to count (the paper's inverted-U criterion)."""


def value_at(run: RunData, key: str, step: int | None) -> float | None:
    """Metric `key` at the logged `step` (None if step is None or the run did not log it there)."""
    if step is None or key not in run.columns:
        return None
    hit = np.nonzero(run.steps == step)[0]
    return float(run.columns[key][hit[0]]) if hit.size and not np.isnan(run.columns[key][hit[0]]) else None


def per_depth(runs: list[RunData]) -> dict[str, Any]:
    """One depth's numbers over its seeds."""
    at_saturation = [value_at(r, "gen/acc", first_step(r, "val/acc", GROK_ACC)) for r in runs]
    best = [float(np.nanmax(r.columns["gen/acc"])) for r in runs]
    passed = sum(b >= PASS for b in best)
    return {
        "gen_acc_at_val_99": estimate(mean_ci([v for v in at_saturation if v is not None])),
        "val_never_99": at_saturation.count(None),
        "gen_acc_final": estimate(mean_ci([v for r in runs if (v := last_logged(r, "gen/acc")) is not None])),
        "gen_acc_best": estimate(mean_ci(best)),
        "share_passing_80": passed / len(runs),
        "share_passing_80_ci": list(share_interval(passed, len(runs))),  # Wilson's, 95%
        "tree_final": estimate(mean_ci([v for r in runs if (v := last_logged(r, "tree/score")) is not None])),
        "seeds": len(runs),
    }


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    numbers: dict[str, Any] = {}
    figures: list[Figure] = []
    for task, sweep in dirs.items():
        by_depth = {
            depth: [run_data(sweep, r) for r in members] for (depth,), members in sorted(group(rows(sweep), "model.n_layers").items())
        }
        numbers[task] = {str(depth): per_depth(runs) for depth, runs in by_depth.items()}
        curves: list[Series] = []
        for i, (depth, runs) in enumerate(by_depth.items()):
            color = PALETTE[i % len(PALETTE)]
            curves += band(runs, "gen/acc", f"gen acc, {depth} layers", color)
            curves += [s for s in band(runs, "val/acc", f"val acc, {depth} layers", color, dash=True) if s.kind == "line"]
        depths = [f"{d} layers" for d in by_depth]
        shares = [numbers[task][str(d)]["share_passing_80"] for d in by_depth]
        trees = [numbers[task][str(d)]["tree_final"]["mean"] or 0.0 for d in by_depth]
        figures += [
            Figure(
                f"{task}_curves",
                f"{task}: in-distribution (val, dashed) and generalization (gen) accuracy per depth",
                "step (optimizer updates)",
                "accuracy",
                curves,
                xlog=True,
                caption="Means over seeds with 95% bands (gen only). Structural grokking: gen keeps rising long after val saturates.",
            ),
            Figure(
                f"{task}_depth",
                f"{task}: share of seeds whose gen accuracy ever passes {PASS:.0%}, by depth",
                "depth",
                "share of seeds",
                [Series("bar", depths, shares, name=f"gen acc ever >= {PASS:.0%}", color=SPLIT_COLORS["val"])],
            ),
            Figure(
                f"{task}_tree",
                f"{task}: tree-structuredness at the end, by depth",
                "depth",
                "tree-structuredness (mean over seeds)",
                [Series("bar", depths, trees, name="tree/score", color=PALETTE[2])],
                caption="Sum over the greedy parse's nodes of (best split − random split) of span cosines, mean over 32 val sentences.",
            ),
        ]
    return Findings({"headline": headline(numbers), "per_task": numbers}, figures)


def headline(numbers: dict[str, Any]) -> str:
    parts = []
    for task, depths in numbers.items():
        cells = []
        for depth, n in depths.items():
            sat, end = n["gen_acc_at_val_99"]["mean"], n["gen_acc_final"]["mean"]
            at = f"{sat:.2f}" if sat is not None else "n/a"
            final = f"{end:.2f}" if end is not None else "n/a"
            cells.append(f"{depth} layers gen {at} at val 99% -> {final} at the end ({n['share_passing_80']:.0%} pass 80%)")
        parts.append(f"{task}: " + ", ".join(cells))
    return "; ".join(parts)


RECIPES = [
    Recipe(
        "structural",
        "Murty et al. 2023 structural grokking: LM depth sweeps on Dyck, question formation and tense inflection; gen vs in-distribution accuracy, tree-structuredness",
        ("dyck", "question-formation", "tense-inflection"),
        analyze,
        scale_parts={"faithful": ("tense-inflection",)},  # the other two at the paper's width: 54 CPU-hours more
    ),
]
