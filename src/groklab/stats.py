"""Statistics across seeds: means with 95% t-intervals, and honest handling of runs that never grokked.

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


@dataclass(frozen=True)
class Estimate:
    """Sample mean with a two-sided t confidence interval; lo/hi are nan with fewer than 2 values."""

    mean: float
    lo: float
    hi: float
    n: int

    def format(self, digits: int = 0) -> str:
        if self.n == 0:
            return "-"
        if self.n < 2:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"


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


def censored_median(times: Sequence[float | None]) -> float | None:
    """Median with censored runs (None) as +inf; None when the median itself is censored."""
    if not times:
        return None
    xs = sorted(math.inf if t is None else float(t) for t in times)
    n = len(xs)
    median = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
    return None if math.isinf(median) else median


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


def stats_table(groups: Sequence[GroupStats], axes: Sequence[str]) -> Any:
    """A rich Table of `group_stats` output, one line per group."""
    from rich.table import Table

    table = Table(title="across seeds: mean [95% t-interval]; censored = never reached 99% val within budget")
    for axis in axes:
        table.add_column(axis)
    for name in ("done", "grokked", "censored", "steps to 99% val (grokked runs)", "median (censored = ∞)", "final test acc"):
        table.add_column(name, justify="right")
    for g in groups:
        censored = f"{g.censored} (> {g.budget} steps)" if g.censored else "0"
        median = f"{g.median_steps_to_grok:.0f}" if g.median_steps_to_grok is not None else (f"> {g.budget}" if g.done else "-")
        done = f"{g.done}/{g.runs}" + (f" ({g.failed} failed)" if g.failed else "")
        table.add_row(
            *(str(g.key[a]) for a in axes),
            done,
            f"{g.grokked}/{g.done}",
            censored,
            g.steps_to_grok.format(0),
            median,
            g.test_acc.format(3),
        )
    return table
