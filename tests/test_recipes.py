"""The recipe framework: every bundled spec is a valid sweep, the CLI's bad input is one line, nothing is damaged.

Each recipe's scientific result is asserted by its slow test (tests/test_recipes_*.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import hash_tree

from groklab.cli import main
from groklab.experiments.recipes import MODULES, SCALES, get_recipe, spec_text
from groklab.sweep import expand, parse_spec

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
        for part in recipe.parts:
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
