"""Seed packing in sweeps (`--pack N`) and the dry-run's cost estimate.

Fast tests pin the planning (which runs share a pack, the GPU default, refusals), the worker's handling of a pack whose
members are held elsewhere or already ended, and the estimate's arithmetic and cache. The slow tests run whole sweeps:
packed and unpacked give the same run ids and, on every logged metric, the same numbers within the ensemble's float
tolerance (TOL); a packed sweep whose worker is SIGKILLed mid-way resumes every member exactly (bit for bit against an
uninterrupted ensemble); Ray gives what the process pool gives; a member that diverges is marked alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import hash_tree
from test_sweep_backends import SPEC, metrics_of, stable

from groklab.cli import main
from groklab.errors import UserError
from groklab.runio import read_metrics
from groklab.sweep import cost as cost_module
from groklab.sweep import expand, parse_spec, run_sweep
from groklab.sweep.locks import try_lock
from groklab.sweep.packs import GPU_PACK, plan_packs
from groklab.sweep.worker import KILL_HOOK_ENV, Member, run_attempt
from groklab.train import train_pack

TOL = {"rel": 1e-3, "abs": 1e-5}
"""How close a packed run's logged metrics are to its unpacked run's (vmapped vs plain float32 kernels, 60 steps of
SPEC: 2 ops x 4 seeds of a small MLP). Not the same kernels: an unpacked run's linears run on oneDNN, a pack's under
vmap on ATen's matmul (models/linear.py), whose roundings differ; the largest difference measured, 4e-4 relative
(train/loss at step 60), is under a tenth of a percent (with one library on both sides it was under 1e-4)."""


def spec_file(tmp_path: Path, text: str = SPEC) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text)
    return path


def runs_of(sweep: Path) -> dict[str, dict[str, Any]]:
    return {r["run_id"]: r for r in pq.read_table(sweep / "runs.parquet").to_pylist()}


def close(mine: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """The same evaluation steps, the same keys both ways, every value within TOL."""
    assert [m["step"] for m in mine] == [t["step"] for t in theirs]
    for m, t in zip(mine, theirs, strict=True):
        assert m.keys() == t.keys()
        assert m == pytest.approx(t, **TOL), m["step"]


# ---------------------------------------------------------------------------------------------
# Planning.


def test_runs_that_differ_only_in_seed_share_packs_of_at_most_n() -> None:
    runs = expand(parse_spec(SPEC.replace("seeds = 4", "seeds = 5"), "s.toml"))
    packs = plan_packs(runs, 2, gpu_here=False)
    assert [len(p) for p in packs] == [2, 2, 1, 2, 2, 1]
    for pack in packs:
        assert len({r.config.task.op for r in pack}) == 1
    assert [r.run_id for p in packs for r in p] == [r.run_id for r in runs]  # planned order kept
    assert [len(p) for p in plan_packs(runs, None, gpu_here=False)] == [1] * 10  # CPU: off unless asked


def test_packing_is_on_by_default_where_runs_train_on_a_gpu() -> None:
    runs = expand(parse_spec(SPEC.replace('device = "cpu"', 'device = "auto"').replace("seeds = 4", "seeds = 70"), "s.toml"))
    assert [len(p) for p in plan_packs(runs, None, gpu_here=True)] == [GPU_PACK, 70 - GPU_PACK] * 2
    assert [len(p) for p in plan_packs(runs, 1, gpu_here=True)] == [1] * 140  # --pack 1: off
    cpu = [dataclasses.replace(r, config=dataclasses.replace(r.config, device="cpu")) for r in runs]
    assert {len(p) for p in plan_packs(cpu, None, gpu_here=True)} == {1}  # device = "cpu" stays unpacked


def test_a_pack_an_ensemble_cannot_reproduce_is_refused_only_when_asked_for() -> None:
    runs = expand(parse_spec(SPEC.replace("[grid]", '"model.dropout" = 0.1\n[grid]'), "s.toml"))
    with pytest.raises(UserError, match=r"^--pack 4 is not valid for runs with model.dropout=0.1: dropout masks .*; drop --pack"):
        plan_packs(runs, 4, gpu_here=False)
    assert {len(p) for p in plan_packs(runs, None, gpu_here=True)} == {1}  # the GPU default trains them one by one


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--pack", "0"], "error: --pack '0' is not valid: expected an integer >= 1 (1 trains every run on its own)"),
        (["--pack", "2", "--dropout"], "error: --pack 2 is not valid for runs with model.dropout=0.1: "),
    ],
)
def test_bad_pack_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], expected: str
) -> None:
    text = SPEC.replace("[grid]", '"model.dropout" = 0.1\n[grid]') if "--dropout" in extra else SPEC
    spec = spec_file(tmp_path, text)
    args = [a for a in extra if a != "--dropout"]
    for command in (["sweep", str(spec), "--out", str(tmp_path / "out")], ["recipe", "power-fig1", "--out", str(tmp_path / "out")]):
        if command[0] == "recipe" and "--dropout" in extra:
            continue
        assert main([*command, *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith(expected) and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]


# ---------------------------------------------------------------------------------------------
# The worker with a pack.


def members(tmp_path: Path, text: str = SPEC) -> list[Member]:
    runs = expand(parse_spec(text.replace("steps = 60", "steps = 20"), "s.toml"))[:2]  # seeds 0 and 1 of x+y
    return [Member(r.run_id, r.config, str(tmp_path / r.run_id), str(tmp_path / "locks" / f"{r.run_id}.lock")) for r in runs]


def test_a_member_held_elsewhere_is_left_alone_and_the_rest_train(tmp_path: Path) -> None:
    free, held = members(tmp_path)
    with try_lock(Path(held.lock)) as taken:  # a second open file: flock conflicts as with another process
        assert taken
        results = run_attempt((free, held), threads=1)
    assert [(rid, status) for rid, status, _ in results] == [(free.run_id, "ok"), (held.run_id, "busy")]
    assert results[0][2]["status"] == "finished" and results[1][2] == f"{socket.gethostname()} {os.getpid()}"
    assert not Path(held.run_dir).exists()


def test_a_retried_pack_reports_a_member_that_already_ended_as_it_ended(tmp_path: Path) -> None:
    done, other = members(tmp_path)
    run_attempt((done,), threads=1)
    summary = json.loads((Path(done.run_dir) / "summary.json").read_text())
    summary["status"] = "diverged"  # as a member that diverged before its pack's worker died
    (Path(done.run_dir) / "summary.json").write_text(json.dumps(summary))
    before = hash_tree(Path(done.run_dir))
    results = run_attempt((done, other), threads=1)
    assert [(status, payload["status"]) for _, status, payload in results] == [("ok", "diverged"), ("ok", "finished")]
    assert hash_tree(Path(done.run_dir)) == before


# ---------------------------------------------------------------------------------------------
# The dry-run's estimate.


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "cache" / "groklab" / "calibration.json"


def test_dry_run_estimate_is_steps_times_the_cached_step_time_plus_evaluations(
    tmp_path: Path, cache_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a calibration in the cache nothing is measured; the estimate is (steps x step + evals x eval) per task."""
    runs = expand(parse_spec(SPEC, "s.toml"))
    measured: list[int] = []
    monkeypatch.setattr(cost_module, "calibrate", lambda config, n, threads: measured.append(n) or (0.002 * n, 0.01))
    first = cost_module.estimate(runs, pack=4, workers=2, say=lambda m: None)
    assert measured == [4] and cache_home.is_file()  # one kind of task (the two ops are one table size), measured once
    [line] = first.lines
    assert (line.members, line.tasks, line.runs, line.threads, line.device) == (4, 2, 8, 1, "cpu")
    assert line.seconds == pytest.approx(2 * (60 * 0.008 + 7 * 0.01 * 4))  # evaluations at steps 0, 10, ..., 60
    assert first.hours(on_cpu=True) == pytest.approx(line.seconds / 3600) and first.wall_s == pytest.approx(line.seconds / 2)

    assert main(["sweep", str(spec_file(tmp_path)), "--dry-run", "--pack", "4", "--workers", "2"]) == 0
    out, err = capsys.readouterr()
    assert measured == [4] and "calibrating" not in err  # the cache answered
    assert f"estimate: {line.seconds / 3600:.3g} CPU-hours" in " ".join(out.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "spec.toml"]  # the dry run wrote only its cache


