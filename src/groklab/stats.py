"""Statistics across seeds and the results vocabulary: means with 95% t-intervals, honest handling of runs that
never grokked, the 0.99 threshold, the first step a metric reaches it, and the result columns every table shows.

A run that did not reach 99% val acc within its step budget is *censored*: we only know its
steps-to-grok exceeds the budget. Censored runs are counted and shown, never dropped silently and never
averaged as if they grokked at the budget. The mean and CI of steps-to-grok are over the runs that
grokked (and say so); the median treats censored runs as +inf, which is exact as long as more than half
of the runs grokked (otherwise the median is only known to exceed the budget).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DONE = ("finished", "diverged")
"""Run statuses that have a result (an interrupted or failed run has none yet)."""

GROK_ACC = 0.99
"""The accuracy that counts as fitted (train) or generalized (val): every `*_acc_99` key, `grokked` and stopping use it."""

SPLITS = ("train", "val", "test")
SEED_COLUMNS = ("seed", "split_seed")
"""Config columns that make replicates, not groups: statistics are taken across them."""
RESULT_COLUMNS = (
    "status",
    "steps",
    "wall_s",
    "steps_to_train_acc_99",
    "steps_to_val_acc_99",
    "grokked",
    "grok_delay",
    *(f"{s}/{m}" for s in SPLITS for m in ("acc", "loss")),
)
"""runs.parquet columns that are results, not config (everything else but run_id/run_dir is config)."""


def first_step(steps: Sequence[int], values: Sequence[float | None], threshold: float = GROK_ACC, above: bool = True) -> int | None:
    """The first of `steps` whose value is >= `threshold` (<= with above=False); None if never. Missing values never count."""
    for step, value in zip(steps, values, strict=True):
        if value is not None and math.isfinite(value) and (value >= threshold if above else value <= threshold):
            return int(step)
    return None


@dataclass(frozen=True)
class Estimate:
    """Sample mean with a two-sided t confidence interval; lo/hi are nan with fewer than 2 values."""

    mean: float
    lo: float
    hi: float
    n: int

    def bounds(self) -> tuple[float, float, float]:
        """(mean, lo, hi) for plotting: (mean, mean, mean) for one value, so a lone seed draws a point without an error bar."""
        return (self.mean, self.mean, self.mean) if self.n == 1 else (self.mean, self.lo, self.hi)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean and the t-interval mean ± t_{(1+c)/2, n-1} · s / √n."""
    from scipy.special import stdtrit  # the Student-t quantile, much lighter to import than scipy.stats

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n < 2:
        return Estimate(mean, math.nan, math.nan, 1)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stdtrit(n - 1, (1 + confidence) / 2)) * sd / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def share_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a share of k successes in n trials (e.g. seeds passing a threshold): within [0, 1],
    and not empty at k = 0 or k = n as the normal approximation is."""
    from scipy.special import ndtri  # the normal quantile

    z, share = float(ndtri((1 + confidence) / 2)), k / n
    center = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def censored_median(times: Sequence[float | None]) -> float | None:
    """Median with censored runs (None) as +inf; None when the median itself is censored."""
    if not times:
        return None
    xs = sorted(math.inf if t is None else float(t) for t in times)
    n = len(xs)
    median = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return None if math.isinf(median) else median


def median_interval(times: Sequence[float | None], confidence: float = 0.95) -> tuple[float, float, float] | None:
    """(lo, hi, coverage): the distribution-free interval of the median between two order statistics, censored runs
    (None) as +inf, or None with fewer than 3 values.

    The narrowest symmetric pair (x_(k), x_(n+1−k)) whose coverage under Binomial(n, ½) reaches `confidence`, or the
    widest pair (min, max) with its smaller coverage when n is too small for that (5 seeds: 94%).
    """
    n = len(times)
    if n < 3:
        return None
    xs = sorted(math.inf if t is None else float(t) for t in times)
    k, coverage = 1, 1 - 2 * 0.5**n  # (min, max)
    while k + 1 <= n // 2:
        tail = sum(math.comb(n, i) for i in range(k + 1)) * 0.5**n  # P(fewer than k+1 values below the median)
        if 1 - 2 * tail < confidence:
            break
        k, coverage = k + 1, 1 - 2 * tail
    return xs[k - 1], xs[n - k], coverage


@dataclass(frozen=True)
class GroupStats:
    """One group of runs (equal non-seed axes): counts, steps-to-grok and final test accuracy."""

    key: dict[str, Any]
    runs: int
    done: int
    failed: int
    grokked: int
    censored: int
    budget: int | None
    """The largest step budget among censored runs: they did not grok within this many steps."""
    steps_to_grok: Estimate
    """Over grokked runs only."""
    median_steps_to_grok: float | None
    test_acc: Estimate


def group_stats(rows: Sequence[dict[str, Any]], axes: Sequence[str], time_key: str = "steps_to_val_acc_99") -> list[GroupStats]:
    """Group runs.parquet rows by `axes` (in first-seen order) and summarize each group across seeds."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(a) for a in axes), []).append(row)
    out = []
    for key, members in groups.items():
        done = [r for r in members if r.get("status") in DONE]
        times = [r.get(time_key) for r in done]
        censored = [r for r in done if r.get(time_key) is None]
        out.append(
            GroupStats(
                key=dict(zip(axes, key, strict=True)),
                runs=len(members),
                done=len(done),
                failed=sum(r.get("status") == "failed" for r in members),
                grokked=len(done) - len(censored),
                censored=len(censored),
                budget=max((r.get("steps") or 0 for r in censored), default=None),
                steps_to_grok=mean_ci([t for t in times if t is not None]),
                median_steps_to_grok=censored_median(times),
                test_acc=mean_ci([r.get("test/acc") for r in done]),  # type: ignore[misc]
            )
        )
    return out
