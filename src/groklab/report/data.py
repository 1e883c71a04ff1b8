"""What a report reads: run directories as metric columns, sweep tables as rows, and the statistics drawn.

Reading is tolerant on purpose: a report is most wanted while a run is still going or after it was killed,
so a run without summary.json, a torn metrics line or a sweep row without a run directory still renders.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from groklab.config import UserError, flatten, to_dict
from groklab.runio import RunDir, contained, read_metrics
from groklab.stats import GROK_ACC, RESULT_COLUMNS, SEED_COLUMNS, SPLITS, first_step

STANDARD_KEYS = {"step", "time_s", "lr"} | {f"{s}/{m}" for s in SPLITS for m in ("loss", "acc")}
MAX_LOG_POINTS = 400
MAX_TRANSITION_POINTS = 400


@dataclass
class RunData:
    """One run read back for plotting: metric columns (NaN where a row lacks a key), config and summary."""

    path: Path
    config: dict[str, Any]
    columns: dict[str, np.ndarray]
    summary: dict[str, Any] | None

    @property
    def steps(self) -> np.ndarray:
        return self.columns.get("step", np.zeros(0))

    @property
    def complete(self) -> bool:
        return self.summary is not None

    @property
    def name(self) -> str:
        return self.path.name

    def first_step(self, key: str, threshold: float = GROK_ACC) -> int | None:
        """Step at which metric `key` first reaches `threshold` (None if never or not logged)."""
        values = self.columns.get(key)
        return None if values is None else first_step(self.steps, values, threshold)


def is_run(path: Path) -> bool:
    return (path / "config.json").is_file()


def is_sweep(path: Path) -> bool:
    return (path / "runs.parquet").is_file() or (path / "spec.toml").is_file()


def child_runs(path: Path) -> list[Path]:
    """Run directories directly inside `path` (a folder of runs), by name."""
    return sorted(p for p in path.iterdir() if p.is_dir() and is_run(p)) if path.is_dir() else []


def is_recipe(path: Path) -> bool:
    return (path / "recipe.json").is_file()


def kind_of(path: Path) -> str:
    """'run', 'sweep', 'recipe' or 'folder' (a plain folder holding run directories); a UserError for anything else."""
    if not path.is_dir():
        raise UserError(f"{path} is not a directory: expected a run directory or a sweep directory")
    if is_run(path):
        return "run"
    if is_recipe(path):
        return "recipe"
    if is_sweep(path):
        return "sweep"
    if child_runs(path):
        return "folder"
    raise UserError(f"{path} is neither a run (no config.json) nor a sweep (no runs.parquet or spec.toml) nor a folder of runs")



def _columns_from_rows(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    cols: dict[str, np.ndarray] = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        if all(v is None or isinstance(v, (int, float)) for v in values):
            cols[key] = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
    return cols


def read_columns(path: Path, finished: bool) -> dict[str, np.ndarray]:
    """Numeric metric columns of a run; metrics.parquet when the run finished (fast), else metrics.jsonl."""
    parquet = path / "metrics.parquet"
    if finished and parquet.is_file():
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(parquet)
        except Exception:  # a damaged parquet falls back to the append-only log, the source of truth
            table = None
        if table is not None:
            cols = {}
            for name in table.column_names:
                arr = table.column(name).to_numpy(zero_copy_only=False)
                if arr.dtype.kind in "iufb" or arr.dtype == object:
                    try:
                        cols[name] = np.asarray(arr, dtype=np.float64)
                    except (TypeError, ValueError):
                        continue
            return cols
    return _columns_from_rows(read_metrics(path / "metrics.jsonl"))


def load_run_data(path: Path) -> RunData:
    """A run directory for plotting; the config is validated like `load_run` does (clear error if broken)."""
    run = RunDir(path)
    config = flatten(to_dict(run.read_config()))
    summary = run.read_summary()
    return RunData(path, config, read_columns(path, summary is not None), summary)


# ---------------------------------------------------------------------------------------------
# Sweep tables.


def run_row(path: Path, base: Path) -> dict[str, Any]:
    """A runs.parquet-like row built from a run directory (for folders of runs and unfinished sweeps)."""
    run = RunDir(path)
    try:
        config = flatten(to_dict(run.read_config()))
    except UserError:
        config = {}
    summary = run.read_summary()
    row: dict[str, Any] = {"run_id": path.name, "run_dir": str(path.relative_to(base)), **config}
    if summary is None:
        rows = read_metrics(run.metrics_path) if run.metrics_path.exists() else []
        row.update(status="incomplete", steps=rows[-1]["step"] if rows else 0)
        return row
    row.update({k: summary.get(k) for k in RESULT_COLUMNS if k in summary})
    row.update(summary.get("final") or {})
    return row


def row_run_dir(sweep: Path, row: dict[str, Any]) -> Path:
    """A sweep table row's run directory (its run_dir, else runs/<run_id>); a UserError if that leads outside the sweep."""
    return contained(sweep, row.get("run_dir") or Path("runs") / str(row.get("run_id")), sweep / "runs.parquet")