def test_dry_run_calibrates_once_per_machine_into_the_user_cache(
    tmp_path: Path, cache_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cost_module, "CALIBRATION_S", 0.05)
    spec = spec_file(tmp_path)
    assert main(["sweep", str(spec), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    assert capsys.readouterr().err.count("calibrating mlp, 23-element table on cpu") == 1
    entries = json.loads(cache_home.read_text())
    assert [e["what"] for e in entries.values()] == ["mlp, 23-element table"] and all(e["step_s"] > 0 for e in entries.values())
    assert main(["sweep", str(spec), "--dry-run"]) == 0
    assert "calibrating" not in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_multithreaded_calibration_on_a_busy_machine_is_used_once_and_not_cached(
    tmp_path: Path, cache_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Threads that wait for a busy core spin, so CPU time inflates (measured 9-22x): such a line says so and is not
    cached; one thread per run, as sweeps use by default, is measured and cached as on an idle machine."""
    monkeypatch.setattr(cost_module, "CALIBRATION_S", 0.05)
    monkeypatch.setattr(cost_module.os, "getloadavg", lambda: (float(os.cpu_count() or 1) + 1, 0.0, 0.0))
    two_threads = spec_file(tmp_path, SPEC.replace("threads = 1", "threads = 2"))
    assert main(["sweep", str(two_threads), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert "this machine is busy" in err and "calibrating" in err and "CPU-hours" in out
    assert not cache_home.exists()
    assert main(["sweep", str(spec_file(tmp_path)), "--dry-run"]) == 0  # SPEC: threads = 1
    assert "busy" not in capsys.readouterr().err
    assert [e["what"] for e in json.loads(cache_home.read_text()).values()] == ["mlp, 23-element table"]


def test_recipe_dry_run_prints_every_part_and_the_total(
    cache_home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cost_module, "calibrate", lambda config, n, threads: (0.001, 0.001))
    assert main(["recipe", "omnigrok-digits", "--scale", "paper", "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "omnigrok-digits (paper) part alpha:" in out and "part lu:" in out and "CPU-hours" in out
    # Its lu part holds the weight norm fixed, which an ensemble cannot: --pack is refused in one line.
    assert main(["recipe", "omnigrok-digits", "--scale", "paper", "--dry-run", "--pack", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: --pack 3 is not valid for runs with optim.norm_constraint=")


# ---------------------------------------------------------------------------------------------
# Whole sweeps (slow).


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    run_sweep(spec_file(root), root / "sweep", workers=2, progress=False)
    return root / "sweep"


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """--pack 4 on the process pool, the first pack's worker SIGKILLed once a member logs step 30."""
    root = tmp_path_factory.mktemp("packed")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KILL_HOOK_ENV, f"30:{root / 'killed'}:1")
        result = run_sweep(spec_file(root), root / "sweep", workers=2, progress=False, pack=4)
    return root / "sweep", result


@pytest.mark.slow
def test_a_killed_packed_worker_resumes_every_member_exactly(packed: tuple[Path, Any], tmp_path: Path) -> None:
    sweep, result = packed
    killed = (sweep.parent / "killed.1").read_text().splitlines()
    assert len(killed) == 4 and set(result.retries) == {Path(d).name for d in killed}  # the whole pack died and was retried
    rows = runs_of(sweep)
    assert all(r["status"] == "finished" for r in rows.values())
    for run in expand(parse_spec(SPEC, "s.toml")):
        assert (sweep / run.run_dir / "config.json").is_file() and (sweep / "locks" / f"{run.run_id}.lock").is_file()
    # Bit for bit as the same packs trained here without interruption.
    for pack in plan_packs(expand(parse_spec(SPEC, "s.toml")), 4, gpu_here=False):
        train_pack([r.config for r in pack], [tmp_path / r.run_id for r in pack], progress=False)
        for r in pack:
            assert metrics_of(sweep, rows[r.run_id]) == [stable(m) for m in read_metrics(tmp_path / r.run_id / "metrics.jsonl")]


@pytest.mark.slow
def test_packed_and_unpacked_sweeps_agree_on_every_logged_metric(packed: tuple[Path, Any], unpacked: Path) -> None:
    """Same run ids, same runs.parquet schema and non-float cells, every metric row's keys and values within TOL."""
    sweep, _ = packed
    assert pq.read_schema(sweep / "runs.parquet") == pq.read_schema(unpacked / "runs.parquet")
    a, b = runs_of(sweep), runs_of(unpacked)
    assert sorted(a) == sorted(b)
    for rid, row in a.items():
        other = b[rid]
        for key, value in stable(row).items():
            assert value == (pytest.approx(other[key], **TOL) if isinstance(value, float) else other[key]), (rid, key)
        close(metrics_of(sweep, row), metrics_of(unpacked, other))


@pytest.mark.slow
def test_a_packed_ray_sweep_matches_the_packed_process_pool(
    packed: tuple[Path, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real local Ray: the same packs, the pack's worker killed and retried by Ray, the same numbers bit for bit."""
    pytest.importorskip("ray")
    monkeypatch.setenv(KILL_HOOK_ENV, f"30:{tmp_path / 'killed'}:1")
    run_sweep(spec_file(tmp_path), tmp_path / "sweep", workers=2, progress=False, pack=4, backend="ray")
    assert len((tmp_path / "killed.1").read_text().splitlines()) == 4
    ray_rows, pool_rows = runs_of(tmp_path / "sweep"), runs_of(packed[0])
    assert {k: stable(v) for k, v in ray_rows.items()} == {k: stable(v) for k, v in pool_rows.items()}
    for rid, row in ray_rows.items():
        assert metrics_of(tmp_path / "sweep", row) == metrics_of(packed[0], pool_rows[rid])


DIVERGES = """
preset = "mlp"
seeds = [0, 2]
[set]
steps = 40
threads = 1
device = "cpu"
eval_every = 10
checkpoint_every = 10
"task.p" = 11
"model.width" = 32
"model.depth" = 1
"model.d_model" = 8
"optim.name" = "sgd"
"optim.lr" = 3.0
"optim.weight_decay" = 0.0
"optim.batch_size" = 16
"""
"""SGD at the edge of stability: seed 0 diverges (non-finite loss) within 40 steps, seed 2 does not."""


@pytest.mark.slow
def test_a_diverging_member_is_marked_alone(tmp_path: Path) -> None:
    run_sweep(spec_file(tmp_path, DIVERGES), tmp_path / "packed", workers=1, progress=False, pack=2)
    run_sweep(spec_file(tmp_path, DIVERGES), tmp_path / "single", workers=1, progress=False)
    packed, single = runs_of(tmp_path / "packed"), runs_of(tmp_path / "single")
    assert sorted((r["seed"], r["status"]) for r in packed.values()) == [(0, "diverged"), (2, "finished")]
    for rid, row in packed.items():
        assert row["status"] == single[rid]["status"] and row["steps"] == single[rid]["steps"]
    finished = next(r for r in packed.values() if r["status"] == "finished")
    close(metrics_of(tmp_path / "packed", finished), metrics_of(tmp_path / "single", single[finished["run_id"]]))


def test_an_address_where_no_cluster_answers_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    with socket.socket() as free:  # a port nothing listens on once closed
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    spec = spec_file(tmp_path)
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--backend", "ray", "--address", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --address 127.0.0.1:{port}: no Ray cluster answers there (") and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.toml"]
