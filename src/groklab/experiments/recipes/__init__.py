"""Recipes: a published figure in one command. `groklab recipe NAME --out DIR [--scale quick|paper]`.

A recipe is one or more bundled sweep specs (``specs/<name>/<part>-<scale>.toml``, ordinary sweep TOML a
user can copy and edit) plus an `analyze` function that turns the finished sweeps into figures and a
``findings.json`` holding the headline numbers. The output directory is self-explaining::

    DIR/recipe.json          which recipe, scale and parts; the groklab version
    DIR/<part>/              an ordinary sweep dir per part (spec.toml, runs.parquet, runs/<id>/)
    DIR/findings.json        {"recipe", "scale", "headline": one sentence, ...the recipe's numbers}
    DIR/figures/             one PNG per figure, and figures.json (the figures' data, for `groklab report`)
    DIR/report/index.html    the recipe page: headline, findings, figures, links to each part's sweep report

Rerunning the same command skips finished runs (sweeps resume) and rebuilds the figures, so an
interrupted recipe is finished by running it again. `quick` fits a 2-core laptop CPU in minutes with
smaller budgets; `paper` uses the paper's settings (hours to days on a CPU; meant for a GPU or a cluster).

A new recipe is one module here with a module-level ``RECIPES`` list, its spec files, and a line in
``MODULES`` below.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from groklab.config import VERSION
from groklab.errors import UserError
from groklab.report.plots import Figure

SCALES = ("quick", "paper")

MODULES: dict[str, str] = {
    "power-fig1": "power",
    "power-fig2": "power",
    "power-interventions": "power",
    "op-difficulty": "power",
    "omnigrok-digits": "omnigrok",
    "omnigrok-modular": "omnigrok",
    "liu-phases": "phases",
    "modelwise": "modelwise",
    "avoid-grokking": "avoid",
    "slingshot": "slingshot",
    "grokfast": "grokfast",
    "stablemax": "stablemax",
    "parity": "parity",
}
"""Recipe name -> the module of this package that defines it (imported on use)."""


@dataclass(frozen=True)
class Findings:
    """What `analyze` returns: the headline numbers (JSON-able, with a one-sentence "headline") and figures."""

    numbers: dict[str, Any]
    figures: list[Figure]


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    """One line: which paper's figure, on what."""
    parts: tuple[str, ...]
    """Sweep parts, each a spec file ``specs/<name>/<part>-<scale>.toml`` run into ``DIR/<part>``."""
    analyze: Callable[[dict[str, Path], str], Findings]
    """(part -> sweep dir, scale) -> Findings; reads runs.parquet and run dirs, never trains."""


def get_recipe(name: str) -> Recipe:
    if name not in MODULES:
        raise UserError(f"unknown recipe {name!r}: expected one of {', '.join(MODULES)}")
    try:
        module = importlib.import_module(f"{__name__}.{MODULES[name]}")
        return next(r for r in module.RECIPES if r.name == name)
    except (ModuleNotFoundError, StopIteration):
        raise UserError(f"recipe {name!r} is not available in this installation of groklab") from None


def spec_text(recipe: Recipe, part: str, scale: str) -> str:
    """The bundled spec TOML of one part at one scale."""
    return (resources.files(__name__) / "specs" / recipe.name / f"{part}-{scale}.toml").read_text()


