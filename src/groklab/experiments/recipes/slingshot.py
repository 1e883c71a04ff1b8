"""The slingshot mechanism (Thilak et al. 2022): Adam without weight decay, trained long past fitting the training
set, goes through cycles in which the training loss bursts back up by orders of magnitude and the last-layer
weight norm, after slow steady growth, shoots up just before the burst and then stays flat (a staircase), then the
cycle repeats. The spikes act as an implicit regularizer (Pope's review).

slingshot: one sweep, Adam with no weight decay and `--analysis norms` (which logs norm/last_layer). The spikes of the
last-layer norm (abrupt breaks of its growth, a jump or a stall: analysis.spikes.norm_breaks) and of the training
loss (bursts far above its recent level, analysis.spikes.loss_spikes) are detected per run, counted, and marked on the
figures. A control arm with weight decay (AdamW) can sit beside it in the spec: its norm is held down, so the count
there says whether the detector fires without the mechanism.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groklab.analysis.spikes import loss_spikes, norm_breaks
from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, arms, censored_stats
from groklab.report.data import RunData
from groklab.report.plots import Figure, Series

LOSS_FLOOR = 1e-4
"""A training-loss burst counts only if it reaches this (a jump between two rounding-level losses is not a slingshot)."""


def arm_label(row: dict[str, Any]) -> str:
    wd = row["optim.weight_decay"]
    return f"{row['optim.name']} lr {row['optim.lr']:g}, " + (f"wd {wd:g}" if wd else "no wd")


def detect(run: RunData) -> dict[str, list[int]]:
    """The logged steps at which the last-layer norm's growth broke (jump or stall) and the training loss burst, for one run."""
    norm = run.columns["norm/last_layer"]
    keep = ~np.isnan(norm)  # analysis rows only (analysis_every may skip evaluations)
    norm_steps = run.steps[keep]
    return {
        "norm_breaks": [int(norm_steps[i]) for i in norm_breaks(norm[keep])],
        "loss_spikes": [int(run.steps[i]) for i in loss_spikes(run.columns["train/loss"], floor=LOSS_FLOOR)],
    }


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    groups = arms(dirs["sweep"], arm_label)
    per_arm: dict[str, Any] = {}
    figures = []
    for i, (name, (members, runs)) in enumerate(groups.items()):
        found = [detect(r) for r in runs]
        per_arm[name] = {
            "weight_decay": members[0]["optim.weight_decay"],
            "steps": int(runs[0].config["steps"]),  # the budget (runs.parquet's "steps" is where a run stopped)
            "norm_breaks_per_seed": [len(f["norm_breaks"]) for f in found],
            "loss_spikes_per_seed": [len(f["loss_spikes"]) for f in found],
            "norm_break_steps": [f["norm_breaks"] for f in found],
            "loss_spike_steps": [f["loss_spikes"] for f in found],
            "first_norm_break": censored_stats([f["norm_breaks"][0] if f["norm_breaks"] else None for f in found]),
            "final_val_acc": [r.get("val/acc") for r in members],
        }
        run, spots, color = runs[0], found[0], PALETTE[i % len(PALETTE)]
        figures.append(trace_figure(f"slingshot_{i}", name, members[0]["seed"], run, spots, color))
    return Findings({"headline": headline(per_arm), "arms": per_arm}, figures)


def trace_figure(key: str, name: str, seed: int, run: RunData, spots: dict[str, list[int]], color: str) -> Figure:
    """Last-layer norm and training loss of one run (two y-scales do not mix: the loss is drawn as log10)."""
    norm = run.columns["norm/last_layer"]
    keep = ~np.isnan(norm)
    loss = np.log10(np.maximum(run.columns["train/loss"], 1e-12))
    series = [
        Series("line", run.steps[keep].tolist(), norm[keep].tolist(), name="last-layer weight norm", color=color),
        Series("line", run.steps.tolist(), loss.tolist(), name="log10 train loss", color=PALETTE[3], dash=True),
    ]
    vlines = [(s, "norm break", PALETTE[2]) for s in spots["norm_breaks"]] + [(s, "loss spike", PALETTE[3]) for s in spots["loss_spikes"]]
    return Figure(
        key,
        f"Slingshot: last-layer norm and train loss ({name}, seed {seed})",
        "step (optimizer updates)",
        "L2 norm / log10 loss",
        series,
        vlines=vlines,
        caption=f"{len(spots['norm_breaks'])} norm breaks and {len(spots['loss_spikes'])} loss spikes detected (vertical lines).",
    )


def headline(per_arm: dict[str, Any]) -> str:
    parts = []
    for name, a in per_arm.items():
        breaks, spikes = a["norm_breaks_per_seed"], a["loss_spikes_per_seed"]
        first = a["first_norm_break"]["per_seed"]
        when = ", first at step " + "/".join(str(s) if s is not None else "-" for s in first) if any(s is not None for s in first) else ""
        parts.append(
            f"{name}: {'/'.join(map(str, breaks))} last-layer norm breaks and {'/'.join(map(str, spikes))} loss spikes per seed in {a['steps']} steps{when}"
        )
    return "; ".join(parts)


RECIPES = [
    Recipe(
        "slingshot",
        "Thilak et al. 2022: Adam without weight decay, long run; last-layer norm breaks and loss spikes detected and counted",
        ("sweep",),
        analyze,
    ),
]
