"""Every bad input: one clear line on stderr naming the value, exit code 2, no traceback, no file changed.

One finished run and one directory of unrelated files are built once; each case may tamper with a copy of
the run (in its own folder), then the whole tree (files and folders) is hashed before and after the command.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import hash_tree

from groklab.runio import checkpoint_path, checkpoint_steps

TINY = ["--steps", "20", "--eval-every", "10", "--threads", "1"]


def groklab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groklab.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("finished") / "run"
    result = groklab("train", "--out", str(run), "--quiet", *TINY)
    assert result.returncode == 0, result.stderr
    return run


def _edit_config(run: Path, edit: Callable[[dict], None]) -> None:
    raw = json.loads((run / "config.json").read_text())
    edit(raw)
    (run / "config.json").write_text(json.dumps(raw))


def _unfinished(run: Path) -> None:
    (run / "summary.json").unlink()


def _summary(**changes: object) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, **changes}))

    return tamper


def _truncate_every_state(run: Path) -> None:
    _unfinished(run)
    for step in checkpoint_steps(run / "checkpoints", "state"):
        path = checkpoint_path(run / "checkpoints", "state", step)
        path.write_bytes(path.read_bytes()[:100])


def _set(section: str | None, key: str, value: object) -> Callable[[Path], None]:
    def tamper(run: Path) -> None:
        def edit(raw: dict) -> None:
            (raw["config"][section] if section else raw["config"])[key] = value

        _unfinished(run)
        _edit_config(run, edit)

    return tamper


# (id, argv with {run} = a tampered copy of the finished run and {other} = a folder of unrelated files,
#  tamper function or None, text the error line must contain)
CASES: list[tuple[str, list[str], Callable[[Path], None] | None, str]] = [
    ("unknown-command", ["fly"], None, "'fly'"),
    ("unknown-preset", ["train", "--preset", "nope", "--out", "{new}"], None, "'nope'"),
    ("unknown-op", ["train", "--task.op", "x**y", "--out", "{new}"], None, "'x**y'"),
    ("unknown-field", ["train", "--task.opp", "x+y", "--out", "{new}"], None, "task.opp"),
    ("int-not-a-number", ["train", "--steps", "ten", "--out", "{new}"], None, "'ten'"),
    ("float-not-a-number", ["train", "--optim.lr", "fast", "--out", "{new}"], None, "'fast'"),
    ("int-fractional", ["train", "--steps", "10.5", "--out", "{new}"], None, "'10.5'"),
    ("train-frac-zero", ["train", "--task.train-frac", "0", "--out", "{new}"], None, "train_frac=0"),
    ("train-frac-above-one", ["train", "--task.train-frac", "1.5", "--out", "{new}"], None, "train_frac=1.5"),
    ("val-frac-zero", ["train", "--task.val-frac", "0", "--out", "{new}"], None, "task.val_frac=0"),
    ("fractions-sum-past-one", ["train", "--task.train-frac", "0.6", "--task.val-frac", "0.5", "--out", "{new}"], None, "1.1"),
    ("non-prime-division", ["train", "--task.op", "x/y", "--task.p", "12", "--out", "{new}"], None, "task.p=12"),
    ("p-below-two", ["train", "--task.p", "1", "--out", "{new}"], None, "task.p=1"),
    ("negative-steps", ["train", "--steps", "-5", "--out", "{new}"], None, "steps=-5"),
    ("unknown-model", ["train", "--model.name", "cnn", "--out", "{new}"], None, "'cnn'"),
    ("eval-every-with-log-spacing", ["train", "--preset", "power-fig1", "--eval-every", "100", "--out", "{new}"], None, "eval_every=100"),
    ("eval-train-size-negative", ["train", "--eval-train-size", "-1", "--out", "{new}"], None, "eval_train_size=-1"),
    ("dropout-out-of-range", ["train", "--model.dropout", "1.5", "--out", "{new}"], None, "dropout=1.5"),
    ("init-scale-zero", ["train", "--model.init-scale", "0", "--out", "{new}"], None, "init_scale=0"),
    (
        "normal-init-on-an-mlp",
        ["train", "--model.init", "normal", "--out", "{new}"],
        None,
        "model.init='normal' is not valid for model.name='mlp'",
    ),
    ("bad-device", ["train", "--device", "tpu", "--out", "{new}"], None, "'tpu'"),
    (
        "parity-k-above-n",
        ["train", "--task.name", "parity", "--task.n-bits", "4", "--task.k-bits", "6", "--out", "{new}"],
        None,
        "k_bits=6",
    ),
    ("transformer-on-images", ["train", "--task.name", "digits", "--model.name", "transformer", "--out", "{new}"], None, "'transformer'"),
    ("old-model-name", ["train", "--model.name", "nanda", "--out", "{new}"], None, "model.name=transformer model.norm=none"),
    ("missing-out", ["train", "--preset", "mlp"], None, "--out"),
    ("missing-value", ["train", "--out", "{new}", "--steps"], None, "--steps"),
    ("out-holds-another-run", ["train", "--out", "{run}", "--seed", "7", *TINY], None, "different run"),
    ("out-not-empty", ["train", "--out", "{other}", *TINY], None, "not empty"),
    ("out-is-a-file", ["train", "--out", "{other}/notes.txt", *TINY], None, "is a file"),
    ("out-unwritable", ["train", "--out", "/proc/groklab-run", *TINY], None, "/proc/groklab-run"),
    ("resume-not-a-run", ["resume", "{other}"], None, "no config.json"),
    ("resume-missing-dir", ["resume", "{new}"], None, "not a directory"),
    ("resume-with-overrides", ["resume", "{run}", "--seed", "5"], None, "--seed"),
    ("resume-steps-below-budget", ["resume", "{run}", "--steps", "5"], None, "--steps 5 is below the run's budget of 20"),
    ("resume-steps-not-a-number", ["resume", "{run}", "--steps", "many"], None, "'many'"),
    ("resume-steps-of-a-diverged-run", ["resume", "{run}", "--steps", "40"], _summary(status="diverged", diverged_at_step=13), "diverged"),
    ("resume-steps-of-a-run-stopped-early", ["resume", "{run}", "--steps", "40"], _summary(stopped_early=True), "stopped early"),
    ("config-not-json", ["resume", "{run}"], lambda run: (run / "config.json").write_text("{oops"), "not valid JSON"),
    ("config-edited-invalid", ["resume", "{run}"], _set("task", "train_frac", 3), "train_frac=3"),
    ("config-edited-unknown-key", ["resume", "{run}"], _set("optim", "momentum", 0.9), "optim.momentum"),
    ("config-edited-wrong-type", ["resume", "{run}"], _set(None, "steps", "many"), "'many'"),
    ("config-edited-task-not-a-table", ["resume", "{run}"], _set(None, "task", 3), "task must be a table"),
    ("config-edited-valid", ["resume", "{run}"], _set(None, "steps", 40), "edited"),
    (
        "config-newer-schema",
        ["resume", "{run}"],
        lambda run: _edit_config(run, lambda raw: raw.update(schema_version=99)),
        "schema_version=99",
    ),
    ("checkpoints-truncated", ["resume", "{run}"], _truncate_every_state, "no valid checkpoint"),
]


@pytest.mark.parametrize(("argv", "tamper", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(
    tmp_path: Path, finished_run: Path, argv: list[str], tamper: Callable[[Path], None] | None, needle: str
) -> None:
    run, other = tmp_path / "run", tmp_path / "other"
    shutil.copytree(finished_run, run)
    other.mkdir()
    (other / "notes.txt").write_text("my own notes\n")
    if tamper is not None:
        tamper(run)
    before = hash_tree(tmp_path)
    args = [a.format(run=run, other=other, new=tmp_path / "new") for a in argv]

    check_refused(groklab(*args), needle, tmp_path, before)
    assert not (tmp_path / "new").exists()


def check_refused(result: subprocess.CompletedProcess, needle: str, root: Path, before: dict[str, str]) -> None:
    """One line on stderr holding `needle`, nothing on stdout, exit code 2, no traceback, every file and folder
    under `root` unchanged (a folder left behind, even an empty one, fails)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert needle in lines[0]
    assert hash_tree(root) == before