def run_recipe(
    name: str,
    out: Path,
    *,
    scale: str = "quick",
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or finish) every sweep of recipe `name` into `out`, then write its findings, figures and report.

    Returns the findings dict (also in out/findings.json)."""
    from groklab.report import report_recipe
    from groklab.report.plots import save_png
    from groklab.runio import atomic_write_json
    from groklab.sweep import expand, parse_spec, run_sweep

    recipe = get_recipe(name)
    if scale not in SCALES:
        raise UserError(f"--scale {scale!r} is not valid: expected one of {', '.join(SCALES)}")
    marker = out / "recipe.json"
    meta = {"recipe": name, "scale": scale, "parts": list(recipe.parts), "description": recipe.description, "groklab_version": VERSION}
    if marker.is_file():
        old = json.loads(marker.read_text())
        if (old.get("recipe"), old.get("scale")) != (name, scale):
            raise UserError(f"{out} holds recipe {old.get('recipe')!r} at scale {old.get('scale')!r}: choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a recipe directory: choose an empty or new --out")
    texts = {part: spec_text(recipe, part, scale) for part in recipe.parts}
    for part, text in texts.items():  # every spec is checked before anything runs
        expand(parse_spec(text, f"{name}/{part}-{scale}.toml"), f"{name}/{part}-{scale}.toml")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, meta)
    dirs: dict[str, Path] = {}
    for part, text in texts.items():
        dirs[part] = out / part
        spec_file = out / f".{part}-{scale}.toml"  # run_sweep reads a file; the sweep keeps its own copy as spec.toml
        spec_file.write_text(text)
        if not quiet:
            print(f"[{name}] sweep {part} ({scale}) -> {dirs[part]}")
        result = run_sweep(spec_file, dirs[part], backend=backend, workers=workers, address=address, progress=not quiet)
        spec_file.unlink()
        failed = [r["run_id"] for r in result.rows if r.get("status") == "failed"]
        if failed:
            raise UserError(f"{len(failed)} run(s) of {name}/{part} failed ({', '.join(failed[:3])}): see their run dirs, then rerun")
    findings = recipe.analyze(dirs, scale)
    numbers = {"recipe": name, "scale": scale, **findings.numbers}
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for fig in findings.figures:
        save_png(fig, fig_dir / f"{fig.key}.png")
    atomic_write_json(fig_dir / "figures.json", [asdict(f) for f in findings.figures])
    atomic_write_json(out / "findings.json", numbers)
    report_recipe(out, quiet=quiet)
    return numbers


RECIPE_HELP = """\
usage: groklab recipe NAME --out DIR [--scale quick|paper] [--workers N] [--backend local|ray] [--address ADDR] [--quiet]
       groklab recipe --list

Reproduce a published result: run the recipe's bundled sweep(s) into DIR/<part>/, then write
DIR/findings.json (the headline numbers), DIR/figures/*.png and DIR/report/index.html.
Rerunning the same command finishes an interrupted recipe (finished runs are skipped).

options:
  --scale quick|paper  quick (default): minutes on a laptop CPU, smaller budgets; paper: the paper's settings
  --workers N          runs at once (default: all cores)
  --backend local|ray  as for groklab sweep; --address ADDR joins an existing Ray cluster
  --list               list the recipes with one line each
  --print-spec PART    print the bundled sweep spec of PART at --scale (to copy and edit) and exit
  --quiet              no progress bars; print DIR/findings.json's path at the end

examples:
  groklab recipe power-fig1 --out recipes/fig1
  groklab recipe grokfast --out recipes/grokfast --workers 2
  groklab recipe power-fig2 --out /mnt/nfs/fig2 --scale paper --backend ray --address auto
  groklab recipe omnigrok-digits --print-spec sweep --scale paper > mine.toml
"""


def command(args: list[str]) -> None:
    """`groklab recipe`."""
    from groklab.sweep import split_positional

    if "--help" in args or "-h" in args:
        print(RECIPE_HELP)
        return
    if "--list" in args:
        for name in MODULES:
            try:
                print(f"{name:20s} {get_recipe(name).description}")
            except UserError:
                continue  # a recipe whose module is not installed is simply not offered
        return
    from groklab.cli import int_option, parse_options

    options = {"out", "scale", "workers", "backend", "address", "print-spec"}
    positional, rest = split_positional(args, options)
    known, extra = parse_options(rest, {"quiet"}, options)
    if extra:
        raise UserError(f"unknown option --{next(iter(extra))}: see groklab recipe --help")
    if len(positional) != 1:
        raise UserError(f"groklab recipe takes one NAME, got {len(positional)}: see groklab recipe --list")
    recipe = get_recipe(positional[0])
    scale = str(known.get("scale", "quick"))
    if scale not in SCALES:
        raise UserError(f"--scale {scale!r} is not valid: expected one of {', '.join(SCALES)}")
    if "print-spec" in known:
        part = str(known["print-spec"])
        if part not in recipe.parts:
            raise UserError(f"--print-spec {part!r} is not a part of {recipe.name}: expected one of {', '.join(recipe.parts)}")
        print(spec_text(recipe, part, scale), end="")
        return
    if "out" not in known:
        raise UserError("groklab recipe needs --out DIR")
    workers = int_option(known, "workers")
    out = Path(str(known["out"]))
    quiet = bool(known.get("quiet"))
    numbers = run_recipe(
        recipe.name,
        out,
        scale=scale,
        backend=str(known.get("backend", "local")),
        workers=workers,
        address=str(known["address"]) if "address" in known else None,
        quiet=quiet,
    )
    if quiet:
        print(out / "findings.json")
    else:
        print(f"\n{recipe.name} ({scale}): {numbers.get('headline', '')}")
        print(f"findings: {out / 'findings.json'}  report: {out / 'report' / 'index.html'}")


__all__ = ["MODULES", "SCALES", "Findings", "Recipe", "command", "get_recipe", "run_recipe", "spec_text"]
