"""The sweep driver: expand the spec, prepare the sweep dir, run what is not done, keep runs.parquet current.

Sweep dir layout::

    spec.toml       a copy of the spec (a rerun with a different spec is refused)
    runs.parquet    one row per run: run_id, run_dir, flattened config, summary (see table.py)
    runs/<run_id>/  ordinary run directories written by groklab.train (a packed run's too: see packs.py)
    locks/          one lock file per run and one for runs.parquet (see locks.py)

Two sweep processes on one dir (a rerun started while the first still runs, or one driver per node) share
the work: a worker trains a run only while it holds the run's lock, a run another process holds is skipped
and reported as running elsewhere, and runs.parquet is merged and rewritten under its own lock.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groklab.errors import UserError
from groklab.runio import atomic_write_bytes
from groklab.sweep.executors import Task, check_shared, ray_connection, run_local, run_ray, sigterm_stops
from groklab.sweep.locks import locked, run_lock_path
from groklab.sweep.packs import check_pack, plan_packs
from groklab.sweep.spec import PlannedRun, SweepSpec, expand, parse_spec
from groklab.sweep.table import RunsTable
from groklab.sweep.worker import Member, kill_hook_from_env


@dataclass
class SweepResult:
    """What a sweep did: its rows (runs.parquet's content) and how long it took."""

    spec: SweepSpec
    runs: list[PlannedRun]
    rows: list[dict[str, Any]]
    skipped: int
    wall_s: float
    retries: dict[str, int] = field(default_factory=dict)
    elsewhere: dict[str, str] = field(default_factory=dict)
    """Runs skipped because another live process held their lock: run_id -> that holder's `host pid`."""


def prepare_sweep_dir(out: Path, spec: SweepSpec, spec_text: str) -> None:
    """Create `out` with spec.toml, or accept it if it holds this very spec; refuse anything else.

    The checks run under a lock on the directory itself, so two sweeps started together on a new dir agree:
    one writes spec.toml, the other finds it.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out} is not writable: {err.strerror}") from None
    existing = out / "spec.toml"
    with locked(out):
        if existing.exists():
            old = parse_spec(existing.read_text(), str(existing))
            if old.raw != spec.raw:
                raise UserError(f"--out {out} holds a sweep of a different spec ({existing}): choose another --out")
            return
        if any(out.iterdir()):
            raise UserError(f"--out {out} is not empty and holds no sweep; choose an empty or new directory")
        try:
            (out / "runs").mkdir()
            atomic_write_bytes(existing, spec_text.encode())
        except OSError as err:
            raise UserError(f"--out {out} is not writable: {err.strerror}") from None


class SweepProgress:
    """A rich progress bar over runs (done / running / failed, ETA) that also keeps runs.parquet current."""

    def __init__(self, table: RunsTable, total: int, skipped: int, enabled: bool) -> None:
        self.table = table
        self.running: set[str] = set()
        self.done, self.failed = skipped, 0
        self.retries: dict[str, int] = {}
        self.elsewhere: dict[str, str] = {}
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("[bold]sweep"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "done {task.fields[done]}  running {task.fields[running]}  failed {task.fields[failed]}"
                    "  elsewhere {task.fields[elsewhere]}"
                ),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("sweep", total=total, completed=skipped, done=skipped, running=0, failed=0, elsewhere=0)
            self.bar.start()

    def _refresh(self, advance: int = 0) -> None:
        if self.bar is not None:
            fields = {"done": self.done, "running": len(self.running), "failed": self.failed, "elsewhere": len(self.elsewhere)}
            self.bar.update(self.task, advance=advance, **fields)

    def started(self, run_id: str) -> None:
        self.running.add(run_id)
        self._refresh()

    def _say(self, message: str) -> None:
        if self.bar is not None:
            self.bar.console.print(message)
        else:
            print(message, file=sys.stderr)

    def retried(self, run_id: str, reason: str) -> None:
        self.running.discard(run_id)
        self.retries[run_id] = self.retries.get(run_id, 0) + 1
        self._say(f"run {run_id}: {reason}; retrying (it resumes from its last checkpoint)")
        self._refresh()

    def finished(self, run_id: str, status: str, payload: Any) -> None:
        self.running.discard(run_id)
        if status == "busy":  # another sweep process holds this run: leave it (and its row) to that one
            self.elsewhere[run_id] = str(payload)
            self._say(f"run {run_id} is running elsewhere (held by {payload}): skipped here")
            self._refresh(advance=1)
            return
        if status == "ok":
            self.table.update(run_id, payload)
            self.done += 1
        else:
            self.table.update(run_id, None, status="failed", error=str(payload))
            self.failed += 1
            self._say(f"run {run_id} failed: {payload}")
        self.table.write()
        self._refresh(advance=1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def worker_threads(workers: int | None, address: str | None = None) -> tuple[int | None, int]:
    """(workers, torch threads per worker): share this machine's cores (default: a worker per core); on a cluster each
    task reserves one CPU (workers None: as many as the cluster has)."""
    n_workers = workers if workers is not None else (None if address else default_workers())
    return n_workers, 1 if address else max(1, (os.cpu_count() or 1) // (n_workers or 1))


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def run_sweep(
    spec_path: Path,
    out: Path,
    *,
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = True,
    max_retries: int = 3,
    pack: int | None = None,
) -> SweepResult:
    """Run every run of the spec at `spec_path` into `out` (resuming a previous sweep of the same spec).

    pack: train runs that differ only in their seed as ensembles of up to this many (packs.py); None packs where the
    runs train on a GPU and not elsewhere. Bad input, an unreachable Ray cluster included, is refused before anything
    is written."""
    check_pack(pack)
    if backend not in ("local", "ray"):
        raise UserError(f"--backend {backend!r} is not valid: expected local or ray")
    if workers is not None and workers < 1:
        raise UserError(f"--workers {workers} is not valid: expected an integer >= 1")
    if address and backend != "ray":
        raise UserError("--address only applies to --backend ray")
    try:
        spec_text = spec_path.read_text()
    except OSError as err:
        raise UserError(f"cannot read sweep spec {spec_path}: {err.strerror}") from None
    spec = parse_spec(spec_text, spec_path.name)
    runs = expand(spec, spec_path.name)  # everything is validated before anything is written
    n_workers, threads = worker_threads(workers, address)
    with ray_connection(address, n_workers) if backend == "ray" else nullcontext() as ray:
        gpu_here = ray.cluster_resources().get("GPU", 0) > 0 if ray is not None else gpu_available()
        plan_packs(runs, pack, gpu_here)  # a refused --pack, before anything is written
        root = out.resolve()
        if address:
            check_shared(ray, root)
        prepare_sweep_dir(out, spec, spec_text)

        t0 = time.perf_counter()
        table = RunsTable(out, runs)
        table.write()
        todo = [r for r in runs if not table.done(r.run_id)]
        tasks = [
            Task(tuple(Member(r.run_id, r.config, str(root / r.run_dir), str(run_lock_path(root, r.run_id))) for r in members))
            for members in plan_packs(todo, pack, gpu_here)
        ]
        events = SweepProgress(table, len(runs), len(runs) - len(todo), progress)
        hook = kill_hook_from_env()
        try:
            with sigterm_stops():
                if tasks and ray is None:
                    run_local(tasks, n_workers or 1, threads, events, hook, max_retries)
                elif tasks:
                    run_ray(ray, tasks, n_workers, threads, events, hook, max_retries)
        finally:
            events.close()
            table.write()
    wall_s = time.perf_counter() - t0
    return SweepResult(spec, runs, list(table.rows.values()), len(runs) - len(todo), wall_s, events.retries, events.elsewhere)
