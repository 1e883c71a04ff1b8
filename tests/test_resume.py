"""Nothing lost: a run killed at any moment resumes bitwise identically; signals, divergence, corrupt checkpoints."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from groklab.runio import checkpoint_path, checkpoint_steps, read_metrics

MLP_ARGS = ["--preset", "mlp", "--steps", "400", "--eval-every", "20", "--checkpoint-every", "30", "--threads", "1", "--stop-patience", "0"]
# A transformer with dropout exercises the forward pass's RNG state.
DROPOUT_ARGS = [
    *("--preset", "power-fig1", "--task.op", "x+y", "--task.p", "23", "--model.d-model", "32", "--model.d-mlp", "64"),
    *("--model.dropout", "0.1", "--steps", "240", "--eval-spacing", "linear", "--eval-every", "20"),
    *("--checkpoint-every", "25", "--threads", "1"),
]


def groklab(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groklab.cli", *args], capture_output=True, text=True, **kw)


def rows_without_time(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "time_s"} for row in read_metrics(run / "metrics.jsonl")]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    step = checkpoint_steps(run / "checkpoints", "model")[-1]
    return torch.load(checkpoint_path(run / "checkpoints", "model", step))


def kill_when(proc: subprocess.Popen, run: Path, min_rows: int) -> None:
    """SIGKILL the training process once its metrics file has at least `min_rows` rows (or it has ended)."""
    while proc.poll() is None:
        path = run / "metrics.jsonl"
        if path.exists() and len(path.read_text().splitlines()) >= min_rows:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("args", [MLP_ARGS, DROPOUT_ARGS], ids=["mlp", "transformer-dropout"])
def test_kill9_three_times_then_resume_is_bitwise_identical(tmp_path: Path, args: list[str]) -> None:
    reference = tmp_path / "reference"
    assert groklab("train", "--out", str(reference), "--quiet", *args).returncode == 0
    n_rows = len(read_metrics(reference / "metrics.jsonl"))

    run = tmp_path / "killed"
    rng = random.Random(1234)
    kill_rows = sorted(rng.sample(range(2, n_rows - 1), 3))
    command = [sys.executable, "-m", "groklab.cli", "train", "--out", str(run), "--quiet", *args]
    for i, rows in enumerate(kill_rows):
        proc = subprocess.Popen(command if i == 0 else [sys.executable, "-m", "groklab.cli", "resume", str(run), "--quiet"])
        kill_when(proc, run, rows)
        assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
        assert not (run / "summary.json").exists()
    assert groklab("resume", str(run), "--quiet").returncode == 0

    assert rows_without_time(run) == rows_without_time(reference)
    ours, theirs = final_weights(run), final_weights(reference)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert_same_outputs(run, reference)


def untimed(table: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("time_s", "wall_s")} for row in table]


def assert_same(a: object, b: object, where: str = "state") -> None:
    """Equal nested checkpoint contents: tensors and arrays bitwise, containers key by key, the rest by ==."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_outputs(run: Path, reference: Path) -> None:
    """summary.json (but wall time), metrics.parquet (but time_s) and the final resumable state (model, optimizer,
    schedule, sampler, torch RNG) are those of the uninterrupted run."""
    summary, expected = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
    assert summary["status"] == "finished" and untimed([summary]) == untimed([expected])
    assert untimed(pq.read_table(run / "metrics.parquet").to_pylist()) == untimed(pq.read_table(reference / "metrics.parquet").to_pylist())
    ckpts = [r / "checkpoints" for r in (run, reference)]
    assert checkpoint_steps(ckpts[0], "state")[-1] == checkpoint_steps(ckpts[1], "state")[-1]
    ours, theirs = (torch.load(checkpoint_path(c, "state", checkpoint_steps(c, "state")[-1]), weights_only=False) for c in ckpts)
    for state in (ours, theirs):
        # numpy's and Python's global generators are not seeded from the config (training draws nothing from them),
        # so two processes hold different ones; what a resume must restore of them is pinned by the rows above.
        del state["elapsed"], state["rng"]["numpy"], state["rng"]["python"]
    assert_same(ours, theirs)


@pytest.mark.slow
def test_sigterm_checkpoints_and_marks_interrupted(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "groklab.cli", "train", "--out", str(run), "--quiet", *MLP_ARGS, "--steps", "100000"])
    while not (run / "metrics.jsonl").exists() or len((run / "metrics.jsonl").read_text().splitlines()) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    # The checkpoint is at the very step the run stopped at: nothing is lost.
    assert checkpoint_steps(run / "checkpoints", "state")[-1] == summary["steps"] > 0


