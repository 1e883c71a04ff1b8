"""The parts of a recipe's page a person reads first: its claims with their verdicts, and one compact table per
sweep part with a row per arm or setting (the raw findings are folded away below them).

Statistics respect their bounds: steps are medians with a distribution-free interval (censored seeds count as
never, so the median itself can be "> budget"); accuracies are means with a t-interval clipped to [0, 1]; with
fewer than 3 seeds no interval is printed, and the cell says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from groklab.report.data import group_columns
from groklab.report.page import esc
from groklab.stats import DONE, censored_median, mean_ci, median_interval

COLUMNS = ("seeds", "grokked / censored", "steps to 99% train", "steps to 99% val", "delay (median)", "final val acc", "final test acc")


def _steps_cell(times: Sequence[float | None]) -> str:
    """Median [interval] of steps-to-threshold over seeds, censored (None) as never."""
    if not times:
        return "—"
    median = censored_median(times)
    budget = "never within the budget" if median is None else f"{median:.0f}"
    interval = median_interval(times)
    if interval is None:
        return f"{budget} ({len(times)} seed{'s' if len(times) > 1 else ''}: no interval)"
    lo, hi, coverage = interval
    show = lambda v: "never" if v == float("inf") else f"{v:.0f}"  # noqa: E731
    return f"{budget} [{show(lo)}, {show(hi)}]" + (f" ({coverage:.0%} interval)" if coverage < 0.95 else "")


def _acc_cell(values: Sequence[float | None]) -> str:
    """Mean [95% t-interval clipped to [0, 1]] of an accuracy over seeds."""
    e = mean_ci([v for v in values if v is not None])
    if e.n == 0:
        return "—"
    if e.n < 3:
        return f"{e.mean:.3f} ({e.n} seed{'s' if e.n > 1 else ''}: no interval)"
    return f"{e.mean:.3f} [{max(e.lo, 0.0):.3f}, {min(e.hi, 1.0):.3f}]"


def arm_rows(rows: list[dict[str, Any]]) -> list[tuple[str, list[str]]]:
    """(setting, cells) per group of runs that differ only in their seeds (model or data split), in first-seen order."""
    axes = group_columns(rows)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        label = ", ".join(f"{a.split('.')[-1]} {row.get(a)}" for a in axes) or "all runs"
        groups.setdefault(label, []).append(row)
    out = []
    for label, members in groups.items():
        done = [r for r in members if r.get("status") in DONE]
        val = [r.get("steps_to_val_acc_99") for r in done]
        # A run that fit and never generalized has an unbounded delay: it counts, censored; one that never fit has none.
        delays = [r.get("grok_delay") for r in done if r.get("steps_to_train_acc_99") is not None]
        delay = censored_median(delays)
        cells = [
            f"{len(done)}" + (f" (+{len(members) - len(done)} unfinished)" if len(done) < len(members) else ""),
            f"{sum(v is not None for v in val)} / {sum(v is None for v in val)}",
            _steps_cell([r.get("steps_to_train_acc_99") for r in done]),
            _steps_cell(val),
            "—" if not delays else "never" if delay is None else f"{delay:.0f}",
            _acc_cell([r.get("val/acc") for r in done]),
            _acc_cell([r.get("test/acc") for r in done]),
        ]
        out.append((label, cells))
    return out


def arm_table(rows: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in ("setting", *COLUMNS))
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in (label, *cells)) + "</tr>" for label, cells in arm_rows(rows))
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def claims_html(findings: dict[str, Any]) -> str:
    """The published claims this recipe measures, what it measured and the verdict at this scale."""
    claims = findings.get("claims") or []
    if not claims:
        return ""
    items = "".join(
        f"<li><b>{esc(c['source'])}</b>: {esc(c['paper'])}<br>ours: {esc(c['ours'])}<br>verdict at this scale: "
        f"<b>{esc(c['verdict'])}</b></li>"
        for c in claims
    )
    scale = findings.get("scale")
    caveat = (
        "<p>The quick scale often trains a stand-in model: the reproduction scoreboard judges only the faithful and paper scales.</p>"
        if scale == "quick"
        else ""
    )
    cuts = findings.get("cuts") or {}
    cut_items = "".join(f"<li>{esc(part)}: {esc(c)}</li>" for part, cs in cuts.items() for c in cs)
    return f"<h2>Claims</h2><ul>{items}</ul>{caveat}" + (f"<p>Departures from the paper:</p><ul>{cut_items}</ul>" if cut_items else "")