def sweep_rows(path: Path) -> list[dict[str, Any]]:
    """One dict per run: runs.parquet when present, else built from the run directories found."""
    parquet = path / "runs.parquet"
    if parquet.is_file():
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(parquet).to_pylist()
        except Exception as err:
            raise UserError(f"{parquet} cannot be read ({type(err).__name__}); is the sweep still writing it?") from None
        for row in rows:  # every run directory a reader may open from this table stays inside the sweep
            row_run_dir(path, row)
        return rows
    runs = child_runs(path / "runs") if (path / "runs").is_dir() else child_runs(path)
    return [run_row(p, path) for p in runs]


def config_columns(rows: list[dict[str, Any]]) -> list[str]:
    skip = {"run_id", "run_dir", *RESULT_COLUMNS}
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if k not in skip))
    return list(seen)


def varying_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Config columns whose value differs between runs, in column order."""
    out = []
    for col in config_columns(rows):
        values = {json.dumps(row.get(col), sort_keys=True, default=str) for row in rows}
        if len(values) > 1:
            out.append(col)
    return out


def group_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Varying config columns that define groups (seeds are replicates inside a group)."""
    return [c for c in varying_columns(rows) if c not in SEED_COLUMNS]


def is_numeric_column(rows: list[dict[str, Any]], col: str) -> bool:
    values = [row.get(col) for row in rows if row.get(col) is not None]
    return bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def as_float(value: Any) -> float:
    """NaN for None/missing/non-numbers, so results can be averaged without special cases."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


# ---------------------------------------------------------------------------------------------
# Statistics and downsampling.


def _crossing_window(steps: np.ndarray, acc: np.ndarray, low: float = 0.1, high: float = GROK_ACC) -> np.ndarray:
    """Indices of the rise of `acc` to `high`: from its last value below `low` before the first crossing of
    `high`, to a few rows past it. These rows carry the grokking transition and are never dropped."""
    above = np.nonzero(acc >= high)[0]
    if above.size == 0:
        return np.zeros(0, dtype=np.int64)
    cross = int(above[0])
    below = np.nonzero(acc[:cross] < low)[0]
    start = int(below[-1]) if below.size else 0
    idx = np.arange(max(start - 2, 0), min(cross + 3, len(steps)))
    if idx.size > MAX_TRANSITION_POINTS:  # a long noisy climb: keep it evenly, plus both ends exactly
        keep = np.linspace(0, idx.size - 1, MAX_TRANSITION_POINTS).round().astype(np.int64)
        idx = np.union1d(np.union1d(idx[keep], idx[:5]), idx[-5:])
    return idx


def downsample_indices(steps: np.ndarray, columns: dict[str, np.ndarray], n_log: int = MAX_LOG_POINTS) -> np.ndarray:
    """Row indices to plot: about `n_log` log-spaced in step, the first and last, and every row of the
    train and val accuracy transitions to 0.99 (the grokking point must be exact on the page)."""
    n = len(steps)
    if n <= n_log:
        return np.arange(n)
    positive = np.maximum(steps.astype(np.float64), 1.0)
    targets = np.geomspace(positive[0], positive[-1], n_log)
    picked = np.searchsorted(positive, targets).clip(0, n - 1)
    keep = [picked, np.array([0, n - 1])]
    for key in ("train/acc", "val/acc"):
        if key in columns:
            keep.append(_crossing_window(steps, np.nan_to_num(columns[key], nan=-1.0)))
    return np.unique(np.concatenate(keep).astype(np.int64))
