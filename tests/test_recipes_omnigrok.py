"""Recipes omnigrok-digits, omnigrok-modular, liu-phases and modelwise, end to end at their quick scale.

Each runs the bundled quick sweeps (fixed seeds) and asserts the qualitative result from findings.json: the
phenomenon where it should appear and its absence where it should not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groklab.experiments.recipes import run_recipe


def findings(name: str, out: Path) -> dict:
    numbers = run_recipe(name, out, scale="quick", workers=2, quiet=True)
    assert numbers == json.loads((out / "findings.json").read_text())
    assert (out / "report" / "index.html").is_file()
    return numbers


def by_setting(numbers: dict) -> dict[tuple[float, float], dict]:
    return {(s["init_scale"], s["norm_constraint"]): s for s in numbers["settings"]}


@pytest.mark.slow
def test_omnigrok_digits_large_init_delays_generalization_and_the_norm_constraint_removes_it(tmp_path: Path) -> None:
    numbers = findings("omnigrok-digits", tmp_path / "digits")
    s = by_setting(numbers)
    small, large, held = s[(1.0, 0.0)], s[(8.0, 0.0)], s[(8.0, 0.125)]
    assert all(x["delay"]["censored"] == 0 for x in (small, large, held))
    # alpha 8: validation trails the train fit by hundreds of steps; alpha 1 and alpha 8 on alpha 1's sphere do not.
    assert large["delay"]["mean"] >= 500
    assert small["delay"]["mean"] <= 200 and held["delay"]["mean"] <= 200
    # The held norm equals alpha 1's initial norm, and the free alpha 8 run starts 8x larger.
    assert large["initial_norm"] == pytest.approx(8 * small["initial_norm"], rel=1e-3)
    # LU: train loss falls as the held norm grows; test loss has its minimum inside the range (U).
    assert numbers["lu_train_falls_with_norm"]
    assert numbers["lu_test_u_shaped"]
    assert (tmp_path / "digits" / "figures" / "omnigrok-digits_lu.png").is_file()
