"""runs.parquet: one row per planned run, the flattened config plus the run's summary.

The rows live in memory and are rewritten atomically after every finished run, so that a query during a
sweep, or after the driver was killed, sees a complete, readable file. The schema is fixed (typed from
the Config's fields), so columns keep their types even while every value in them is still null.

Two sweep processes may share a sweep dir (see locks.py): each write happens under the table lock and first
takes in the finished and diverged rows the other one wrote, so neither erases the other's results.
"""

from __future__ import annotations

import io
import typing
from pathlib import Path
from typing import Any

from groklab.config import flatten, leaf_fields, to_dict
from groklab.runio import RunDir, atomic_write_bytes
from groklab.sweep.locks import LOCK_DIR, TABLE_LOCK, locked
from groklab.sweep.spec import PlannedRun

FINAL_KEYS = ("train/acc", "val/acc", "test/acc", "train/loss", "val/loss", "test/loss")
SUMMARY_COLUMNS: dict[str, type] = {
    "status": str,
    "error": str,
    "steps": int,
    "wall_s": float,
    "steps_to_train_acc_99": int,
    "steps_to_val_acc_99": int,
    "grokked": bool,
    "grok_delay": int,
    **dict.fromkeys(FINAL_KEYS, float),
}
DONE = ("finished", "diverged")
"""Statuses a rerun skips; `interrupted`, `pending` and `failed` runs are run (resumed) again."""


def _arrow_type(tp: Any) -> Any:
    import pyarrow as pa

    if typing.get_origin(tp) is typing.Literal:
        tp = type(typing.get_args(tp)[0])
    return {bool: pa.bool_(), int: pa.int64(), float: pa.float64(), str: pa.string()}[tp]


def schema() -> Any:
    import pyarrow as pa

    columns = {"run_id": str, "run_dir": str, **{p: tp for p, (tp, _) in leaf_fields().items()}, **SUMMARY_COLUMNS}
    return pa.schema([(name, _arrow_type(tp)) for name, tp in columns.items()])


def summary_columns(summary: dict[str, Any] | None, status: str | None = None, error: str | None = None) -> dict[str, Any]:
    """The summary part of a row; a run without summary.json is `pending` unless told otherwise."""
    s = summary or {}
    row = {key: s.get(key) for key in SUMMARY_COLUMNS if key not in FINAL_KEYS}
    row.update({key: (s.get("final") or {}).get(key) for key in FINAL_KEYS})
    row["status"] = status or s.get("status", "pending")
    row["error"] = error
    return row


class RunsTable:
    """The rows of runs.parquet for a sweep dir, keyed by run_id, in planned order."""

    def __init__(self, sweep_dir: Path, runs: list[PlannedRun]) -> None:
        self.path = sweep_dir / "runs.parquet"
        self.lock = sweep_dir / LOCK_DIR / TABLE_LOCK
        self.rows: dict[str, dict[str, Any]] = {}
        for run in runs:
            summary = RunDir(sweep_dir / run.run_dir).read_summary()
            base = {"run_id": run.run_id, "run_dir": run.run_dir, **flatten(to_dict(run.config))}
            self.rows[run.run_id] = {**base, **summary_columns(summary)}

    def done(self, run_id: str) -> bool:
        return self.rows[run_id]["status"] in DONE

    def update(self, run_id: str, summary: dict[str, Any] | None, status: str | None = None, error: str | None = None) -> None:
        self.rows[run_id].update(summary_columns(summary, status, error))

    def merge_from_disk(self) -> None:
        """Take in the rows that runs.parquet says are done and this table does not (another sweep ran them)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.path.exists():
            return
        try:
            disk = pq.read_table(self.path, columns=["run_id", *SUMMARY_COLUMNS]).to_pylist()
        except (OSError, pa.ArrowException):  # unreadable or of another schema: derived data, rewritten below
            return
        for row in disk:
            mine = self.rows.get(row["run_id"])
            if mine is not None and row["status"] in DONE and mine["status"] not in DONE:
                mine.update(row)

    def write(self) -> None:
        """Merge with the file on disk and replace it atomically, all under the table lock."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with locked(self.lock):
            self.merge_from_disk()
            buf = io.BytesIO()
            pq.write_table(pa.Table.from_pylist(list(self.rows.values()), schema=schema()), buf, compression="zstd")
            atomic_write_bytes(self.path, buf.getvalue())
