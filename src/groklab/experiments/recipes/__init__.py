"""Recipes: a published figure in one command. `groklab recipe NAME --out DIR [--scale quick|faithful|paper]`.

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
smaller budgets; `faithful` keeps the paper's model, optimizer, loss and data and cuts only budgets and seeds
(each cut listed in the spec and in findings.json); `paper` uses the paper's settings (hours to days on a CPU;
meant for a GPU or a cluster).

A new recipe is one module here with a module-level ``RECIPES`` list, its spec files, and a line in
``MODULES`` below.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groklab.config import VERSION
from groklab.errors import UserError
from groklab.report.plots import Figure
from groklab.stats import DONE

if TYPE_CHECKING:
    from groklab.sweep import PlannedRun

FINDINGS_SCHEMA = 1
"""Version of findings.json's layout (its `schema` key), which `groklab reproductions` checks before reading it."""
SCALES = ("quick", "faithful", "paper")
"""quick: minutes on a laptop CPU, often a stand-in model; faithful: the paper's own model, optimizer, loss and data,
budgets and seeds cut for a 2-core CPU with every cut listed in the spec's `cuts` (and findings.json); paper: as
published."""

MODULES: dict[str, str] = {
    "power-fig1": "power",
    "power-fig2": "power",
    "power-interventions": "power",
    "op-difficulty": "power",
    "omnigrok-digits": "omnigrok",
    "omnigrok-modular": "omnigrok",
    "liu-phases": "phases",
    "liu-toy": "toy",
    "nanda-progress": "progress",
    "modelwise": "modelwise",
    "avoid-grokking": "avoid",
    "slingshot": "slingshot",
    "grokfast": "grokfast",
    "stablemax": "stablemax",
    "parity": "parity",
    "structural": "structural",
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
    scale_parts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Scales that run only some parts (scale -> those parts, e.g. where the others cost too much on a CPU); the
    other scales run every part."""

    def parts_at(self, scale: str) -> tuple[str, ...]:
        return self.scale_parts.get(scale, self.parts)


def get_recipe(name: str) -> Recipe:
    if name not in MODULES:
        raise UserError(f"unknown recipe {name!r}: expected one of {', '.join(MODULES)}")
    try:
        module = importlib.import_module(f"{__name__}.{MODULES[name]}")
        return next(r for r in module.RECIPES if r.name == name)
    except (ModuleNotFoundError, StopIteration):
        raise UserError(f"recipe {name!r} is not available in this installation of groklab") from None


def check_scale(scale: str) -> None:
    if scale not in SCALES:
        raise UserError(f"--scale {scale!r} is not valid: expected one of {', '.join(SCALES)}")


def spec_text(recipe: Recipe, part: str, scale: str) -> str:
    """The bundled spec TOML of one part at one scale."""
    check_scale(scale)
    if part not in recipe.parts:
        raise UserError(f"--print-spec {part!r} is not a part of {recipe.name}: expected one of {', '.join(recipe.parts)}")
    if part not in recipe.parts_at(scale):
        raise UserError(
            f"--print-spec {part!r} has no {scale} spec: the {scale} scale of {recipe.name} runs {', '.join(recipe.parts_at(scale))} only"
        )
    return (resources.files(__name__) / "specs" / recipe.name / f"{part}-{scale}.toml").read_text()


def recipe_runs(recipe: Recipe, scale: str) -> dict[str, list[PlannedRun]]:
    """Every part's runs at `scale`, each spec expanded and validated (a bad one raises, naming its file)."""
    from groklab.sweep import expand, parse_spec

    check_scale(scale)
    return {
        part: expand(parse_spec(spec_text(recipe, part, scale), f"{recipe.name}/{part}-{scale}.toml"), f"{recipe.name}/{part}-{scale}.toml")
        for part in recipe.parts_at(scale)
    }


def run_recipe(
    name: str,
    out: Path,
    *,
    scale: str = "quick",
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    quiet: bool = False,
    pack: int | None = None,
) -> dict[str, Any]:
    """Run (or finish) every sweep of recipe `name` into `out`, then write its findings, figures and report.

    pack: as for run_sweep (seeds trained as ensembles of up to this many; None: on a GPU only).
    Returns the findings dict (also in out/findings.json)."""
    from groklab.experiments.claims import evaluate
    from groklab.report import report_recipe
    from groklab.report.plots import save_png
    from groklab.runio import atomic_write_json
    from groklab.sweep import parse_spec, run_sweep
    from groklab.sweep.packs import check_pack

    recipe = get_recipe(name)
    check_scale(scale)
    check_pack(pack)
    marker = out / "recipe.json"
    meta = {"recipe": name, "scale": scale, "parts": list(recipe.parts_at(scale)), "description": recipe.description, "groklab_version": VERSION}
    if marker.is_file():
        old = json.loads(marker.read_text())
        if (old.get("recipe"), old.get("scale")) != (name, scale):
            raise UserError(f"{out} holds recipe {old.get('recipe')!r} at scale {old.get('scale')!r}: choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not a recipe directory: choose an empty or new --out")
    texts = {part: spec_text(recipe, part, scale) for part in recipe.parts_at(scale)}
    recipe_runs(recipe, scale)  # every spec is checked before anything runs
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, meta)
    dirs: dict[str, Path] = {}
    for part, text in texts.items():
        dirs[part] = out / part
        spec_file = out / f".{part}-{scale}.toml"  # run_sweep reads a file; the sweep keeps its own copy as spec.toml
        spec_file.write_text(text)
        if not quiet:
            print(f"[{name}] sweep {part} ({scale}) -> {dirs[part]}")
        result = run_sweep(spec_file, dirs[part], backend=backend, workers=workers, address=address, progress=not quiet, pack=pack)
        spec_file.unlink()
        # Findings are made from finished runs only: a failed run, or one another sweep holds or left interrupted, stops here.
        unfinished = [r for r in result.rows if r.get("status") not in DONE]
        if unfinished:
            which = ", ".join(
                f"{r['run_id']} {'held by ' + result.elsewhere[r['run_id']] if r['run_id'] in result.elsewhere else r.get('status')}"
                for r in unfinished[:3]
            )
            raise UserError(f"{len(unfinished)} run(s) of {name}/{part} did not finish ({which}): see their run dirs, then rerun")
    findings = recipe.analyze(dirs, scale)
    numbers = {"recipe": name, "scale": scale, "schema": FINDINGS_SCHEMA, **findings.numbers}
    cuts = {part: parse_spec(text, part).raw.get("cuts", []) for part, text in texts.items()}
    if any(cuts.values()):
        numbers["cuts"] = cuts
    numbers["claims"] = evaluate(name, numbers)  # the published claims this recipe measures, judged on these numbers
    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for fig in findings.figures:
        save_png(fig, fig_dir / f"{fig.key}.png")
    atomic_write_json(fig_dir / "figures.json", [asdict(f) for f in findings.figures])
    atomic_write_json(out / "findings.json", numbers)
    report_recipe(out, quiet=quiet)
    return numbers


__all__ = ["MODULES", "SCALES", "Findings", "Recipe", "get_recipe", "recipe_runs", "run_recipe", "spec_text"]
