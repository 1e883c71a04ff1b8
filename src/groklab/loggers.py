"""Optional mirrors of metrics.jsonl in TensorBoard and Weights & Biases (`--log tensorboard,wandb`).

Many users already watch their runs in one of these dashboards, so a run can copy its metric rows there as
they are written. The run directory stays the source of truth: each row goes to the loggers right after it is
appended to metrics.jsonl, every key at the row's step (`step` itself is the x axis), and nothing in groklab
ever reads the copies back. Both are extras (`pip install "groklab[tensorboard]"`, `"groklab[wandb]"`), never
required; naming one that is not installed is a one-line error before anything is written.

- TensorBoard: event files in RUN/tensorboard, scalars stored in double precision (the JSON values exactly).
- wandb: offline (WANDB_MODE=offline unless the user set WANDB_MODE themselves), files in RUN/wandb; upload
  later with `wandb sync RUN/wandb/offline-run-*`. The wandb run id lives in RUN/wandb/groklab-run.json.

A resumed run never duplicates a point: TensorBoard purges the events from the first re-logged step on
(`purge_step`; rows past the checkpoint are recomputed), and wandb continues the same run id from the last step
its own files hold (see WandbLogger).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from groklab.config import Config, UserError, parse_names, to_dict
from groklab.runio import atomic_write_json, read_metrics

LOGGERS = ("tensorboard", "wandb")
"""The names `Config.log` accepts (comma-separated)."""


def parse_log(spec: str) -> list[str]:
    """`"tensorboard, wandb"` -> ["tensorboard", "wandb"]; a name outside LOGGERS is a UserError."""
    return parse_names("log", spec, LOGGERS)


def _require(name: str) -> None:
    """Import the extra's package now, so a missing one fails before the run directory is touched."""
    try:
        if name == "tensorboard":
            import torch.utils.tensorboard  # noqa: F401 - needs the tensorboard package
        else:
            import wandb  # noqa: F401
    except ImportError:
        raise UserError(f'--log {name} needs the {name} package: pip install "groklab[{name}]"') from None


def _numbers(row: dict[str, Any]) -> dict[str, float]:
    """The row's metric values (everything but the `step` axis) that a scalar dashboard can plot."""
    return {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoardLogger:
    """Scalars in RUN/tensorboard; opened at the first row so that a resume knows where to purge."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / "tensorboard"
        self.writer: Any = None

    def log(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            # Every session starts with a purge mark at its first step: TensorBoard drops earlier sessions' events at
            # or past it (logged before a crash, recomputed since). Only a restart's mark purges, so the first is harmless.
            self.writer = SummaryWriter(str(self.dir), purge_step=row["step"])
        for key, value in _numbers(row).items():
            self.writer.add_scalar(key, value, row["step"], new_style=True, double_precision=True)
        self.writer.flush()  # as metrics.jsonl: a row that is logged is on disk

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class WandbLogger:
    """An offline wandb run in RUN/wandb, continued under the same id (RUN/wandb/groklab-run.json) when training resumes.

    wandb writes its transaction log (RUN/wandb/*-ID/run-ID.wandb) in blocks, so a killed process loses the tail it
    had not written yet. A resumed session therefore asks wandb's own reader which step the earlier sessions hold,
    re-sends the later rows from metrics.jsonl (kept up to the checkpoint, not recomputed) and skips the recomputed
    rows wandb already holds: every step exactly once.
    """

    def __init__(self, config: Config, run_dir: Path) -> None:
        self.config, self.run_dir = config, run_dir
        self.id_path = run_dir / "wandb" / "groklab-run.json"
        self.held: int | None = None  # the last step earlier sessions' files hold (-1: none)
        self.run: Any = None

    def log(self, row: dict[str, Any]) -> None:
        if self.run is None:
            if self.held is None:
                self.held = self.held_step()
            if row["step"] <= self.held:
                return
            self.run = self.open()
            for old in read_metrics(self.run_dir / "metrics.jsonl"):  # rows a killed session logged but never wrote
                if self.held < old["step"] < row["step"]:
                    self.run.log(_numbers(old), step=old["step"])
        self.run.log(_numbers(row), step=row["step"])

    def held_step(self) -> int:
        if not self.id_path.exists():
            return -1
        run_id = json.loads(self.id_path.read_text())["id"]
        held = -1
        for path in self.run_dir.glob(f"wandb/*-{run_id}/run-{run_id}.wandb"):
            command = [sys.executable, "-m", "wandb", "leet", "inspect", str(path), "--summary", "--json"]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                raise UserError(
                    f"{path} cannot be read by wandb ({out.stderr.strip()[-200:]}); move {self.run_dir / 'wandb'} away to start a new wandb run"
                )
            held = max(held, json.loads(out.stdout).get("step") or -1)
        return held

    def open(self) -> Any:
        import wandb

        mode = os.environ.get("WANDB_MODE", "offline")  # never the network unless the user asked for it
        if not self.id_path.exists():
            self.id_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.id_path, {"id": secrets.token_hex(4)})
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", "groklab"),
            name=self.run_dir.name,
            dir=str(self.run_dir),
            id=json.loads(self.id_path.read_text())["id"],
            resume="allow",
            mode=mode,  # type: ignore[arg-type]
            reinit="create_new",  # ensembles log several runs from one process
            config=to_dict(self.config),
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_save_requirements=False),
        )

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


class MetricLoggers:
    """The loggers named by `config.log`, fed one metrics row at a time; a no-op when it is empty.

    Construct it before the run directory is written (it checks that the extras are installed); it opens its
    files lazily at the first row, and close() finishes them.
    """

    def __init__(self, config: Config, run_dir: str | Path) -> None:
        names = parse_log(config.log)
        for name in names:
            _require(name)
        run_dir = Path(run_dir)
        self.loggers = [TensorBoardLogger(run_dir) if name == "tensorboard" else WandbLogger(config, run_dir) for name in names]

    def log(self, row: dict[str, Any]) -> None:
        for logger in self.loggers:
            logger.log(row)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()