EXISTING_SPEC = '[set]\nsteps = 20\n"task.p" = 7\n'

# (id, sweep spec TOML, --out: "new" (a new dir) or "sweep" (a sweep dir holding EXISTING_SPEC), text the
# error line must contain). Run in-process through cli.main (the same code path as the command, much faster).
SPEC_CASES: list[tuple[str, str, str, str]] = [
    ("spec-unknown-top-level-key", "sweeps = 3\n", "new", "'sweeps'"),
    ("spec-unknown-grid-field", '[grid]\n"task.opp" = ["x+y"]\n', "new", "task.opp"),
    ("spec-wrong-type", '[set]\nsteps = "many"\n', "new", "'many'"),
    ("spec-wrong-type-in-grid", '[grid]\n"optim.lr" = [1e-3, "fast"]\n', "new", "'fast'"),
    ("spec-empty-grid-list", '[grid]\n"task.op" = []\n', "new", "non-empty list"),
    ("spec-grid-not-a-list", '[grid]\n"task.op" = "x+y"\n', "new", "non-empty list"),
    ("spec-seeds-zero", "seeds = 0\n", "new", "seeds=0"),
    ("spec-seeds-wrong-type", 'seeds = "3"\n', "new", "seeds='3'"),
    ("spec-zip-unequal", '[zip]\n"optim.lr" = [1e-3, 3e-3]\n"optim.weight_decay" = [1.0]\n', "new", "equal lengths"),
    ("spec-not-toml", "preset = \n", "new", "not valid TOML"),
    ("spec-eval-every-with-log-spacing", 'preset = "power-fig1"\n[set]\neval_every = 50\n', "new", "eval_every=50"),
    ("spec-differs-from-existing-sweep", EXISTING_SPEC.replace("20", "30"), "sweep", "different spec"),
]


@pytest.mark.parametrize(("text", "out", "needle"), [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES])
def test_bad_sweep_spec_is_one_clear_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, out: str, needle: str
) -> None:
    from groklab.cli import main

    existing = tmp_path / "sweep"
    (existing / "runs").mkdir(parents=True)
    (existing / "spec.toml").write_text(EXISTING_SPEC)
    (tmp_path / "spec.toml").write_text(text)
    before = hash_tree(tmp_path)

    code = main(["sweep", str(tmp_path / "spec.toml"), "--out", str(tmp_path / out)])

    captured = capsys.readouterr()
    check_refused(subprocess.CompletedProcess([], code, captured.out, captured.err), needle, tmp_path, before)
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in existing.iterdir()) == ["runs", "spec.toml"]


@pytest.mark.parametrize("command", ["presets", "ls"])
def test_a_reader_that_stops_early_gets_no_traceback(finished_run: Path, command: str) -> None:
    """`groklab ls DIR | head -1`: the pipe closes before groklab has written; it ends quietly, no traceback.

    Plain prints end with exit code 0 (cli.main); rich tables end with 1 (rich's own broken-pipe handling).
    """
    args = [command] + ([str(finished_run.parent)] if command == "ls" else [])
    proc = subprocess.Popen([sys.executable, "-m", "groklab.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait() in (0, 1), err
    assert err == ""
