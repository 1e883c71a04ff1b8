"""--log tensorboard,wandb: every metrics.jsonl key at its step, read back with the tools' own readers; resume adds no
duplicate point; a missing extra is one line and writes nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from groklab.cli import main
from groklab.config import Config, UserError, apply_overrides
from groklab.runio import checkpoint_path, read_metrics
from groklab.train import check, train

pytest.importorskip("tensorboard")
pytest.importorskip("wandb")


def tensorboard_points(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard's own loader serves the event files (restart purges applied, nothing sampled away)."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import TENSORS, EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(log_dir), size_guidance={TENSORS: 0})
    acc.Reload()
    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)] for tag in acc.Tags()["tensors"]}


def wandb_sessions(run_dir: Path) -> list[tuple[str, list[dict[str, Any]]]]:
    """(run id, history items) of each offline wandb session in RUN/wandb, oldest first, read by wandb's own inspector."""
    sessions = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        out = subprocess.run(
            [sys.executable, "-m", "wandb", "leet", "inspect", str(path), "--json"], capture_output=True, text=True, check=True
        )
        records = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        sessions.append((path.stem.removeprefix("run-"), [r["history"]["item"] for r in records if r.get("type") == "history"]))
    return sessions


def expected_points(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    keys = {k for row in rows for k in row} - {"step"}
    return {k: [(row["step"], row[k]) for row in rows if k in row] for k in keys}


def logged_config(small_config: Config, log: str) -> Config:
    # analysis=norms adds per-layer keys on some rows only: those must be mirrored too, at their steps.
    overrides = {"steps": 40, "eval_every": 5, "checkpoint_every": 20, "analysis": "norms", "analysis_every": 2, "log": log}
    return check(apply_overrides(small_config, overrides))


def crash_after_checkpoint(run: Path, step: int) -> None:
    """Leave `run` as a process killed right after the checkpoint at `step` would: later rows logged, no summary."""
    (run / "summary.json").unlink()
    later = checkpoint_path(run / "checkpoints", "state", step)
    later.unlink()
    later.with_name(later.name + ".sha256").unlink()


@pytest.mark.slow  # a few seconds: TensorBoard's import and reader
def test_tensorboard_mirrors_every_key_and_resume_purges_the_recomputed_steps(tmp_path: Path, small_config: Config) -> None:
    config, run = logged_config(small_config, "tensorboard"), tmp_path / "run"
    train(config, run, progress=False)
    crash_after_checkpoint(run, 40)  # resume from step 20: rows 25..40 are recomputed (new time_s values)
    train(config, run, progress=False)

    rows = read_metrics(run / "metrics.jsonl")
    assert any("norm/last_layer" in row for row in rows) and not all("norm/last_layer" in row for row in rows)
    assert tensorboard_points(run / "tensorboard") == expected_points(rows)  # one point per step, the JSON values exactly


@pytest.mark.slow  # a few seconds: wandb's service process and reader
def test_wandb_offline_run_holds_every_key_once_and_resume_keeps_its_id(tmp_path: Path, small_config: Config) -> None:
    config, run = logged_config(small_config, "wandb"), tmp_path / "run"
    train(config, run, progress=False)
    crash_after_checkpoint(run, 40)
    train(config, run, progress=False)  # every recomputed row is already in the wandb run: no new session, no duplicate

    rows = read_metrics(run / "metrics.jsonl")
    sessions = wandb_sessions(run)
    assert [run_id for run_id, _ in sessions] == [json.loads((run / "wandb" / "groklab-run.json").read_text())["id"]]
    items = sessions[0][1]
    assert [item["_step"] for item in items] == [row["step"] for row in rows]
    for item, row in zip(items, rows, strict=True):
        assert {k: v for k, v in item.items() if not k.startswith("_")} == {k: v for k, v in row.items() if k != "step"} | {
            "time_s": item["time_s"]  # rows past the checkpoint were logged before the crash, with that session's clock
        }
    assert all(item["time_s"] == row["time_s"] for item, row in zip(items, rows, strict=True) if row["step"] <= 20)
    config_json = json.loads(subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", str(run / "wandb"), "--summary", "--json"],
                                            capture_output=True, text=True, check=True).stdout)  # fmt: skip
    assert config_json["config"]["task"]["p"] == config.task.p and config_json["state"] == "finished"


@pytest.mark.slow
def test_kill9_then_resume_continues_both_loggers_without_duplicates(tmp_path: Path) -> None:
    # Killed at 100 rows: wandb has written part of its log (it writes in blocks), TensorBoard every row, and the
    # checkpoint (every 30 steps) is behind both, so the resume both recomputes rows and re-sends rows wandb lost.
    run = tmp_path / "run"
    args = [
        "--preset",
        "mlp",
        "--steps",
        "300",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "30",
        "--threads",
        "1",
        "--log",
        "tensorboard,wandb",
    ]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # this test process's own wandb service, if any
    proc = subprocess.Popen([sys.executable, "-m", "groklab.cli", "train", "--out", str(run), "--quiet", *args], env=env)
    while proc.poll() is None:
        if (run / "metrics.jsonl").exists() and len((run / "metrics.jsonl").read_text().splitlines()) >= 100:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert subprocess.run([sys.executable, "-m", "groklab.cli", "resume", str(run), "--quiet"], env=env).returncode == 0

    rows = read_metrics(run / "metrics.jsonl")
    assert rows[-1]["step"] == 300
    assert tensorboard_points(run / "tensorboard") == expected_points(rows)  # events past the checkpoint were purged
    (first_id, before), (second_id, after) = wandb_sessions(run)  # the killed session and the resumed one
    assert first_id == second_id  # one wandb run, continued
    assert [item["_step"] for item in before + after] == [row["step"] for row in rows]  # each step once, in order
    for item, row in zip(before + after, rows, strict=True):  # the same values (time_s: recomputed rows have a new clock)
        assert {k: v for k, v in item.items() if not k.startswith("_") and k != "time_s"} == {
            k: v for k, v in row.items() if k not in ("step", "time_s")
        }


@pytest.mark.parametrize(("name", "module"), [("wandb", "wandb"), ("tensorboard", "torch.utils.tensorboard")])
def test_missing_extra_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch, capsys, name: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # how `import` sees an environment without the extra
    out = tmp_path / "run"
    assert main(["train", "--preset", "mlp", "--out", str(out), "--quiet", "--steps", "2", "--log", name]) == 2
    err = capsys.readouterr().err
    assert err == f'error: --log {name} needs the {name} package: pip install "groklab[{name}]"\n'
    assert not out.exists()


def test_unknown_logger_name_is_refused(small_config: Config) -> None:
    with pytest.raises(UserError, match=r"^log='tensorboard,mlflow' is not valid: expected a comma-separated list of tensorboard, wandb"):
        check(dataclasses.replace(small_config, log="tensorboard,mlflow"))
