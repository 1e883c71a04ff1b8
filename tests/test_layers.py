"""The architecture of DESIGN.md, checked: layers only point down and no modules import each other in a circle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import groklab

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    """import-linter's contracts in pyproject.toml: the layers of DESIGN.md and no circles between sibling modules."""
    result = subprocess.run([Path(sys.executable).with_name("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "2 kept, 0 broken" in result.stdout


def test_every_module_has_a_layer() -> None:
    """A new top-level module must be placed in a layer, or the contract would not constrain it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c["layers"] for c in config["contracts"] if c["type"] == "layers")
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    package = Path(groklab.__file__).parent
    modules = {f"groklab.{p.stem}" for p in package.glob("*.py") if p.stem not in ("__init__", "__main__")}
    modules |= {f"groklab.{p.parent.name}" for p in package.glob("*/__init__.py")}
    assert modules == placed