def test_divergence_stops_before_the_update_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = groklab(
        "train",
        "--out",
        str(run),
        "--quiet",
        "--steps",
        "50",
        "--threads",
        "1",
        "--optim.name",
        "sgd",
        "--optim.lr",
        "1e30",
        "--optim.warmup-steps",
        "0",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged"
    step = summary["diverged_at_step"]
    assert 1 <= step <= 50 and summary["steps"] == step - 1
    state = torch.load(checkpoint_path(run / "checkpoints", "state", summary["steps"]), weights_only=False)
    assert all(torch.isfinite(p).all() for p in state["model"].values())


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--steps", "120", "--eval-every", "20", "--checkpoint-every", "40", "--threads", "1", "--stop-patience", "0"]
    assert groklab("train", "--out", str(run), "--quiet", *args).returncode == 0
    reference_rows = rows_without_time(run)
    # Pretend the run was killed: drop the summary, and flip a byte in the newest resumable checkpoint.
    (run / "summary.json").unlink()
    newest = checkpoint_path(run / "checkpoints", "state", checkpoint_steps(run / "checkpoints", "state")[-1])
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    result = groklab("resume", str(run), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "corrupt" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert rows_without_time(run) == reference_rows


def test_torn_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--steps", "60", "--eval-every", "20", "--checkpoint-every", "20", "--threads", "1", "--stop-patience", "0"]
    assert groklab("train", "--out", str(run), "--quiet", *args).returncode == 0
    reference_rows = rows_without_time(run)
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 80, "train/lo')  # what a kill -9 in the middle of a write leaves
    assert groklab("resume", str(run), "--quiet", "--steps", "100").returncode == 0
    # The file itself is whole again (not only its reader's view): the rows trained on follow the kept ones directly.
    raw = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in raw] == [0, 20, 40, 60, 80, 100]
    assert rows_without_time(run)[:4] == reference_rows


def test_resume_of_a_run_with_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert groklab("train", "--out", str(run), "--quiet", "--steps", "5", "--threads", "1").returncode == 0
    raw = json.loads((run / "config.json").read_text())
    raw["schema_version"] = 99
    (run / "config.json").write_text(json.dumps(raw))
    result = groklab("resume", str(run))
    assert result.returncode == 2
    assert "schema_version=99" in result.stderr and "Traceback" not in result.stderr


def test_resume_steps_trains_a_finished_run_on_as_if_its_budget_had_been_larger(tmp_path: Path) -> None:
    """A transformer with dropout (its RNG state matters) run to 100 steps, then trained on to 240 with the command."""
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert groklab("train", "--out", str(reference), "--quiet", *DROPOUT_ARGS).returncode == 0
    assert groklab("train", "--out", str(run), "--quiet", *DROPOUT_ARGS, "--steps", "100").returncode == 0
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"

    result = groklab("resume", str(run), "--steps", "240", "--quiet")
    assert result.returncode == 0, result.stderr
    raw = json.loads((run / "config.json").read_text())
    assert raw["extended_from"] == [100]
    assert raw["config"] == json.loads((reference / "config.json").read_text())["config"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 240
    assert rows_without_time(run) == rows_without_time(reference)
    assert len(pq.read_table(run / "metrics.parquet")) == len(rows_without_time(run))
    for name, tensor in final_weights(reference).items():
        assert torch.equal(final_weights(run)[name], tensor), name


def mlp_config(**changes: object):
    import groklab
    from groklab.config import apply_overrides

    return apply_overrides(groklab.presets["mlp"], {"threads": 1, "stop_patience": 0, **changes})


def test_a_run_trained_on_off_its_log_grid_keeps_one_extra_evaluation(tmp_path: Path) -> None:
    """Log-spaced evaluations: 150 is not on the grid, so the run extended from 150 to 300 steps holds the row at 150
    beside the reference's rows, and the same weights (an evaluation changes nothing)."""
    import groklab

    groklab.train(mlp_config(steps=300, eval_spacing="log"), tmp_path / "reference", progress=False)
    groklab.train(mlp_config(steps=150, eval_spacing="log"), tmp_path / "run", progress=False)
    groklab.resume(tmp_path / "run", steps=300, progress=False)
    ours, theirs = rows_without_time(tmp_path / "run"), rows_without_time(tmp_path / "reference")
    assert 150 not in [r["step"] for r in theirs]
    assert [r for r in ours if r["step"] != 150] == theirs and len(ours) == len(theirs) + 1
    for name, tensor in final_weights(tmp_path / "reference").items():
        assert torch.equal(final_weights(tmp_path / "run")[name], tensor), name


def test_an_extension_cut_short_after_its_config_was_written_still_trains_on(tmp_path: Path) -> None:
    """`extend` writes config.json, then drops summary.json: a crash between the two leaves a 'finished' summary short
    of the budget, which a plain resume trains on from."""
    import groklab
    from groklab.runio import RunDir

    groklab.train(mlp_config(steps=80, eval_every=10), tmp_path / "reference", progress=False)
    groklab.train(mlp_config(steps=40, eval_every=10), tmp_path / "run", progress=False)
    summary = (tmp_path / "run" / "summary.json").read_text()
    RunDir(tmp_path / "run").extend(80)
    (tmp_path / "run" / "summary.json").write_text(summary)  # as if the process died before dropping it
    assert groklab.resume(tmp_path / "run", progress=False)["steps"] == 80
    assert rows_without_time(tmp_path / "run") == rows_without_time(tmp_path / "reference")


def test_python_resume_trains_on_like_the_command(tmp_path: Path) -> None:
    """groklab.resume(dir, steps=N) is `groklab resume DIR --steps N`: the same rows as a run given N steps at once."""
    import groklab

    groklab.train(mlp_config(steps=60, eval_every=10), tmp_path / "reference", progress=False)
    groklab.train(mlp_config(steps=30, eval_every=10), tmp_path / "run", progress=False)
    assert groklab.resume(tmp_path / "run", progress=False)["steps"] == 30  # nothing left to do
    assert groklab.resume(tmp_path / "run", steps=60, progress=False)["steps"] == 60
    assert rows_without_time(tmp_path / "run") == rows_without_time(tmp_path / "reference")
