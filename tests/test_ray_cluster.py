"""A real multi-node Ray cluster on this machine, started with Ray's own means (ray.cluster_utils.Cluster: a head and
worker nodes, each its own raylet and worker processes, as `ray start` makes them): `groklab sweep --backend ray
--address ...` loses the node its runs train on mid-way, and every run finishes, resumed from its checkpoint (the rows
logged before the loss are kept as they were written, not written again), with the numbers of the local backend; a
sweep dir that a node cannot see (a node in its own mount namespace, where the dir is hidden) is refused in one line;
given only `--address`, a sweep takes its workers and threads from the cluster, not from this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from itertools import pairwise, takewhile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from groklab.runio import read_metrics
from groklab.sweep import run_sweep
from groklab.sweep.locks import try_lock

pytestmark = pytest.mark.slow
pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

SPEC = """
preset = "mlp"
seeds = 2
[set]
steps = 1500
threads = 1
device = "cpu"
eval_every = 50
checkpoint_every = 100
"task.p" = 23
"model.width" = 64
[grid]
"task.op" = ["x+y", "x-y"]
"""
MID = 300
"""The node is removed once a run has logged this step (of 1,500): mid-way, past a few checkpoints."""


@pytest.fixture
def cluster() -> Any:
    """A head node that runs no tasks (0 CPUs), as on a cluster whose head only schedules."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    yield cluster
    cluster.shutdown()


def sweep_command(spec: Path, out: Path, address: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "groklab.cli", "sweep", str(spec), "--out", str(out), "--backend", "ray", "--address", address, "--quiet", *extra]  # fmt: skip


def untimed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in (run_dir / "checkpoints").glob("state-*.pt"))


