"""The faithful scale (the papers' own settings, cuts stated), and the liu-toy and nanda-progress recipes on tiny budgets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groklab.cli import main
from groklab.experiments import recipes
from groklab.experiments.recipes import MODULES, get_recipe, run_recipe, spec_text
from groklab.experiments.recipes.toy import HELD_OUT_ACC, critical_fraction
from groklab.sweep import parse_spec


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_faithful_spec_states_its_cuts(name: str) -> None:
    recipe = get_recipe(name)
    for part in recipe.parts_at("faithful"):
        raw = parse_spec(spec_text(recipe, part, "faithful"), part).raw
        assert raw.get("cuts") and all(isinstance(c, str) and c for c in raw["cuts"]), f"{name}/{part}-faithful.toml"


def test_published_settings_are_kept_where_the_issue_names_them() -> None:
    parity = parse_spec(spec_text(get_recipe("parity"), "sweep", "faithful"), "parity").fixed
    assert (parity["loss"], parity["optim.name"], parity["optim.lr"], parity["optim.batch_size"]) == ("hinge", "sgd", 0.1, 32)
    assert parity["optim.weight_decay"] == 0.01 and round(1200 * parity["task.train_frac"]) == 1000
    for name in ("avoid-grokking", "slingshot", "stablemax", "nanda-progress"):
        assert parse_spec(spec_text(get_recipe(name), get_recipe(name).parts[0], "faithful"), name).preset == "nanda", name
    digits = parse_spec(spec_text(get_recipe("omnigrok-digits"), "alpha", "faithful"), "digits")
    assert digits.fixed["loss"] == "mse" and 8.0 in digits.zipped["model.init_scale"]
    grokfast = parse_spec(spec_text(get_recipe("grokfast"), "sweep", "faithful"), "grokfast")  # the released README's commands
    assert (grokfast.fixed["optim.name"], grokfast.fixed["model.norm"], grokfast.fixed["model.activation"]) == ("adam", "pre", "gelu")
    arms = list(zip(grokfast.zipped["optim.grokfast"], grokfast.zipped["optim.lr"], grokfast.zipped["optim.weight_decay"], strict=True))
    assert {("none", 1e-3, 0.0), ("ema", 1e-3, 0.005), ("ma", 1e-3, 0.01)} <= set(arms)


def test_unknown_scale_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipe", "parity", "--scale", "huge", "--print-spec", "sweep"]) == 2
    err = capsys.readouterr().err.strip()
    assert "quick, faithful, paper" in err and len(err.splitlines()) == 1


def test_critical_fraction_hand_worked() -> None:
    ok, no = HELD_OUT_ACC, 0.5
    assert critical_fraction({0.2: [no, no], 0.4: [ok, ok], 0.6: [ok, no], 0.8: [ok, ok]}) == 0.8  # 0.6 splits 1-1: not most
    assert critical_fraction({0.2: [no, no, no], 0.4: [ok, ok, no], 0.6: [ok, ok, ok]}) == 0.4
    assert critical_fraction({0.2: [ok], 0.4: [no]}) is None  # the largest fraction fails: no fraction from which on


TINY = {
    ("liu-toy", "fraction"): 'preset = "liu-toy"\nseeds = 1\ncuts = ["tiny budget for a test"]\n[set]\nsteps = 40\neval_every = 10\n'
    '"task.val_frac" = 0.05\nthreads = 1\n[grid]\n"task.train_frac" = [0.4, 0.8]\n',
    ("liu-toy", "lr-lr"): 'preset = "liu-toy"\nseeds = 1\n[set]\nsteps = 20\neval_every = 10\nthreads = 1\n[grid]\n'
    '"optim.embed_lr" = [1e-3, 1e-2]\n"optim.lr" = [1e-4, 1e-3]\n',
    ("nanda-progress", "sweep"): 'preset = "mlp"\nseeds = 1\ncuts = ["tiny"]\n[set]\n"task.p" = 23\nsteps = 40\neval_every = 10\n'
    'analysis = "fourier,norms"\nanalysis_every = 1\n"model.width" = 32\nthreads = 1\n',
}


@pytest.mark.parametrize("name", [pytest.param("liu-toy", marks=pytest.mark.slow), "nanda-progress"])  # liu-toy: six runs
def test_recipe_end_to_end_on_a_tiny_budget(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recipes, "spec_text", lambda recipe, part, scale: TINY[(recipe.name, part)])
    numbers = run_recipe(name, tmp_path / name, scale="faithful", workers=1, quiet=True)
    saved = json.loads((tmp_path / name / "findings.json").read_text())
    assert saved == json.loads(json.dumps(numbers))
    assert saved["scale"] == "faithful" and saved["headline"]
    assert saved["cuts"][get_recipe(name).parts[0]]  # the spec's cuts reach findings.json
    assert {c["verdict"] for c in saved["claims"]} <= {"reproduced", "partly", "not reproduced", "not yet run"} and saved["claims"]
    page = (tmp_path / name / "report" / "index.html").read_text()
    # the page leads with the claims and figures, then a row per setting; the flattened findings are folded away
    assert page.index("Claims") < page.index("Figures") < page.index("steps to 99% val") < page.index("<details>")
    if name == "liu-toy":
        assert "critical_fraction" in saved and set(saved["fraction"]["per_fraction"]) == {"0.4", "0.8"}
        assert sum(saved["lr-lr"]["counts"].values()) == 4
    else:
        assert len(saved["per_seed"]) == 1 and "restricted_before_val" in saved
