"""What every recipe's `analyze` needs: the sweep's rows, per-run curves, seed statistics as JSON, plot pieces.

Recipes read finished sweeps (runs.parquet and run dirs) and never train. Statistics follow the sweep's
rules (groklab.stats): 95% t-intervals over seeds; runs that never reached the threshold are censored,
counted, and never averaged as if they had reached it at the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groklab.report.data import RunData, load_run_data, sweep_rows
from groklab.report.plots import PALETTE, SPLIT_COLORS, Series
from groklab.runio import RunDir
from groklab.stats import Estimate, mean_ci
from groklab.stats import first_step as first_crossing

__all__ = [
    "PALETTE",
    "SPLIT_COLORS",
    "Series",
    "arms",
    "band",
    "censored_stats",
    "estimate",
    "first_step",
    "group",
    "mean_curve",
    "rows",
    "run_data",
    "step_budget",
    "steps_to",
    "summary_steps",
]


def rows(sweep_dir: Path) -> list[dict[str, Any]]:
    """runs.parquet as dicts: the flattened config ("task.op", "optim.lr", ...) plus the summary columns."""
    return sweep_rows(sweep_dir)


def run_data(sweep_dir: Path, row: dict[str, Any]) -> RunData:
    """The run directory of one runs.parquet row, read back as metric columns."""
    return load_run_data(sweep_dir / str(row["run_dir"]))


def group(items: Sequence[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[dict[str, Any]]]:
    """Rows grouped by the values of `keys`, in first-seen order (seeds become the members of a group)."""
    out: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in items:
        out.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return out


def arms(sweep_dir: Path, label: Callable[[dict[str, Any]], str]) -> dict[str, tuple[list[dict[str, Any]], list[RunData]]]:
    """Runs grouped into named arms by `label(row)`, in first-seen order: each arm's rows and their curves (seeds
    are the members). For recipes whose arms differ in several config fields at once (a [zip] of settings)."""
    out: dict[str, tuple[list[dict[str, Any]], list[RunData]]] = {}
    for row in rows(sweep_dir):
        members, runs = out.setdefault(label(row), ([], []))
        members.append(row)
        runs.append(run_data(sweep_dir, row))
    return out


def step_budget(sweep_dir: Path, members: Sequence[dict[str, Any]]) -> int:
    """The configured step budget of these rows' runs: runs.parquet's `steps` is how far each run went, earlier than the
    budget for a run that stop_patience ended once it generalized."""
    return max(RunDir(sweep_dir / str(r["run_dir"])).read_config().steps for r in members)


def last_logged(run: RunData, key: str) -> float | None:
    """The last logged value of metric `key` (analysis keys are NaN on the rows that skipped them); None if never."""
    values = run.columns.get(key)
    values = values[~np.isnan(values)] if values is not None else np.array([])
    return float(values[-1]) if values.size else None


def first_step(run: RunData, key: str, threshold: float, above: bool = True) -> int | None:
    """First logged step where metric `key` is >= `threshold` (or <= with above=False); None if never."""
    values = run.columns.get(key)
    return None if values is None else first_crossing(run.steps, values, threshold, above)


def censored_stats(per_seed: Sequence[float | None]) -> dict[str, Any]:
    """Steps-to-something across seeds as JSON: mean [95% CI] over the seeds that got there, the censored
    count (never within the budget: not averaged in) and the per-seed values (None = censored)."""
    per_seed = list(per_seed)
    return {**estimate(mean_ci([s for s in per_seed if s is not None])), "censored": per_seed.count(None), "per_seed": per_seed}


def steps_to(runs: Sequence[RunData], key: str, threshold: float, above: bool = True) -> dict[str, Any]:
    """`censored_stats` of the first step at which metric `key` crosses `threshold`, per run."""
    return censored_stats([first_step(r, key, threshold, above) for r in runs])


def summary_steps(members: Sequence[dict[str, Any]], column: str = "steps_to_val_acc_99") -> dict[str, Any]:
    """`censored_stats` of a runs.parquet summary column (e.g. steps_to_val_acc_99) over a group's seeds."""
    return censored_stats([r.get(column) for r in members])


def estimate(e: Estimate) -> dict[str, Any]:
    """An Estimate as JSON (None for NaN: fewer than 2 values have no interval)."""
    clean = lambda v: None if v is None or math.isnan(v) else round(float(v), 6)  # noqa: E731
    return {"mean": clean(e.mean), "lo": clean(e.lo), "hi": clean(e.hi), "n": e.n}


def mean_curve(runs: Sequence[RunData], key: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(steps, mean, lo, hi) of metric `key` across runs (95% t-interval), over every step any run logged.

    A run that stopped early (stop_patience: its val acc held 99%) keeps its last value after its end, so
    the mean does not jump when the first seed stops; accuracies' intervals are clipped to [0, 1]."""
    logged = [(r.steps[~np.isnan(r.columns[key])].astype(int), r.columns[key][~np.isnan(r.columns[key])]) for r in runs if key in r.columns]
    steps = sorted(set().union(*(set(s.tolist()) for s, _ in logged))) if logged else []
    table = []
    for s, v in logged:
        at = dict(zip(s.tolist(), v.tolist(), strict=True))
        last = int(s[-1]) if len(s) else -1
        table.append([at.get(t, float(v[-1]) if t > last else math.nan) for t in steps])
    stats = [mean_ci([row[i] for row in table]) for i in range(len(steps))]
    low, high = (0.0, 1.0) if key.endswith("/acc") else (-math.inf, math.inf)
    fill = lambda a, b: b if math.isnan(a) else a  # noqa: E731  (one value: the band collapses to the mean)
    return (
        [float(t) for t in steps],
        [e.mean for e in stats],
        [max(fill(e.lo, e.mean), low) for e in stats],
        [min(fill(e.hi, e.mean), high) for e in stats],
    )


def band(
    runs: Sequence[RunData], key: str, name: str, color: str, dash: bool = False, transform: Callable[[float], float] | None = None
) -> list[Series]:
    """A mean line with its 95% band across seeds, for metric `key` (steps on x)."""
    steps, mean, lo, hi = mean_curve(runs, key)
    if transform is not None:
        mean, lo, hi = ([transform(v) for v in seq] for seq in (mean, lo, hi))
    label = f"{name} (mean of {len(runs)} seeds)" if len(runs) > 1 else name
    return [
        Series("band", steps, lo, upper=hi, color=color, name=f"{name} 95% CI", legend=False),
        Series("line", steps, mean, name=label, color=color, dash=dash),
    ]
