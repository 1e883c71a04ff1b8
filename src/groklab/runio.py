"""The run directory: config, metrics, checkpoints and summary, written so that nothing is lost.

Layout (readable without groklab)::

    config.json        full resolved config, groklab version, schema version
    metrics.jsonl      one JSON object per evaluation, appended and flushed as training goes
    metrics.parquet    the same rows, written at the end
    checkpoints/       state-<step>.pt (resumable, newest two kept, each with a .sha256 beside it)
                       model-<step>.pt (weights only, at log-spaced steps 1, 2, 4, ... and the last)
    summary.json       status, steps, wall_s, final accuracies and losses, steps to 99%, grokked, grok_delay,
                       seed, split_seed, device and torch threads (what wall_s was measured on)

Every file but metrics.jsonl is written atomically: temp file, fsync, rename. metrics.jsonl is append-only;
a torn last line (from kill -9) is ignored on read and dropped on resume.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from groklab.config import SCHEMA_VERSION, VERSION, Config, UserError, fingerprint, from_dict, to_dict
from groklab.stats import first_step

# ---------------------------------------------------------------------------------------------
# Atomic file writes.


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


# ---------------------------------------------------------------------------------------------
# Metrics.


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of a metrics.jsonl, skipping a torn (unparseable) last line."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise UserError(f"{path} line {i + 1} is not JSON: the metrics file is damaged") from None
    return rows


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    """`rows` as a Parquet table: a column per key any row has (first seen first), null where a row lacks it.

    Arrow's JSON reader builds the columns from the rows as JSON lines, each column typed over all rows (ints and
    floats mixed: float64); built from Python lists instead, pyarrow would import pandas, which costs a short run
    more than the rest of its finish (docs/performance.md)."""
    import pyarrow as pa
    import pyarrow.json as pj
    import pyarrow.parquet as pq

    lines = "".join(json.dumps(row) + "\n" for row in rows).encode()
    table = pj.read_json(io.BytesIO(lines)) if rows else pa.table({})
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    atomic_write_bytes(path, buf.getvalue())


def contained(base: Path, name: Any, source: Path) -> Path:
    """base / name, where `name` was read from the file `source`; a UserError if it leads outside base (an absolute
    path, `..`, or a link elsewhere): a directory someone else wrote must not make groklab read or write elsewhere."""
    target = base / str(name)
    if not target.resolve().is_relative_to(base.resolve()):
        raise UserError(f"{source} names {str(name)!r}, which leads outside {base}: groklab does not follow it")
    return target


def config_digest(config: Config) -> str:
    """A fingerprint of the resolved config, stored in each checkpoint to catch an edited config.json."""
    return fingerprint(config, 16)


# ---------------------------------------------------------------------------------------------
# Checkpoints: torch.save files with a sha256 beside each, so a torn or corrupted one is detected. Every file is read
# with torch's weights-only loader, which builds tensors and plain values (dict, list, tuple, str, numbers, None) and
# refuses anything else, so a file from someone else can never run code (its checksum proves nothing: whoever wrote
# the file wrote the checksum too). The state's non-tensor parts are therefore stored as tensors and plain values.


class UnreadableCheckpoint(UserError):
    """A checkpoint or export groklab will not load: missing, torn, failing its checksum, or not plain data.
    `legacy`: it is groklab's earlier format (NumPy objects in the state), which `convert_run` rewrites."""

    def __init__(self, message: str, legacy: bool = False) -> None:
        super().__init__(message)
        self.legacy = legacy


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_name(path.name + ".sha256"), (_sha256(data) + "\n").encode())


def load_plain(path: Path, data: bytes | None = None) -> Any:
    """The tensors and plain values of the torch.save file at `path` (or of its bytes `data`), loaded weights-only;
    UnreadableCheckpoint naming the file if it holds anything else (a pickle that would run code) or is not a torch file."""
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UnreadableCheckpoint(f"{path} cannot be read: {err.strerror}") from None
    try:
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols: the one-line error says it all
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - whatever the bytes are, the answer is the same: not loadable as data
        raise _not_plain(path, data) from None


