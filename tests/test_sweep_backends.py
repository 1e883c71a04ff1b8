"""End-to-end sweeps on the process pool and on a real local Ray: same results, killed workers retried, resume,
and two sweep processes sharing one sweep dir.

Each run is compared with a reference trained in this process without any interruption, so the tests
pin three things at once: the backends agree, a killed-and-retried run resumes exactly, and the sweep
rows hold each run's own summary.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import hash_tree

from groklab.runio import read_metrics
from groklab.sweep import expand, parse_spec, run_sweep
from groklab.sweep.locks import run_lock_path
from groklab.sweep.runner import prepare_sweep_dir
from groklab.sweep.worker import KILL_HOOK_ENV
from groklab.train import train

pytestmark = pytest.mark.slow

SPEC = """
preset = "mlp"
seeds = 4
[set]
steps = 60
threads = 1
device = "cpu"
eval_every = 10
checkpoint_every = 10
"task.p" = 23
"model.width" = 64
[grid]
"task.op" = ["x+y", "x-y"]
"""
KILL_STEP = 30
VOLATILE = {"wall_s", "time_s"}


def stable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def metrics_of(sweep: Path, row: dict[str, Any]) -> list[dict[str, Any]]:
    return [stable(r) for r in read_metrics(sweep / row["run_dir"] / "metrics.jsonl")]


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "spec.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
    """run_id -> (summary, metric rows) of each run trained here, uninterrupted."""
    root = tmp_path_factory.mktemp("reference")
    out = {}
    for run in expand(parse_spec(SPEC, "spec.toml")):
        summary = train(run.config, root / run.run_id, progress=False)
        out[run.run_id] = (summary, [stable(r) for r in read_metrics(root / run.run_id / "metrics.jsonl")])
    return out


def run_killing(monkeypatch: pytest.MonkeyPatch, marker: Path, kills: int = 1, **kwargs: Any) -> Any:
    """run_sweep with the test hook that SIGKILLs the worker of each of the first `kills` runs reaching KILL_STEP."""
    monkeypatch.setenv(KILL_HOOK_ENV, f"{KILL_STEP}:{marker}:{kills}")
    return run_sweep(progress=False, **kwargs)


def check_against_reference(sweep: Path, reference: dict[str, Any]) -> list[dict[str, Any]]:
    rows = pq.read_table(sweep / "runs.parquet").to_pylist()
    assert sorted(r["run_id"] for r in rows) == sorted(reference)
    for row in rows:
        summary, metrics = reference[row["run_id"]]
        assert row["status"] == "finished", row.get("error")
        assert row["steps"] == summary["steps"] == 60
        assert row["steps_to_train_acc_99"] == summary["steps_to_train_acc_99"]
        for key in ("train/acc", "val/acc", "test/acc", "train/loss", "val/loss", "test/loss"):
            assert row[key] == summary["final"][key], key
        assert metrics_of(sweep, row) == metrics
        assert row["task.op"] in ("x+y", "x-y") and row["seed"] in (0, 1, 2, 3)
    return rows


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        result = run_killing(mp, root / "killed", kills=2, spec_path=spec_path, out=root / "sweep", workers=2)
    assert (root / "killed.1").exists() and (root / "killed.2").exists(), "the test hook did not fire twice"
    return root / "sweep", result


def test_process_pool_sweep_of_8_runs_survives_two_killed_workers(local_sweep: tuple[Path, Any], reference: dict) -> None:
    """The fault test: 8 runs, two workers SIGKILLed mid-run; all 8 finish, exactly as uninterrupted runs."""
    sweep, result = local_sweep
    assert len(result.runs) == 8
    assert result.retries and sorted(result.retries.values()) == [1, 1]  # two different runs lost their worker once
    killed_dirs = {(sweep.parent / f"killed.{i}").read_text() for i in (1, 2)}
    assert killed_dirs == {str((sweep / "runs" / rid).resolve()) for rid in result.retries}
    check_against_reference(sweep, reference)
    assert (sweep / "spec.toml").read_text() == SPEC


def test_rerun_skips_finished_runs(local_sweep: tuple[Path, Any], spec_path: Path) -> None:
    sweep, _ = local_sweep
    before = hash_tree(sweep / "runs")
    result = run_sweep(spec_path, sweep, workers=2, progress=False)
    assert result.skipped == 8 and not result.retries
    assert hash_tree(sweep / "runs") == before


def test_ray_sweep_matches_process_pool(
    local_sweep: tuple[Path, Any], spec_path: Path, reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real local Ray (2 CPUs): same run ids and results as the pool, and a killed worker is retried by Ray."""
    pytest.importorskip("ray")
    result = run_killing(monkeypatch, tmp_path / "killed", spec_path=spec_path, out=tmp_path / "sweep", workers=2, backend="ray")
    assert (tmp_path / "killed.1").exists(), "the test hook never fired"
    ray_rows = check_against_reference(tmp_path / "sweep", reference)
    pool_rows = pq.read_table(local_sweep[0] / "runs.parquet").to_pylist()
    assert [stable(r) for r in ray_rows] == [stable(r) for r in pool_rows]
    assert len(result.rows) == 8


