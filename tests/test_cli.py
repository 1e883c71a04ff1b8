"""The `groklab` command as a user runs it: a subprocess, its exit code, its stderr, and the files it leaves."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import hash_tree

from groklab.cli import build_parser
from groklab.presets import PRESETS

GROKLAB = shutil.which("groklab") or str(Path(sys.executable).with_name("groklab"))
SMALL = ["--threads", "1", "--device", "cpu", "--task.p", "7", "--model.width", "16", "--model.d-model", "8", "--eval-every", "2"]


def groklab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GROKLAB, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_presets_lists_every_preset() -> None:
    result = groklab("presets")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == list(PRESETS)
    assert all(PRESETS[line.split()[0]].description in line for line in lines)


def test_help_and_usage() -> None:
    result = groklab("train", "--help")
    assert result.returncode == 0 and "--task.train-frac" in result.stdout and "groklab train --preset mlp" in result.stdout
    bare = groklab()
    assert bare.returncode == 2 and "usage" in bare.stdout
    listed = {line.split()[0] for line in bare.stdout.splitlines() if line.startswith("  ")}
    assert listed == set(build_parser()), "the usage lists every command, and no other"


def test_train_then_rerun_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = groklab("train", "--preset", "mlp", "--out", str(out), "--steps", "4", *SMALL)
    assert result.returncode == 0, result.stderr
    assert "status finished after 4 steps" in result.stdout and str(out) in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4
    fit = summary["steps_to_train_acc_99"]  # 4 steps: val never reaches 0.99; the line says what train did
    said = f"train acc reached 0.99 at step {fit}" if fit is not None else "neither train nor val acc reached 0.99"
    assert f"not grokked: {said}" in result.stdout and "None" not in result.stdout
    before = hash_tree(out)
    again = groklab("train", "--preset", "mlp", "--out", str(out), "--steps", "4", *SMALL, "--quiet")
    assert again.returncode == 0 and again.stdout.strip() == str(out)
    assert hash_tree(out) == before  # a finished run is not retrained
    resumed = groklab("resume", str(out), "--quiet")
    assert resumed.returncode == 0 and hash_tree(out) == before


def test_bad_input_through_the_console_script(tmp_path: Path) -> None:
    """The installed `groklab` script reports a mistake as the module does (tests/test_bad_input.py has every case)."""
    result = groklab("train", "--preset", "nope", "--out", str(tmp_path / "new"))
    assert result.returncode == 2 and result.stdout == "" and "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "'nope'" in result.stderr
    assert not (tmp_path / "new").exists()


def test_ls_piped_fits_80_columns_without_cutting_cells(tmp_path: Path) -> None:
    """Piped (or in an 80-column terminal) `groklab ls` keeps the key columns whole and every line within 80 characters."""
    import os

    from groklab.sweep import expand, parse_spec
    from groklab.sweep.table import RunsTable

    spec = 'seeds = 2\n[grid]\n"task.op" = ["x+y", "x/y"]\n"task.train_frac" = [0.3, 0.5]\n"optim.weight_decay" = [0.1, 1.0]\n'
    runs = expand(parse_spec(spec, "spec.toml"))
    table = RunsTable(tmp_path, runs)
    for i, run in enumerate(runs):
        grokked = i % 3 != 0
        final = {"train/acc": 1.0, "val/acc": 0.5 + i / 100, "test/acc": 0.49 + i / 100}
        summary = {"status": ["finished", "interrupted"][i % 2], "steps": 100_000, "steps_to_train_acc_99": 1200 + i, "final": final}
        table.update(run.run_id, summary | ({"steps_to_val_acc_99": 48_000 + i, "grok_delay": 46_800} if grokked else {}))
    table.write()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    result = subprocess.run([GROKLAB, "ls", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    assert "…" not in result.stdout
    header = lines[1].split()
    assert header[0] == "run" and {"status", "steps", "fit@", "grok@", "delay", "val", "test", "op", "frac", "wd"} <= set(header)
    for i, run in enumerate(runs):
        row = next(line.split() for line in lines if line.startswith(run.run_id))
        cells = dict(zip(header, row, strict=True))
        assert cells["status"] == ["finished", "interrupted"][i % 2] and cells["steps"] == "100000"
        assert cells["grok@"] == (str(48_000 + i) if i % 3 else "—") and cells["test"] == f"{0.49 + i / 100:.3f}"


def test_sweep_stats_table_keeps_every_cell_whole_in_80_columns() -> None:
    """Three axes, a censored group: every line fits 80 columns, nothing is cut to "…", the ± is the t-interval's half."""
    import io

    from rich.console import Console

    from groklab.cli import stats_table
    from groklab.stats import group_stats, mean_ci

    grok = [1350, 1360, 1370]
    rows = [{"task.op": "x+y", "optim.weight_decay": 1.0, "task.train_frac": 0.5, "status": "finished", "steps": 3000,
             "steps_to_val_acc_99": s, "test/acc": 0.99} for s in grok]  # fmt: skip
    rows += [{"task.op": "x^2+xy+y^2+x", "optim.weight_decay": 0.1, "task.train_frac": 0.5, "status": "finished", "steps": 3000,
              "steps_to_val_acc_99": None, "test/acc": 0.3} for _ in grok]  # fmt: skip
    axes = ["task.op", "optim.weight_decay", "task.train_frac"]
    out = io.StringIO()
    Console(file=out, width=80).print(stats_table(group_stats(rows, axes), axes))
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in out.getvalue()
    est = mean_ci(grok)
    x_plus_y = next(line for line in lines if line.split()[:1] == ["x+y"])
    assert f"1360 ± {(est.hi - est.lo) / 2:.0f}" in x_plus_y and "0.990" in x_plus_y
    censored = next(line for line in lines if line.split()[:1] == ["x^2+xy+y^2+x"])
    assert "0/3" in censored and ">3000" in censored
