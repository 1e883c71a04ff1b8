"""The built wheel works on its own: installed into a fresh virtualenv, run from outside the source tree.

Slow (about a minute): builds the sdist and the wheel, installs the wheel into a new venv and runs
`groklab train`, `groklab recipe --list` and `groklab report` with the venv's own `groklab`, checking
that every file the package reads at run time (recipe specs, Plotly's JavaScript) came along.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from groklab.config import apply_overrides
from groklab.experiments.recipes import MODULES, SCALES, get_recipe
from groklab.presets import get_preset
from groklab.train import train

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "groklab"
BIN = "Scripts" if sys.platform == "win32" else "bin"


def run(args: list[str | Path], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def pyproject_version() -> str:
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version, "pyproject.toml has no version"
    return version.group(1)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | dict[str, str]]:
    """Build the wheel, install it into a fresh venv, and return the venv's paths, a work dir and an env."""
    tmp = tmp_path_factory.mktemp("packaging")
    # No PYTHONPATH: nothing may reach the source tree except what the test's own environment installed.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    # `python -m build` as a user would run it: the sdist first, then the wheel built from the unpacked
    # sdist, so the wheel also proves the sdist is complete (and no stale build/ folder in the tree leaks
    # into it). --no-isolation: an isolated build would download setuptools into a fresh environment,
    # which needs the network; the test's environment already has the build backend.
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", ROOT], cwd=ROOT, env=env, timeout=300)
    (wheel,) = (tmp / "dist").glob("groklab-*.whl")

    # --system-site-packages: torch, numpy, plotly, ... come from the test's environment (installing them
    # again would take minutes and the network). That environment also holds the editable install of this
    # source tree, so the wheel must be installed into the venv itself (--force-reinstall: pip must not
    # call the editable install "already satisfied") and must shadow it: the venv's site-packages comes
    # before the system's on sys.path. The fixture checks that below, and every command runs outside ROOT.
    # --without-pip: the system pip, run by the venv's python, installs into the venv (and saves seconds).
    prefix = tmp / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", prefix], cwd=tmp, env=env)
    python = prefix / BIN / ("python.exe" if sys.platform == "win32" else "python")
    run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--force-reinstall", "--quiet", wheel], cwd=tmp, env=env, timeout=300)
    work = tmp / "work"
    work.mkdir()
    return {"prefix": prefix, "python": python, "groklab": prefix / BIN / "groklab", "wheel": wheel, "work": work, "env": env}


def test_wheel_holds_every_package_file(venv: dict) -> None:
    """Every non-Python file under src/groklab (recipe specs today) is inside the wheel, and so is every module."""
    with zipfile.ZipFile(venv["wheel"]) as wheel:
        names = set(wheel.namelist())
    expected = {
        str(path.relative_to(PACKAGE.parent)).replace(os.sep, "/")
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo") and not path.name.startswith(".")
    }
    assert any(name.endswith(".toml") for name in expected)
    assert expected <= names, sorted(expected - names)


def test_the_wheels_copy_is_what_runs(venv: dict) -> None:
    """groklab imports from the venv (not the editable source tree), at pyproject's version, with every recipe spec readable."""
    script = (
        "import json, groklab\n"
        "from groklab.experiments.recipes import MODULES, SCALES, get_recipe, spec_text\n"
        "specs = {f'{n}/{p}-{s}': len(spec_text(get_recipe(n), p, s)) for n in MODULES for s in SCALES for p in get_recipe(n).parts_at(s)}\n"
        "print(json.dumps({'file': groklab.__file__, 'version': groklab.__version__, 'specs': specs}))\n"
    )
    out = json.loads(run([venv["python"], "-c", script], cwd=venv["work"], env=venv["env"]))
    assert Path(out["file"]).resolve().is_relative_to(venv["prefix"].resolve()), out["file"]
    assert not Path(out["file"]).resolve().is_relative_to(ROOT)
    assert out["version"] == pyproject_version()
    # The `groklab` executable runs the venv's python, so it imports this same copy.
    assert str(venv["python"]) in "\n".join(venv["groklab"].read_text().splitlines()[:3])  # (a /bin/sh trampoline if the path is long)
    assert len(out["specs"]) == sum(len(get_recipe(name).parts_at(scale)) for name in MODULES for scale in SCALES)
    assert all(size > 0 for size in out["specs"].values())


@pytest.fixture(scope="module")
def trained(venv: dict) -> Path:
    out = venv["work"] / "runs" / "mlp"
    # 300 steps on one thread: seconds, enough for checkpoints, metrics and a summary.
    run(
        [venv["groklab"], "train", "--preset", "mlp", "--out", "runs/mlp", "--steps", "300", "--threads", "1", "--quiet"],
        venv["work"],
        venv["env"],
    )
    return out


def test_train_from_the_wheel(venv: dict, trained: Path, tmp_path: Path) -> None:
    summary = json.loads((trained / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 300
    # The installed package trains as the source tree does: the same final metrics.
    here = train(apply_overrides(get_preset("mlp"), {"steps": 300, "threads": 1}), tmp_path / "here", progress=False)
    assert summary["final"] == pytest.approx(here["final"], rel=1e-6)
    assert json.loads((trained / "config.json").read_text())["groklab_version"] == pyproject_version()


def test_recipe_list_from_the_wheel(venv: dict) -> None:
    out = run([venv["groklab"], "recipe", "--list"], venv["work"], venv["env"])
    listed = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(MODULES) <= listed, sorted(set(MODULES) - listed)


def test_report_from_the_wheel_inlines_plotly(venv: dict, trained: Path) -> None:
    from plotly.offline import get_plotlyjs

    # --no-analysis: the checkpoint analysis (Fourier, embeddings, norms) is 10-20 s of computation that reads
    # no package file (its modules are checked above); the page, its figures and the Plotly script are the same path.
    run([venv["groklab"], "report", "runs/mlp", "--no-analysis", "--quiet"], venv["work"], venv["env"])
    page = (trained / "report" / "index.html").read_text()
    assert get_plotlyjs() in page  # the whole bundle, inlined (the venv's plotly is this environment's)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page), "the page loads a script from elsewhere"
    assert list((trained / "report").glob("*.png"))