def test_failed_run_is_reported_and_resumed_by_a_rerun(
    spec_path: Path, reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no retries, the killed run's row says failed while the others finish; a rerun resumes it exactly."""
    sweep = tmp_path / "sweep"
    first = run_killing(monkeypatch, tmp_path / "killed", spec_path=spec_path, out=sweep, workers=2, max_retries=0)
    rows = pq.read_table(sweep / "runs.parquet").to_pylist()
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "worker died" in failed[0]["error"]
    assert sum(r["status"] == "finished" for r in rows) == 7
    assert len(first.rows) == 8
    killed_metrics = read_metrics(sweep / failed[0]["run_dir"] / "metrics.jsonl")
    assert 0 < len(killed_metrics) < len(reference[failed[0]["run_id"]][1])  # it really died mid-run

    second = run_sweep(spec_path, sweep, workers=1, progress=False)
    assert second.skipped == 7
    check_against_reference(sweep, reference)


# ---------------------------------------------------------------------------------------------
# Two sweep processes on one sweep dir.

SHARED_SPEC = """
preset = "mlp"
seeds = 4
[set]
steps = 300
threads = 1
device = "cpu"
eval_every = 20
checkpoint_every = 100
"task.p" = 31
"model.width" = 64
[grid]
"task.op" = ["x+y", "x-y"]
"""


def groklab_sweep(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    """A `groklab sweep` process with SIGINT at its default: a shell's background job (`pytest … &`) ignores SIGINT,
    and its children would inherit that, so a test's Ctrl-C would not reach the sweep."""
    return subprocess.Popen(
        [sys.executable, "-m", "groklab.cli", "sweep", str(spec), "--out", str(out), "--workers", "1", "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_two_sweeps_on_one_dir_never_train_a_run_twice(tmp_path: Path) -> None:
    """Two `groklab sweep` processes started together on one new dir: every run is trained by exactly one of them.

    A run trained by both at once would have every metric row twice in its metrics.jsonl (both append), and a
    run trained twice in turn would have been trained from step 0 by a process that found no summary; so the
    rows must be exactly one per eval step, and each process's "running elsewhere" runs are runs it did not touch.
    """
    spec = tmp_path / "spec.toml"
    spec.write_text(SHARED_SPEC)
    out = tmp_path / "sweep"
    procs = [groklab_sweep(spec, out) for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in results]
    elsewhere = [line for _, err in results for line in err.splitlines() if "running elsewhere" in line]
    assert elsewhere, "the two sweeps never contended for a run: the test did not exercise the locks"

    runs = expand(parse_spec(SHARED_SPEC, "spec.toml"))
    rows = {r["run_id"]: r for r in pq.read_table(out / "runs.parquet").to_pylist()}
    assert sorted(rows) == sorted(r.run_id for r in runs)
    for run in runs:
        run_dir = out / run.run_dir
        steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")]
        assert steps == list(range(0, 301, 20)), f"{run.run_id} was trained more than once: steps {steps}"
        summary = json.loads((run_dir / "summary.json").read_text())
        row = rows[run.run_id]
        assert row["status"] == summary["status"] == "finished"
        assert (row["steps"], row["val/acc"], row["wall_s"]) == (summary["steps"], summary["final"]["val/acc"], summary["wall_s"])
    assert (out / "spec.toml").read_text() == SHARED_SPEC


def test_a_run_held_by_a_live_process_is_skipped_and_a_dead_holders_lock_is_taken_over(tmp_path: Path) -> None:
    """A run whose lock a live process holds is left alone (row pending); once that holder is SIGKILLed, the kernel
    has released its lock and the next sweep trains the run."""
    spec = tmp_path / "spec.toml"
    spec.write_text(SHARED_SPEC.replace("seeds = 4", "seeds = 1").replace('"task.op" = ["x+y", "x-y"]', '"task.op" = ["x+y", "x*y"]'))
    out = tmp_path / "sweep"
    parsed = parse_spec(spec.read_text(), "spec.toml")
    held, free = expand(parsed)
    prepare_sweep_dir(out, parsed, spec.read_text())  # as a sweep running elsewhere would have
    lock = run_lock_path(out, held.run_id)
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from groklab.sweep.locks import try_lock\nfrom pathlib import Path\nimport sys, time\n"
         f"with try_lock(Path({str(lock)!r})) as taken:\n    print(taken, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "True"
        first = run_sweep(spec, out, workers=1, progress=False)
        assert first.elsewhere == {held.run_id: f"{socket.gethostname()} {holder.pid}"}
        rows = {r["run_id"]: r for r in pq.read_table(out / "runs.parquet").to_pylist()}
        assert rows[held.run_id]["status"] == "pending" and rows[free.run_id]["status"] == "finished"
        assert not (out / held.run_dir).exists()  # the skipped run was not touched
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert lock.read_text().split() == [socket.gethostname(), str(holder.pid)]  # the dead holder's lock file stays

    second = run_sweep(spec, out, workers=1, progress=False)
    assert not second.elsewhere and second.skipped == 1
    assert [r["status"] for r in pq.read_table(out / "runs.parquet").to_pylist()] == ["finished", "finished"]


LONG_SPEC = """
preset = "mlp"
seeds = 2
[set]
steps = 100000
threads = 1
eval_every = 100
checkpoint_every = 500
"task.p" = 23
"model.width" = 64
"""


@pytest.mark.parametrize(("backend", "sig"), [("local", signal.SIGINT), ("ray", signal.SIGINT), ("local", signal.SIGTERM)])
def test_a_signal_sent_to_the_sweep_process_alone_stops_its_runs_and_records_them(tmp_path: Path, backend: str, sig: int) -> None:
    """`kill -INT` or `kill -TERM` of the sweep's own pid (not its process group, as a terminal's Ctrl-C would; Ray's
    workers are outside that group anyway): the training run checkpoints and is recorded `interrupted` in
    runs.parquet, the queued run never starts, and no worker trains on (a SIGTERM once killed the driver alone and
    left its worker training, orphaned)."""
    if backend == "ray":
        pytest.importorskip("ray")
    spec = tmp_path / "spec.toml"
    spec.write_text(LONG_SPEC)
    out = tmp_path / "sweep"
    proc = groklab_sweep(spec, out, "--backend", backend)  # one worker: the second run waits in the queue
    runs = expand(parse_spec(LONG_SPEC, "spec.toml"))
    first, queued = (out / r.run_dir for r in runs)
    try:
        while not any(r["step"] >= 600 for r in read_metrics(first / "metrics.jsonl")):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    summary = json.loads((first / "summary.json").read_text())
    rows = {r["run_id"]: r for r in pq.read_table(out / "runs.parquet").to_pylist()}
    assert summary["status"] == rows[runs[0].run_id]["status"] == "interrupted"
    assert not (queued / "metrics.jsonl").exists()
    written = (first / "metrics.jsonl").read_bytes()
    time.sleep(2)
    assert (first / "metrics.jsonl").read_bytes() == written  # nothing trains on after the sweep has stopped
    steps = [r["step"] for r in read_metrics(first / "metrics.jsonl")]
    assert steps == list(range(0, steps[-1] + 1, 100)) and steps[-1] < 100000
