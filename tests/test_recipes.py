"""The recipe framework: every bundled spec is a valid sweep, the CLI's bad input is one line, nothing is damaged.

Each recipe's scientific result is asserted by its slow test (tests/test_recipes_*.py)."""

from __future__ import annotations

import json
import os
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest
from conftest import hash_tree

from groklab.cli import main
from groklab.experiments.recipes import MODULES, SCALES, get_recipe, spec_text
from groklab.sweep import expand, parse_spec
from groklab.sweep.locks import run_lock_path, try_lock
from groklab.sweep.runner import prepare_sweep_dir

BUILT = [name for name in MODULES if (Path(__file__).parents[1] / "src/groklab/experiments/recipes/specs" / name).is_dir()]


def groklab(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process: (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", BUILT)
def test_bundled_specs_expand_at_every_scale(name: str) -> None:
    recipe = get_recipe(name)
    assert recipe.parts and recipe.description
    for scale in SCALES:
        assert set(recipe.parts_at(scale)) <= set(recipe.parts)
        for part in recipe.parts_at(scale):
            where = f"{name}/{part}-{scale}.toml"
            runs = expand(parse_spec(spec_text(recipe, part, scale), where), where)
            assert runs, where
            assert len({r.run_id for r in runs}) == len(runs), f"{where}: two runs share a config"


@pytest.mark.parametrize("name", BUILT)
def test_paper_scale_is_not_smaller_than_quick(name: str) -> None:
    """`paper` is the paper's setting: at least the quick scale's budget and number of runs."""
    recipe = get_recipe(name)
    for part in recipe.parts:
        quick, paper = (expand(parse_spec(spec_text(recipe, part, s), s), s) for s in ("quick", "paper"))
        assert len(paper) >= len(quick)
        assert max(r.config.steps for r in paper) >= max(r.config.steps for r in quick)


def test_list_and_print_spec(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = groklab(capsys, "recipe", "--list")
    assert code == 0
    assert {line.split()[0] for line in out.splitlines()} == set(BUILT)
    code, out, _ = groklab(capsys, "recipe", "power-fig1", "--print-spec", "sweep", "--scale", "paper")
    assert code == 0
    assert parse_spec(out, "printed").preset == "power-fig1"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["no-such-recipe", "--out", "{out}"], "unknown recipe 'no-such-recipe'"),
        (["power-fig1", "--out", "{out}", "--scale", "huge"], "--scale 'huge' is not valid"),
        (["power-fig1", "--out", "{existing}"], "is not a recipe directory"),
        (["power-fig1", "--out", "{recipe}", "--scale", "paper"], "holds recipe 'power-fig1' at scale 'quick'"),
        (["power-fig1", "--out", "{out}", "--workers", "two"], "--workers 'two' is not valid"),
        (["power-fig1", "--print-spec", "nope"], "--print-spec 'nope' is not a part"),
        (["structural", "--print-spec", "dyck", "--scale", "faithful"], "the faithful scale of structural runs tense-inflection only"),
        (["power-fig1"], "needs --out"),
        (["power-fig1", "power-fig2", "--out", "{out}"], "takes one NAME, got 2"),
        (["power-fig1", "--out", "{out}", "--bogus", "1"], "--bogus"),
    ],
)
def test_bad_recipe_input_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "recipe.json").write_text(json.dumps({"recipe": "power-fig1", "scale": "quick", "parts": ["sweep"]}))
    before = hash_tree(tmp_path)
    paths = {"out": str(tmp_path / "new"), "existing": str(existing), "recipe": str(recipe)}
    code, out, err = groklab(capsys, "recipe", *[a.format(**paths) for a in args])
    assert code == 2 and out == "", err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert hash_tree(tmp_path) == before


def test_a_recipe_whose_runs_another_sweep_holds_stops_in_one_line_before_its_analysis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A recipe rerun while every run of its part is held by another live process (a second sweep on the same dir):
    nothing of the part finished here, so the recipe says so in one line (exit 2) and writes no findings or figures,
    instead of analysing a part without its runs."""
    recipe, part = get_recipe("modelwise"), "width"
    text = spec_text(recipe, part, "quick")
    spec = parse_spec(text, f"{part}-quick.toml")
    out = tmp_path / "recipe"
    out.mkdir()
    (out / "recipe.json").write_text(json.dumps({"recipe": recipe.name, "scale": "quick", "parts": [part]}))
    prepare_sweep_dir(out / part, spec, text)  # as the first, interrupted run of this recipe left it
    runs = expand(spec, f"{part}-quick.toml")
    with ExitStack() as held:
        assert all(held.enter_context(try_lock(run_lock_path(out / part, r.run_id))) for r in runs)
        code, stdout, err = groklab(capsys, "recipe", recipe.name, "--out", str(out), "--workers", "1", "--quiet")
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # beside the sweep's "running elsewhere" lines
    assert len(errors) == 1 and errors[0].startswith(f"error: {len(runs)} run(s) of modelwise/{part} did not finish ("), err
    assert f"held by {socket.gethostname()} {os.getpid()}" in errors[0]
    assert not (out / "findings.json").exists() and not (out / "figures").exists()
    assert not any((out / part / "runs").iterdir())  # no run was trained here
