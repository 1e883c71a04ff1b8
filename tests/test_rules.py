"""The rules behind the recipes' headlines and claim verdicts, on hand-made points.

The recipe tests assert booleans the recipes compute (lu_test_u_shaped, non_monotone_steps, a run's phase, its loss
spikes, the censored medians); these pin each rule on inputs whose answer follows from its definition by hand, so a
broken rule cannot grade itself.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from groklab.analysis.phases import classify_phase, phase_boundaries
from groklab.analysis.spikes import loss_spikes
from groklab.experiments.recipes.modelwise import MARGIN, non_monotone_steps
from groklab.experiments.recipes.omnigrok import overfits_at_large_norm, small_norm_underfits, u_shaped
from groklab.stats import censored_median, first_step, median_interval

# Omnigrok LU: losses ordered from the smallest held norm to the largest.


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        ([3.0, 1.0, 0.5, 2.0, 4.0], True),  # a clear U: minimum 0.5 inside, both ends above it
        ([4.0, 3.0, 2.0, 1.0], False),  # monotone decreasing: the minimum is the largest norm
        ([1.0, 2.0, 3.0, 4.0], False),  # monotone increasing: the minimum is the smallest norm
        ([1.0, 1.0, 2.0], False),  # the smallest norm ties the minimum: not above it
        ([1.01, 0.99, 1.02, 0.98], False),  # flat noise whose lowest point is the largest norm
        ([1.01, 0.98, 1.02, 0.99], False),  # flat noise with a 1-3% dip inside: 1.01 / 0.98 < 1.05, not a U
        ([1.06, 1.0, 1.2], True),  # both ends just over the 5% margin (1.06 and 1.2 > 1.05)
        ([1.04, 1.0, 1.2], False),  # the smallest norm's end 4% above the minimum: within the margin
        ([1.0], False),
    ],
    ids=["u", "decreasing", "increasing", "tie-at-end", "noise-min-at-end", "noise-dip-inside", "just-over-margin", "within-margin", "one-point"],
)
def test_lu_u_shaped(loss: list[float], expected: bool) -> None:
    assert u_shaped(loss) is expected


@pytest.mark.parametrize(
    ("train_loss", "expected"),
    [
        ([1.0, 0.01, 0.001], True),  # 1.0 > 10 x 0.001
        ([10.0, 2.0, 1.0], False),  # exactly 10x the lowest: not over it
        ([10.5, 2.0, 1.0], True),
        ([0.001, 0.01, 1.0], False),  # the smallest norm fits best
        ([0.5, 0.3, 0.2], False),  # a gentle L: 2.5x, not 10x
        ([1.0, 0.01, 0.5], True),  # the lowest train loss inside, not at the largest norm: 1.0 > 10 x 0.01
    ],
    ids=["L", "exactly-10x", "just-over-10x", "increasing", "gentle", "lowest-inside"],
)
def test_lu_small_norm_underfits(train_loss: list[float], expected: bool) -> None:
    assert small_norm_underfits(train_loss) is expected


def test_lu_overfits_at_large_norm_compares_the_last_gap_with_the_gap_at_the_best_norm() -> None:
    assert overfits_at_large_norm([0.5, 0.01, 0.2], best=1)  # 0.2 > 10 x 0.01
    assert not overfits_at_large_norm([0.5, 0.01, 0.1], best=1)  # exactly 10x
    assert not overfits_at_large_norm([0.01, 0.5, 0.2], best=1)  # the gap at the best norm, not the smallest gap
    assert not overfits_at_large_norm([0.3, 0.2, 0.1], best=2)  # the best norm is the largest: gap[-1] vs itself


def test_modelwise_non_monotone_steps_are_those_whose_peak_clears_the_margin() -> None:
    peaks = {100: (16, 1.2), 200: (32, MARGIN), 300: (16, 0.9), 400: (32, MARGIN + 1e-3), 500: (None, 0.0)}
    assert non_monotone_steps(peaks) == [100, 400]  # MARGIN itself is not above it; order kept as logged
    assert non_monotone_steps({100: (16, 0.5), 200: (16, 1.0)}) == []


# Phases: steps every 10, train / val accuracy as step functions at hand-picked steps (threshold 0.99).

STEPS = list(range(0, 310, 10))


def acc(at: int | None) -> list[float]:
    """0.5 before step `at`, 1.0 from it on (never with None)."""
    return [1.0 if at is not None and s >= at else 0.5 for s in STEPS]


@pytest.mark.parametrize(
    ("fit", "gen", "phase"),
    [
        (None, None, "confusion"),
        (None, 50, "confusion"),  # val alone reaching the threshold does not count: train never fitted
        (50, None, "memorization"),
        (50, 60, "comprehension"),  # delay 10 <= 1 x 50
        (50, 100, "comprehension"),  # delay 50 = 1 x 50: the boundary, not more than it
        (50, 110, "grokking"),  # delay 60 > 50
        (50, 30, "comprehension"),  # val before train: negative delay
        (0, 10, "grokking"),  # fitted at step 0: the delay is compared with 1 step, 10 > 1
    ],
)
def test_classify_phase(fit: int | None, gen: int | None, phase: str) -> None:
    assert classify_phase(STEPS, acc(fit), acc(gen)) == phase


def test_classify_phase_counts_the_threshold_itself_and_skips_missing_values() -> None:
    train = [None, 0.5, 0.99] + [1.0] * (len(STEPS) - 3)  # 0.99 exactly fits at step 20
    val = [math.nan] + [0.98] * 3 + [0.99] * (len(STEPS) - 4)  # generalizes at step 40: delay 20 <= 1 x 20
    assert classify_phase(STEPS, train, val) == "comprehension"
    assert classify_phase(STEPS, train, val, grok_factor=0.5) == "grokking"  # 20 > 0.5 x 20
    # Fitted at step 0 the delay is compared with 1 step: 1 is not more than that, 2 is.
    assert classify_phase([0, 1, 2], [1.0, 1.0, 1.0], [0.5, 1.0, 1.0]) == "comprehension"
    assert classify_phase([0, 1, 2], [1.0, 1.0, 1.0], [0.5, 0.5, 1.0]) == "grokking"


# Nanda's phases: log val loss per step, chosen so the 10% / 90% points of its fall are whole steps.
#   step     0   10   20   30   40   50   60   70   80   90  100
#   log     5.0  4.0  0.0  1.0  1.0  0.9  0.0 -1.0 -5.0 -8.0 -9.0
# Train fits at 20 (memorization_end); after it the peak is 1.0 at step 30 (the 5.0 before fitting does not count)
# and the final value -9.0, a fall of 10: 10% of the way is log <= 0.0, first at step 60 (30 .. 50 stay above);
# 90% is log <= -8.0, first at step 90.
LOGS = [5.0, 4.0, 0.0, 1.0, 1.0, 0.9, 0.0, -1.0, -5.0, -8.0, -9.0]
PSTEPS = list(range(0, 110, 10))
FIT = [0.5, 0.5] + [1.0] * 9
GEN = [0.5] * 9 + [1.0] * 2


def val_loss(logs: list[float]) -> list[float]:
    return [math.exp(v) for v in logs]


def test_phase_boundaries_on_a_hand_made_fall_of_the_val_loss() -> None:
    assert [math.log(v) for v in val_loss(LOGS)] == LOGS  # the chosen values survive exp / log exactly
    b = phase_boundaries(PSTEPS, FIT, GEN, val_loss(LOGS))
    assert b == {"memorization_end": 20, "circuit_formation_end": 60, "cleanup_end": 90, "cleanup_from": "val/loss"}


def test_phase_boundaries_end_cleanup_at_the_gini_only_when_it_comes_after_circuit_formation() -> None:
    # Gini from fitting (step 20) on: 0 at fitting, max 1.0; 90% of the way is >= 0.9.
    late = [None, None, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0]  # first >= 0.9 at step 100, after circuit formation (60)
    b = phase_boundaries(PSTEPS, FIT, GEN, val_loss(LOGS), late)
    assert b is not None and (b["cleanup_end"], b["cleanup_from"]) == (100, "fourier/gini")
    early = [None, None, 0.0, 0.5, 0.95, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # >= 0.9 at step 40, before step 60
    b = phase_boundaries(PSTEPS, FIT, GEN, val_loss(LOGS), early)
    assert b is not None and (b["cleanup_end"], b["cleanup_from"]) == (90, "val/loss")
    flat = [None, None] + [0.5] * 9  # never rises above its value at fitting
    b = phase_boundaries(PSTEPS, FIT, GEN, val_loss(LOGS), flat)
    assert b is not None and b["cleanup_from"] == "val/loss"


def test_phase_boundaries_are_none_without_the_road_to_generalization() -> None:
    assert phase_boundaries(PSTEPS, [0.5] * 11, GEN, val_loss(LOGS)) is None  # never fits
    assert phase_boundaries(PSTEPS, FIT, [0.5] * 11, val_loss(LOGS)) is None  # never generalizes
    rising = [5.0, 4.0, 0.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.0]  # after fitting the last value is the peak
    assert phase_boundaries(PSTEPS, FIT, GEN, val_loss(rising)) is None
    one_point = [0.5] * 10 + [1.0]  # fits only at the last step: a single loss point after fitting
    assert phase_boundaries(PSTEPS, one_point, GEN, val_loss(LOGS)) is None


# Loss spikes: factor 10 over the median of the 10 preceding points, floor 1e-3; the first 10 points have no baseline.


def curve(at: dict[int, float], level: float = 1.0) -> np.ndarray:
    """40 points at `level`, but the values `at` (index -> value)."""
    loss = np.full(40, level)
    loss[list(at)] = list(at.values())
    return loss


@pytest.mark.parametrize(
    ("loss", "expected"),
    [
        (curve({}), []),  # a clean flat curve
        (np.geomspace(5.0, 1e-2, 40), []),  # a clean descent
        (np.array([1.0, 9.0] * 20), []),  # noise: median of 10 alternating values is 5, 9 < 50
        (curve({20: 10.0}), []),  # exactly 10x the median: not above it
        (curve({20: 9.0}), []),  # below the factor
        (curve({20: 10.5}), [20]),  # just above it
        (curve({5: 100.0}), []),  # inside the first window: no baseline, skipped
        (curve({10: 100.0}), [10]),  # the first point with a full window counts
        (curve({9: 100.0, 10: 100.0}), [10]),  # the median of the window (1.0) ignores the spike in it (a mean would be 10.9)
        (curve({20: 50.0, 21: 50.0}), [20]),  # two flagged points in a row: one event
        (curve({20: 50.0, 22: 50.0}), [20, 22]),  # one point apart: two events
        (curve({20: 1e-3}, level=1e-5), [20]),  # 100x, at the floor exactly: counts
        (curve({20: 9e-4}, level=1e-5), []),  # 90x but under the floor
    ],
    ids=["flat", "descent", "noise", "exactly-factor", "below-factor", "above-factor", "in-first-window",
         "first-full-window", "spike-in-window", "consecutive", "separate", "at-floor", "under-floor"],
)  # fmt: skip
def test_loss_spikes(loss: np.ndarray, expected: list[int]) -> None:
    assert loss_spikes(loss) == expected


# Censored statistics: None is a run that never got there (+inf).


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([], None),
        ([None], None),
        ([None, None, None], None),  # all censored
        ([7], 7.0),
        ([None, 100, None], None),  # odd n, 2 of 3 censored: the middle value is inf
        ([100, None, 300], 300.0),  # odd n, 1 of 3 censored: sorted (100, 300, inf)
        ([100, 200, None, None], None),  # even n, half censored: (200 + inf) / 2
        ([400, 100, 300, None], 350.0),  # even n, one censored: sorted (100, 300, 400, inf) -> (300 + 400) / 2
        ([40, 10, 30, 20], 25.0),  # even n: mean of the two middle values
        ([5, 1, 3], 3.0),
        ([1, None], None),
    ],
)
def test_censored_median(times: list[int | None], expected: float | None) -> None:
    assert censored_median(times) == expected


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([], None),
        ([1], None),
        ([1, 2], None),  # n < 3
        # (x_(k), x_(n+1-k)) covers the median with 1 - 2 P(Binomial(n, 1/2) <= k-1); k grows while that stays >= 95%.
        ([3, 1, 2], (1.0, 3.0, 1 - 2 / 8)),  # n = 3: only (min, max), 75%
        ([None] * 5, (math.inf, math.inf, 1 - 2 / 32)),  # all censored
        ([6, None, 4, None, 2, None], (2.0, math.inf, 1 - 2 / 64)),  # half censored; k = 2 would cover 1 - 14/64 < 95%
        (list(range(7, 0, -1)), (1.0, 7.0, 1 - 2 / 128)),  # odd n = 7: k = 2 covers 1 - 16/128 < 95%
        (list(range(1, 10)), (2.0, 8.0, 1 - 20 / 512)),  # odd n = 9: k = 2 covers 1 - 2 (1 + 9)/512; k = 3, 1 - 92/512, does not
        (list(range(1, 11)), (2.0, 9.0, 1 - 22 / 1024)),  # even n = 10: k = 2, 1 - 2 (1 + 10)/1024; k = 3, 1 - 112/1024, does not
        ([1, 2, 3, 4, 5, None, None, None, None, None], (2.0, math.inf, 1 - 22 / 1024)),  # n = 10, half censored
    ],
)
def test_median_interval(times: list[int | None], expected: tuple[float, float, float] | None) -> None:
    got = median_interval(times)
    assert got == (None if expected is None else (expected[0], expected[1], pytest.approx(expected[2])))


def test_first_step() -> None:
    steps = [0, 10, 20, 30]
    assert first_step(steps, [0.5, 0.99, 1.0, 1.0]) == 10  # the threshold itself counts
    assert first_step(steps, [0.5, 0.989, 0.98, 0.9]) is None  # never reached
    assert first_step(steps, [None, math.nan, 0.5, 1.0]) == 30  # missing values never count
    assert first_step(steps, [math.inf, 0.5, 1.0, 1.0]) == 20  # nor do infinite ones
    assert first_step(steps, [-math.inf, 2.0, 0.1, 0.0], threshold=0.5, above=False) == 20
    assert first_step(steps, [1.0, 0.6, 0.5, 0.4], threshold=0.5, above=False) == 20  # falling to it
    assert first_step(steps, [0.3, 0.6, 0.7, 0.8], threshold=0.5) == 10
    assert first_step([], []) is None
