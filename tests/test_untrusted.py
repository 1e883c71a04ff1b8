"""A run directory from someone else is data, never code: every checkpoint and export loads weights-only; a file
that is not plain data is refused in one line (resume falls back past it); paths read from files stay inside."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from groklab.cli import main
from groklab.config import UserError, apply_overrides
from groklab.presets import get_preset
from groklab.report import report
from groklab.runio import (
    UnreadableCheckpoint,
    checkpoint_path,
    checkpoint_steps,
    load_checkpoint,
    numpy_rng_from_plain,
    python_rng_from_plain,
    save_checkpoint,
)
from groklab.train import rng_states, set_rng_states, train

HAS_TL = importlib.util.find_spec("transformer_lens") is not None


class Payload:
    """Unpickling this runs a shell command that creates `marker`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def plant(path: Path, payload: bytes) -> None:
    """Replace `path` by `payload`, with the matching .sha256 beside it (whoever writes a file can write its checksum)."""
    path.write_bytes(payload)
    path.with_name(path.name + ".sha256").write_text(hashlib.sha256(payload).hexdigest() + "\n")


def as_torch_file(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny transformer run (export-tl takes transformers) with state checkpoints at steps 0 and 4."""
    base = {"device": "cpu", "threads": 1, "steps": 4, "eval_every": 2, "task.p": 7, "model.d_model": 16, "model.d_mlp": 32}
    run = tmp_path_factory.mktemp("trusted") / "run"
    train(apply_overrides(get_preset("nanda"), base), run, progress=False)
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def groklab(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """Exit code and stderr lines of one `groklab` command, run in this process (a payload would run here too)."""
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


def newest(run: Path, kind: str) -> Path:
    return checkpoint_path(run / "checkpoints", kind, checkpoint_steps(run / "checkpoints", kind)[-1])


def test_a_hostile_model_checkpoint_is_refused_by_every_command(run: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    model = newest(run, "model")
    plant(model, pickle.dumps(Payload(marker)))  # a bare pickle, as the reproduction used
    for command in (["analyze", str(run), "--no-sharpness"], ["report", str(run), "--no-sharpness", "--quiet"]):
        code, err = groklab(capsys, *command)
        assert (code, len(err)) == (2, 1) and str(model) in err[0], (command, err)
    assert "Analysis unavailable" in (run / "report" / "index.html").read_text()  # the curves are still drawn
    if HAS_TL:
        code, err = groklab(capsys, "export-tl", str(run))
        assert (code, len(err)) == (2, 1) and str(model) in err[0], err
    assert groklab(capsys, "resume", str(run), "--quiet") == (0, [])  # finished: resume reads no model checkpoint
    assert not marker.exists()


def test_a_hostile_state_checkpoint_is_skipped_then_refused_by_resume(run: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    (run / "summary.json").unlink()  # as if killed: resume reads the state checkpoints
    state = newest(run, "state")
    plant(state, as_torch_file({"model": Payload(marker)}))
    for command in (["analyze", str(run), "--no-sharpness"], ["report", str(run), "--no-sharpness", "--quiet"]):
        assert groklab(capsys, *command)[0] == 0  # they read no state checkpoint
    code, err = groklab(capsys, "resume", str(run), "--quiet")
    assert (code, len(err)) == (0, 1) and state.name in err[0]  # resumed from the older checkpoint, saying so
    assert load_checkpoint(state)["step"] == 4  # and rewrote the newest one as data
    (run / "summary.json").unlink()
    for path in (run / "checkpoints").glob("state-*.pt"):
        plant(path, as_torch_file({"model": Payload(marker)}))
    code, err = groklab(capsys, "resume", str(run), "--quiet")
    assert (code, len(err)) == (2, 1) and "is not plain data" in err[0] and str(state) in err[0], err
    assert not marker.exists()


def test_a_hostile_transformer_lens_export_is_never_loaded(run: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "pwned"
    export = run / "transformer_lens.pt"
    plant(export, as_torch_file({"cfg": {}, "state_dict": Payload(marker)}))
    for command in (["analyze", str(run), "--no-sharpness"], ["report", str(run), "--no-sharpness", "--quiet"], ["resume", str(run)]):
        assert groklab(capsys, *command)[0] == 0, command  # none of them reads an export
    if HAS_TL:
        from groklab.analysis.tl import load_hooked

        with pytest.raises(UnreadableCheckpoint, match="is not plain data"):
            load_hooked(export)
        assert groklab(capsys, "export-tl", str(run))[0] == 0  # replaces it with a real export
        load_hooked(export)
    assert not marker.exists()


def test_an_earlier_format_is_refused_until_converted_then_resumes(run: Path, capsys) -> None:
    """groklab's earlier checkpoints held np.random.get_state()'s tuple (an ndarray: not plain data) and random.getstate()'s."""
    originals = {}
    for path in (run / "checkpoints").glob("state-*.pt"):
        state = originals[path] = load_checkpoint(path)
        rng = state["rng"]
        save_checkpoint(path, {**state, "rng": {**rng, "numpy": numpy_rng_from_plain(rng["numpy"]), "python": python_rng_from_plain(rng["python"])}})
    (run / "summary.json").unlink()
    code, err = groklab(capsys, "resume", str(run), "--quiet")
    assert (code, len(err)) == (2, 1) and f"groklab convert {run}" in err[0], err
    assert groklab(capsys, "convert", str(run))[0] == 0
    for path, state in originals.items():
        again = load_checkpoint(path)
        assert torch.equal(again["rng"]["numpy"]["key"], state["rng"]["numpy"]["key"]) and again["step"] == state["step"]
    assert groklab(capsys, "resume", str(run), "--quiet")[0] == 0


def test_random_states_round_trip_exactly_through_a_weights_only_file(tmp_path: Path) -> None:
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_states()})
    draws = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    set_rng_states(load_checkpoint(path)["rng"])
    again = (random.random(), np.random.rand(3).tolist(), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


def test_paths_read_from_a_sweep_or_recipe_stay_inside_it(trained: Path, tmp_path: Path, capsys) -> None:
    sweep = tmp_path / "sweep"
    (sweep / "runs").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"run_id": "r0", "run_dir": f"../{trained.parent.name}/run"}]), sweep / "runs.parquet")
    shutil.copytree(trained.parent, tmp_path / trained.parent.name)
    for command in ("report", "ls"):
        code, err = groklab(capsys, command, str(sweep))
        assert (code, len(err)) == (2, 1) and "leads outside" in err[0], err
    assert not (tmp_path / trained.parent.name / "run" / "report").exists()
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "recipe.json").write_text('{"recipe": "x", "scale": "quick", "parts": ["../sweep"]}')
    with pytest.raises(UserError, match="leads outside"):
        report(recipe, quiet=True)
    assert not (sweep / "report").exists()
