"""Liu et al. 2022 (effective theory of representation learning): phase diagrams of grokking.

Every run of a grid is classified by groklab.analysis.phases.classify_phase from its curves (the same rule the
run reports use): comprehension (val follows train closely), grokking (val reaches 99% more than the fitting time
after train did), memorization (train fitted, val never within the budget), confusion (not even train fitted).
The majority phase over seeds is drawn per cell.

Two parts: ``lr-wd``, a grid over (decoder) learning rate × weight decay; ``embed-decoder``, a grid over the
embedding's learning rate (``optim.embed_lr``, Liu et al.'s representation lr) × the rest's (``optim.lr``, the
decoder lr). The classification depends on the step budget: memorization means "not within the budget".
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from groklab.analysis.phases import GROK_FACTOR, PHASES
from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import rows, run_data
from groklab.report import run_phase
from groklab.report.plots import Figure, phase_heatmap

PART_TITLES = {
    "lr-wd": ("Phase diagram: learning rate × weight decay", "phase_lr_wd"),
    "embed-decoder": ("Phase diagram: representation (embedding) lr × decoder lr", "phase_embed_decoder"),
}


def classify(sweep: Path) -> tuple[list[dict[str, Any]], list[str | None]]:
    """The sweep's rows and each run's phase (None for an unfinished run)."""
    members = rows(sweep)
    return members, [run_phase(run_data(sweep, r)) for r in members]


def part_findings(part: str, sweep: Path) -> tuple[dict[str, Any], Figure]:
    members = rows(sweep)
    runs = [run_data(sweep, r) for r in members]
    phases = [run_phase(r) for r in runs]
    # The configured budget: runs.parquet's `steps` is where a run stopped, earlier for one that stop_patience ended.
    budget = max(int(r.config["steps"]) for r in runs)
    title, key = PART_TITLES[part]
    figure = phase_heatmap(members, phases, PHASES)
    if figure is None:
        raise ValueError(f"{sweep}: a phase diagram needs two numeric axes in the spec's grid")
    first = members[0]
    setting = f"{first['task.op']} mod {first['task.p']}, {first['task.train_frac']:.0%} train, {first['model.name']}, {budget} steps"
    figure.key, figure.title = key, title
    figure.caption = f"{setting}. {figure.caption}" + (
        f" Phases from the curves: grokking = val acc reached 99% more than {GROK_FACTOR:g}× the train-fitting steps after train did;"
        f" memorization = not within {budget} steps."
    )
    axes = [figure.xlabel, figure.ylabel]
    cells = [{**{a: r.get(a) for a in axes}, "seed": r.get("seed"), "phase": p} for r, p in zip(members, phases, strict=True)]
    counts = Counter(p for p in phases if p)
    return {"axes": axes, "setting": setting, "counts": {p: counts.get(p, 0) for p in PHASES}, "cells": cells}, figure


def count_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {p}" for p, n in counts.items() if n)


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    numbers: dict[str, Any] = {}
    figures = []
    for part, sweep in dirs.items():
        numbers[part], figure = part_findings(part, sweep)
        figures.append(figure)
    lr_wd = numbers["lr-wd"]
    no_wd = [c["phase"] for c in lr_wd["cells"] if c.get("optim.weight_decay") == 0]
    numbers["headline"] = (
        f"lr × weight decay ({len(lr_wd['cells'])} runs): {count_text(lr_wd['counts'])}"
        + (f" (without weight decay: {count_text(dict(Counter(no_wd)))})" if no_wd else "")
        + f"; embedding lr × decoder lr: {count_text(numbers['embed-decoder']['counts'])}."
    )
    return Findings(numbers, figures)


RECIPES = [
    Recipe(
        "liu-phases",
        "Liu et al. 2022: phase diagrams (comprehension / grokking / memorization / confusion) over lr × weight decay and embedding lr × decoder lr",
        ("lr-wd", "embed-decoder"),
        analyze,
    ),
]