def _not_plain(path: Path, data: bytes) -> UnreadableCheckpoint:
    """Why the weights-only loader refused `data` (the file is only scanned for the names it needs, never run)."""
    try:
        needs = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - not a torch zip file at all
        return UnreadableCheckpoint(f"{path} is not a torch.save file of tensors and plain values: groklab does not load it")
    if needs and all(name.startswith("numpy.") for name in needs):
        return UnreadableCheckpoint(
            f"{path} holds NumPy objects (groklab's earlier checkpoint format), which groklab does not load from a file that may come from someone else",
            legacy=True,
        )
    if needs:
        return UnreadableCheckpoint(f"{path} is not plain data: loading it would run Python code ({', '.join(sorted(needs)[:3])}); groklab does not load it")
    return UnreadableCheckpoint(f"{path} is damaged: the weights-only loader cannot parse it")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's content; UnreadableCheckpoint, naming the file and why, if it is missing, torn, fails its
    sha256, or is not plain data. A file in groklab's earlier format says how to convert the run (`convert_run`)."""
    sha = path.with_name(path.name + ".sha256")
    try:
        data, expected = path.read_bytes(), sha.read_text().strip()
    except OSError:
        raise UnreadableCheckpoint(f"{path} is torn or has no {sha.name} (interrupted while being written)") from None
    if _sha256(data) != expected:
        raise UnreadableCheckpoint(f"{path} is corrupt: it does not match its {sha.name}")
    try:
        state = load_plain(path, data)
    except UnreadableCheckpoint as err:
        if err.legacy:
            raise UnreadableCheckpoint(f"{err}; if you trust this run, convert it once: groklab convert {path.parent.parent}", legacy=True) from None
        raise
    if not isinstance(state, dict):
        raise UnreadableCheckpoint(f"{path} holds a {type(state).__name__}, not a checkpoint's table")
    return state


def numpy_rng_to_plain(state: tuple[Any, ...]) -> dict[str, Any]:
    """np.random.get_state() as plain values: the (624,) uint32 key as a tensor, the rest as numbers."""
    kind, key, pos, has_gauss, gauss = state
    return {"kind": kind, "key": torch.from_numpy(key.copy()), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}


