"""Recipes omnigrok-digits, omnigrok-modular, liu-phases and modelwise, end to end at their quick scale.

Each runs the bundled quick sweeps (fixed seeds) and asserts the qualitative result from findings.json: the
phenomenon where it should appear and its absence where it should not.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from groklab.experiments.recipes import run_recipe
from groklab.experiments.recipes.modelwise import MARGIN, peak


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
    # LU: the smallest held norm cannot fit train; test loss has its minimum inside the range (U) and the
    # test-train gap at the largest norm is many times that at the best one.
    assert numbers["lu_small_norm_underfits"]
    assert numbers["lu_test_u_shaped"]
    assert numbers["lu_overfits_at_large_norm"]
    assert (tmp_path / "digits" / "figures" / "omnigrok-digits_lu.png").is_file()


@pytest.mark.slow
def test_omnigrok_modular_holding_the_norm_small_shortens_the_grokking_delay(tmp_path: Path) -> None:
    numbers = findings("omnigrok-modular", tmp_path / "modular")
    s = by_setting(numbers)
    free, large, held = s[(1.0, 0.0)], s[(4.0, 0.0)], s[(4.0, 0.1)]
    assert all(x["delay"]["censored"] == 0 for x in (free, large, held))
    # Modular addition groks at alpha 1 already; held at 0.4x alpha 1's initial norm the delay shrinks by half or more.
    assert held["delay"]["mean"] <= 0.5 * min(free["delay"]["mean"], large["delay"]["mean"])
    # LU: held at the initial norm (the largest) it memorizes: test loss far above its minimum, inside the range.
    assert numbers["lu_test_u_shaped"]
    assert numbers["lu"][-1]["test_acc"] < 0.5 < max(p["test_acc"] for p in numbers["lu"])
    assert numbers["lu_small_norm_underfits"]


@pytest.mark.slow
def test_liu_phases_weight_decay_separates_grokking_from_memorization(tmp_path: Path) -> None:
    numbers = findings("liu-phases", tmp_path / "phases")
    lr_wd = numbers["lr-wd"]
    phase = {(c["optim.lr"], c["optim.weight_decay"]): c["phase"] for c in lr_wd["cells"]}
    assert len(phase) == 16 and None not in phase.values()
    assert lr_wd["counts"]["grokking"] >= 1
    # Without weight decay nothing generalizes within the budget; the mlp preset's setting groks.
    assert all(p in ("memorization", "confusion") for (lr, wd), p in phase.items() if wd == 0)
    assert phase[(3e-3, 1.0)] == "grokking"
    embed = numbers["embed-decoder"]
    assert len(embed["cells"]) == 9
    assert sum(1 for n in embed["counts"].values() if n) >= 2
    assert (tmp_path / "phases" / "figures" / "phase_lr_wd.png").is_file()
    assert (tmp_path / "phases" / "figures" / "phase_embed_decoder.png").is_file()


WIDTHS = [8, 16, 32, 64, 128]


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([1.0, 1.2, 2.0, 1.1, 0.5], (32, 2.0)),  # a peak at width 32: 2x the larger of the side minima (1.0 left, 0.5 right)
        ([5.0, 4.0, 3.0, 2.0, 1.0], (16, 0.8)),  # monotone (wider is better): every interior point is below a side
        ([2.0, 1.0, 0.5, 1.0, 2.0], (16, 0.5)),  # a valley, the opposite of model-wise grokking
        ([1.0, 1.03, 0.99, 1.02, 1.0], (16, 1.03)),  # noise of a few percent stays under the margin
    ],
    ids=["peak", "monotone", "valley", "noise"],
)
def test_modelwise_peak_rule_on_hand_made_curves(losses: list[float], expected: tuple[int, float]) -> None:
    """`peak` (the rule behind non_monotone_steps and strongest_peak): only a real interior peak clears MARGIN."""
    width, ratio = peak(WIDTHS, losses)
    assert (width, ratio) == (expected[0], pytest.approx(expected[1]))
    assert (ratio > MARGIN) == (expected[1] > MARGIN)


@pytest.mark.slow
def test_modelwise_test_loss_is_non_monotone_in_width_on_the_way_to_grokking(tmp_path: Path) -> None:
    numbers = findings("modelwise", tmp_path / "modelwise")
    widths, final = numbers["widths"], numbers["final_test_loss"]
    # Mid-training an intermediate width is worse than both a narrower and a wider MLP ...
    assert numbers["non_monotone_steps"]
    peak = numbers["strongest_peak"]
    assert widths[0] < peak["width"] < widths[-1] and peak["ratio"] > numbers["peak_margin"]
    # ... while at the end the widest has grokked (lowest test loss) and the narrowest never fitted.
    assert numbers["best_final_width"] >= 256
    assert final[str(widths[0])] > 10 * final[str(numbers["best_final_width"])]
