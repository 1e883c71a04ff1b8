"""End-to-end sweeps on the process pool and on a real local Ray: same results, killed workers retried, resume.

Each run is compared with a reference trained in this process without any interruption, so the tests
pin three things at once: the backends agree, a killed-and-retried run resumes exactly, and the sweep
rows hold each run's own summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import hash_tree

from groklab.runio import read_metrics
from groklab.sweep import expand, parse_spec, run_sweep
from groklab.sweep.worker import KILL_HOOK_ENV
from groklab.train import train

pytestmark = pytest.mark.slow

SPEC = """
preset = "mlp"
seeds = 2
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


def run_killing_once(monkeypatch: pytest.MonkeyPatch, marker: Path, **kwargs: Any) -> Any:
    """run_sweep with the test hook that SIGKILLs the first worker reaching KILL_STEP (once)."""
    monkeypatch.setenv(KILL_HOOK_ENV, f"{KILL_STEP}:{marker}")
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
        assert row["task.op"] in ("x+y", "x-y") and row["seed"] in (0, 1)
    return rows


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory: pytest.TempPathFactory, spec_path: Path) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        result = run_killing_once(mp, root / "killed", spec_path=spec_path, out=root / "sweep", workers=2)
    assert (root / "killed").exists(), "the test hook never fired"
    return root / "sweep", result


def test_process_pool_sweep_retries_a_killed_worker_and_matches_reference(local_sweep: tuple[Path, Any], reference: dict) -> None:
    sweep, result = local_sweep
    assert sum(result.retries.values()) == 1  # exactly one worker was SIGKILLed, and its run was retried
    check_against_reference(sweep, reference)
    assert (sweep / "spec.toml").read_text() == SPEC


def test_rerun_skips_finished_runs(local_sweep: tuple[Path, Any], spec_path: Path) -> None:
    sweep, _ = local_sweep
    before = hash_tree(sweep / "runs")
    result = run_sweep(spec_path, sweep, workers=2, progress=False)
    assert result.skipped == 4 and not result.retries
    assert hash_tree(sweep / "runs") == before


def test_ray_sweep_matches_process_pool(
    local_sweep: tuple[Path, Any], spec_path: Path, reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real local Ray (2 CPUs): same run ids and results as the pool, and a killed worker is retried by Ray."""
    pytest.importorskip("ray")
    result = run_killing_once(monkeypatch, tmp_path / "killed", spec_path=spec_path, out=tmp_path / "sweep", workers=2, backend="ray")
    assert (tmp_path / "killed").exists(), "the test hook never fired"
    ray_rows = check_against_reference(tmp_path / "sweep", reference)
    pool_rows = pq.read_table(local_sweep[0] / "runs.parquet").to_pylist()
    assert [stable(r) for r in ray_rows] == [stable(r) for r in pool_rows]
    assert len(result.rows) == 4


def test_failed_run_is_reported_and_resumed_by_a_rerun(
    spec_path: Path, reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no retries, the killed run's row says failed while the others finish; a rerun resumes it exactly."""
    sweep = tmp_path / "sweep"
    first = run_killing_once(monkeypatch, tmp_path / "killed", spec_path=spec_path, out=sweep, workers=2, max_retries=0)
    rows = pq.read_table(sweep / "runs.parquet").to_pylist()
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and "worker died" in failed[0]["error"]
    assert sum(r["status"] == "finished" for r in rows) == 3
    assert len(first.rows) == 4
    killed_metrics = read_metrics(sweep / failed[0]["run_dir"] / "metrics.jsonl")
    assert 0 < len(killed_metrics) < len(reference[failed[0]["run_id"]][1])  # it really died mid-run

    second = run_sweep(spec_path, sweep, workers=1, progress=False)
    assert second.skipped == 3
    check_against_reference(sweep, reference)