def numpy_rng_from_plain(state: dict[str, Any]) -> tuple[Any, ...]:
    """The inverse of numpy_rng_to_plain: a tuple np.random.set_state takes, bit for bit the one saved."""
    return (state["kind"], state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"])


def python_rng_to_plain(state: tuple[Any, ...]) -> dict[str, Any]:
    """random.getstate() with its 625 ints as one int64 tensor: the weights-only loader reads a tensor in one go but a
    tuple of ints one opcode at a time (the bulk of a state checkpoint's load time)."""
    version, internal, gauss = state
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def python_rng_from_plain(state: dict[str, Any]) -> tuple[Any, ...]:
    """The inverse of python_rng_to_plain: a tuple random.setstate takes."""
    return state["version"], tuple(state["internal"].tolist()), state["gauss"]


def convert_run(path: Path) -> list[Path]:
    """Rewrite the checkpoints of the run at `path` that are in groklab's earlier format (NumPy objects in the state)
    in the weights-only one; returns the files rewritten.

    This loads them with the full pickle loader, which runs whatever code a file holds: only for a run you trust.
    """
    run = RunDir(path)
    run.read_config()  # a clear error for a directory that is not a run
    converted = []
    for kind in ("state", "model"):
        for step in checkpoint_steps(run.ckpt_dir, kind):
            ckpt = checkpoint_path(run.ckpt_dir, kind, step)
            try:
                load_checkpoint(ckpt)
                continue  # already readable as data
            except UnreadableCheckpoint as err:
                if not err.legacy:  # torn, corrupt or foreign: converting would not make it trustworthy
                    raise
            state = torch.load(ckpt, map_location="cpu", weights_only=False)
            rng = state.get("rng", {})
            if isinstance(rng.get("numpy"), tuple):
                rng["numpy"] = numpy_rng_to_plain(rng["numpy"])
            if isinstance(rng.get("python"), tuple):
                rng["python"] = python_rng_to_plain(rng["python"])
            save_checkpoint(ckpt, state)
            load_checkpoint(ckpt)  # proves the rewritten file is plain data
            converted.append(ckpt)
    return converted


def checkpoint_steps(ckpt_dir: Path, kind: str) -> list[int]:
    """Steps of the `kind` (`state` or `model`) checkpoints present, ascending."""
    steps = []
    for p in ckpt_dir.glob(f"{kind}-*.pt"):
        try:
            steps.append(int(p.stem.split("-")[1]))
        except (IndexError, ValueError):
            continue
    return sorted(steps)


def checkpoint_path(ckpt_dir: Path, kind: str, step: int) -> Path:
    return ckpt_dir / f"{kind}-{step:09d}.pt"


STATE_KEYS = frozenset({"config_digest", "step", "elapsed", "held_since", "model", "optimizer", "schedule", "sampler", "rng"})
"""What train.fit writes into every state checkpoint (a plain-data file without them is not one)."""


# ---------------------------------------------------------------------------------------------
# The run directory.


@dataclass
class RunDir:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "checkpoints"

    def read_config(self) -> Config:
        """The run's Config; a clear error for a missing, edited-to-invalid or newer-schema config.json."""
        try:
            raw = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            raise UserError(f"{self.path} is not a groklab run: it has no config.json") from None
        except json.JSONDecodeError:
            raise UserError(f"{self.config_path} is not valid JSON") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
            raise UserError(f"{self.config_path} has no 'config' table: it was not written by groklab")
        schema = raw.get("schema_version")
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise UserError(
                f"{self.config_path} has schema_version={schema!r}; this groklab ({VERSION}) reads schema <= {SCHEMA_VERSION}: upgrade groklab"
            )
        try:
            return from_dict(raw["config"], schema)
        except UserError as err:
            raise UserError(f"{self.config_path}: {err}") from None

    def budgets(self) -> list[int]:
        """The step budgets the run had before `extend` raised them (config.json's `extended_from`; [] if never)."""
        return list(json.loads(self.config_path.read_text()).get("extended_from", []))

    def extend(self, steps: int) -> None:
        """Raise the step budget in config.json to `steps`, recording the old one in `extended_from` (its checkpoints
        were trained under it), and drop the shorter run's summary.json and metrics.parquet: until it reaches the new
        budget the run reads as unfinished. A crash between the two leaves a summary whose `steps` fall short of the
        budget, which counts as unfinished too (see train.run_members)."""
        raw = json.loads(self.config_path.read_text())
        raw["extended_from"] = [*raw.get("extended_from", []), raw["config"]["steps"]]
        raw["config"]["steps"] = steps
        atomic_write_json(self.config_path, raw)
        self.summary_path.unlink(missing_ok=True)
        (self.path / "metrics.parquet").unlink(missing_ok=True)

    def holds(self, config: Config) -> bool:
        """True if the run dir holds this very run already, False if it is new or empty; writes nothing.

        Refuses a directory that holds a different run or other files.
        """
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a directory")
        if self.config_path.exists():
            existing = self.read_config()
            if existing != config:
                raise UserError(f"--out {self.path} already holds a different run; choose another --out or `groklab resume {self.path}`")
            return True
        if self.path.exists() and any(self.path.iterdir()):
            raise UserError(f"--out {self.path} is not empty and holds no groklab run; choose an empty or new directory")
        return False

    def prepare(self, config: Config) -> bool:
        """Create the run dir for `config`; True if it already holds this very run (then resume it). Refuses, without
        touching anything, what `holds` refuses."""
        if self.holds(config):
            return True
        try:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.config_path, {"groklab_version": VERSION, "schema_version": SCHEMA_VERSION, "config": to_dict(config)})
        except OSError as err:
            raise UserError(f"--out {self.path} cannot be written: {err.strerror}") from None
        return False

    def append_metrics(self, row: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rewind(self, last_step: int, logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Keep only the metrics rows (`logged`: read_metrics of this run, a torn last line already dropped) and the
        resumable states up to `last_step`, the checkpoint resumed from; return the rows. A state past it is from the
        interrupted stretch: left in place it would count as one of the `keep` newest, and a second interruption could
        leave members with none in common."""
        rows = [r for r in logged if r["step"] <= last_step]
        atomic_write_bytes(self.metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())
        for step in checkpoint_steps(self.ckpt_dir, "state"):
            if step > last_step:
                self.drop_state(step)
        return rows

    def states(self) -> tuple[dict[int, dict[str, Any]], dict[Path, str]]:
        """The valid resumable checkpoints, step -> state, and the unreadable ones (torn, failing their checksum, or
        not plain data), path -> the one-line reason, oldest first."""
        valid, corrupt = {}, {}
        for step in checkpoint_steps(self.ckpt_dir, "state"):
            path = checkpoint_path(self.ckpt_dir, "state", step)
            try:
                state = load_checkpoint(path)
                if missing := STATE_KEYS - state.keys():
                    raise UnreadableCheckpoint(f"{path} is not a resumable state: it has no {', '.join(sorted(missing))}")
                valid[step] = state
            except UnreadableCheckpoint as err:
                corrupt[path] = str(err)
        return valid, corrupt

    def save_state(self, step: int, state: dict[str, Any], keep: int = 2) -> None:
        save_checkpoint(checkpoint_path(self.ckpt_dir, "state", step), state)
        for old in checkpoint_steps(self.ckpt_dir, "state")[:-keep]:
            self.drop_state(old)

    def drop_state(self, step: int) -> None:
        path = checkpoint_path(self.ckpt_dir, "state", step)
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)

    def save_model(self, step: int, model_state: dict[str, Any]) -> None:
        save_checkpoint(checkpoint_path(self.ckpt_dir, "model", step), model_state)

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json's content, or None while the run has none (or it is unreadable)."""
        try:
            return json.loads(self.summary_path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.summary_path, summary)

    def finish(self, summary: dict[str, Any]) -> None:
        write_parquet(self.path / "metrics.parquet", read_metrics(self.metrics_path))
        self.write_summary(summary)


# ---------------------------------------------------------------------------------------------
# Summaries computed from metric rows (so a resumed run and an uninterrupted one agree).


def summarize(rows: list[dict[str, Any]], status: str, steps: int, wall_s: float, **extra: Any) -> dict[str, Any]:
    """summary.json: `grokked` means val acc reached 0.99; `grok_delay` = steps from 99% train to 99% val."""
    last = rows[-1] if rows else {}
    at = [r["step"] for r in rows]
    train99, val99 = (first_step(at, [r.get(key) for r in rows]) for key in ("train/acc", "val/acc"))
    final_keys = ("train/acc", "train/loss", "val/acc", "val/loss", "test/acc", "test/loss")
    final_keys += tuple(k for k in ("gen/acc", "gen/loss") if k in last)  # sequence tasks' generalization split
    return {
        "status": status,
        "steps": steps,
        "wall_s": round(wall_s, 3),
        "final": {k: last.get(k) for k in final_keys},
        "steps_to_train_acc_99": train99,
        "steps_to_val_acc_99": val99,
        "grokked": val99 is not None,
        "grok_delay": val99 - train99 if val99 is not None and train99 is not None else None,
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# Reading a run back (the Python API's load_run).


@dataclass
class Run:
    """A run directory read back: its config, metric rows and summary (None while unfinished)."""

    path: Path
    config: Config
    metrics: list[dict[str, Any]]
    summary: dict[str, Any] | None

    def column(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.metrics]

    def model_state(self, step: int | None = None) -> dict[str, Any]:
        """The state_dict at the weights-only checkpoint `step` (default: the newest); groklab.load_model builds the model."""
        ckpt_dir = self.path / "checkpoints"
        steps = checkpoint_steps(ckpt_dir, "model")
        if not steps:
            raise UserError(f"{self.path} has no model checkpoints yet")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise UserError(f"step={step} has no checkpoint in {self.path}; available: {', '.join(map(str, steps))}")
        path = checkpoint_path(ckpt_dir, "model", step)
        state = load_checkpoint(path)
        if not all(isinstance(name, str) and torch.is_tensor(value) for name, value in state.items()):
            raise UnreadableCheckpoint(f"{path} is not a model's weights (parameter names -> tensors)")
        return state


def load_run(path: str | os.PathLike[str]) -> Run:
    run = RunDir(Path(path))
    config = run.read_config()
    return Run(run.path, config, read_metrics(run.metrics_path), run.read_summary())
