"""Sweeps: a TOML spec expanded into runs, run on a local process pool or on Ray, queried with DuckDB.

Python API: ``run_sweep(spec_path, out)``, ``expand(load_spec(path))``, ``query(sweep_dir, sql)``, and the
statistics in ``groklab.stats``; the commands `groklab sweep` and `groklab query` (cli.py) print what they return.
"""

from __future__ import annotations

from groklab.stats import group_stats, mean_ci
from groklab.sweep.query import query
from groklab.sweep.runner import SweepResult, run_sweep
from groklab.sweep.spec import PlannedRun, SweepSpec, expand, load_spec, parse_spec, run_id

__all__ = [
    "PlannedRun",
    "SweepResult",
    "SweepSpec",
    "expand",
    "group_stats",
    "load_spec",
    "mean_ci",
    "parse_spec",
    "query",
    "run_id",
    "run_sweep",
]