def test_a_sweep_on_two_nodes_survives_losing_the_node_its_runs_train_on(cluster: Any, tmp_path: Path) -> None:
    node = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sweep"
    t0 = time.monotonic()
    proc = subprocess.Popen(
        sweep_command(spec, out, cluster.address, "--pack", "2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        while not any(rows and rows[-1]["step"] >= MID for rows in (read_metrics(p / "metrics.jsonl") for p in (out / "runs").glob("*"))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() - t0 < 300, "no run reached the removal step"
            time.sleep(0.02)
        cluster.remove_node(node, allow_graceful=False)
        # Once the lost node's workers are gone their locks are free: what they wrote is what a resume finds.
        for lock in (out / "locks").glob("*.lock"):
            if lock.name != "runs.parquet.lock":
                while True:
                    with try_lock(lock) as taken:
                        if taken:
                            break
                    assert time.monotonic() - t0 < 300, f"{lock} still held after its node was removed"
                    time.sleep(0.1)
        lost = {p.name: (read_metrics(p / "metrics.jsonl"), checkpoint_steps(p)) for p in (out / "runs").glob("*")}
        cluster.add_node(num_cpus=2)  # somewhere for the lost tasks to go: Ray keeps them pending until then
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    print(f"cluster sweep with a lost node: {time.monotonic() - t0:.1f} s")

    rows = {r["run_id"]: r for r in pq.read_table(out / "runs.parquet").to_pylist()}
    assert len(rows) == 4 and all(r["status"] == "finished" and r["steps"] == 1500 for r in rows.values())
    midway = [rid for rid, (metrics, _) in lost.items() if metrics and 0 < metrics[-1]["step"] < 1500]
    assert midway, "no run was mid-way when its node was lost"
    for rid in midway:
        before, checkpoints = lost[rid]
        after = read_metrics(out / "runs" / rid / "metrics.jsonl")
        kept = len(list(takewhile(lambda rows: rows[0] == rows[1], zip(after, before, strict=False))))  # equal from the start
        # The rows up to the resumed checkpoint were kept as written (time_s included), and it was one of this run's
        # checkpoints past the start: resuming is not restarting. Not always its newest: a pack resumes from the newest
        # step every member holds, and the node may have gone between two members' checkpoints.
        resumed_from = before[kept - 1]["step"] if kept else 0
        assert resumed_from in checkpoints and resumed_from >= 100, (resumed_from, checkpoints)
        assert [r["step"] for r in after] == list(range(0, 1501, 50))  # and the rest written once each

    # The local backend gives the same numbers, bit for bit (both packs, both resumed and uninterrupted).
    local = tmp_path / "local"
    run_sweep(spec, local, workers=2, progress=False, pack=2)
    for row in rows.values():
        assert untimed(read_metrics(out / row["run_dir"] / "metrics.jsonl")) == untimed(
            read_metrics(local / row["run_dir"] / "metrics.jsonl")
        )


def test_a_sweep_dir_a_node_cannot_see_is_refused_in_one_line(cluster: Any, tmp_path: Path) -> None:
    """A second worker node started with `ray start` in its own mount namespace, where the sweep dir's parent is an
    empty tmpfs: the probe the driver writes there is not visible to that node."""
    import ray

    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs unshare -m (a private mount namespace) to hide a directory from one node")
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    shared = tmp_path / "shared"
    shared.mkdir()
    ray_cli = str(Path(sys.executable).with_name("ray"))
    blind = subprocess.Popen(
        [unshare, "-m", "sh", "-c", f'mount -t tmpfs tmpfs "{shared}" && exec "{ray_cli}" start --address={cluster.address} --num-cpus=1 --block'],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        try:
            t0 = time.monotonic()
            while sum(n["Alive"] for n in ray.nodes()) < 3:
                assert blind.poll() is None and time.monotonic() - t0 < 120, "the second worker node never joined"
                time.sleep(0.2)
        finally:
            ray.shutdown()
        spec = tmp_path / "spec.toml"
        spec.write_text(SPEC)
        done = subprocess.run(sweep_command(spec, shared / "sweep", cluster.address), capture_output=True, text=True, timeout=300)
    finally:
        os.killpg(blind.pid, signal.SIGKILL)
        blind.wait()
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: --out {shared / 'sweep'} is not visible on Ray node(s) ") and done.stderr.count("\n") == 1
    assert "every node mounts at the same path" in done.stderr
    assert not any(shared.iterdir())  # nothing written: no sweep dir, no probe left


UNTHREADED = """
preset = "mlp"
seeds = 3
[set]
steps = 3000
device = "cpu"
eval_every = 500
"task.p" = 23
"model.width" = 64
"""
"""Three runs that set no `threads`: the sweep decides them."""


def spans(out: Path) -> list[tuple[float, float]]:
    """Each run's (start, end) on the wall clock: its config.json is written as it starts, its summary.json as it ends."""
    return sorted(((p / "config.json").stat().st_mtime, (p / "summary.json").stat().st_mtime) for p in (out / "runs").glob("*"))


def test_a_sweep_given_only_an_address_takes_its_workers_and_threads_from_the_cluster(cluster: Any, tmp_path: Path) -> None:
    """Without --workers, as many runs are in flight as the cluster has CPUs (3 here, more than this machine's default of
    a worker per core), each on one torch thread since its task reserves one CPU; --workers 1 runs them one at a time,
    still on one thread (not on the cores this machine would give a single local worker)."""
    cluster.add_node(num_cpus=3)
    cluster.wait_for_nodes()
    spec = tmp_path / "spec.toml"
    spec.write_text(UNTHREADED)
    for out, extra in ((tmp_path / "all", ()), (tmp_path / "one", ("--workers", "1"))):
        done = subprocess.run(sweep_command(spec, out, cluster.address, *extra), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        summaries = [json.loads(p.read_text()) for p in (out / "runs").glob("*/summary.json")]
        assert len(summaries) == 3 and all(s["status"] == "finished" for s in summaries)
        assert [(s["device"], s["threads"]) for s in summaries] == [("cpu", 1)] * 3
    together, alone = spans(tmp_path / "all"), spans(tmp_path / "one")
    assert max(start for start, _ in together) < min(end for _, end in together), f"not all three in flight at once: {together}"
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(alone)), f"--workers 1 overlapped runs: {alone}"
