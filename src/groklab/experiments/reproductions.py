"""The reproduction scoreboard: one row per published claim, judged from the committed findings of the recipes.

`groklab reproductions` (run at the repository root) reads every ``docs/findings/<recipe>-<scale>.json`` (a
recipe's findings.json, copied there after a run) and rewrites ``docs/reproductions.md``. Nothing in that page
is written by hand: each claim below names its paper, figure and published number, the recipe that measures
it, and a check that turns a findings dict into (what we measured, a verdict). The verdict is read from the
most faithful scale that has run (paper, then faithful); a claim measured only at the quick scale (often a
stand-in model) is shown but stays "not yet run".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from groklab.errors import UserError
from groklab.experiments.claims import CLAIMS, Claim, evaluate
from groklab.experiments.recipes import FINDINGS_SCHEMA, MODULES, SCALES
from groklab.stats import GROK_ACC

VERDICTS = ("reproduced", "partly", "not reproduced", "not yet run")
JUDGED_SCALES = ("paper", "faithful")
"""Scales whose findings give a verdict, most faithful first."""

RULES = f"""\
Verdicts, by one rule per claim (the checks in `src/groklab/experiments/claims.py`), from the most faithful
scale that has run (paper, then faithful; every faithful spec lists how it departs from the paper, see its `cuts`):

- **reproduced**: the paper's ordering holds in every seed or setting measured, or its number lies within the
  stated tolerance;
- **partly**: it holds for some seeds or settings, or only its first half is within the step budget we could run;
- **not reproduced**: we measured it on the paper's setting (within the stated cuts) and it did not hold;
- **not yet run**: no committed findings at the faithful or paper scale (quick-scale results, often on a stand-in
  model, are shown for orientation only).

"Generalized" means {GROK_ACC:.0%} validation accuracy unless a row says otherwise; intervals are 95% t-intervals
over seeds, and seeds that never got there within the budget are counted as censored, never averaged in.
"""


def read_findings(folder: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every `<recipe>-<scale>.json` under `folder` by (recipe, scale); a file that is not one of ours is a UserError."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        match = next(((r, s) for r in MODULES for s in SCALES if path.name == f"{r}-{s}.json"), None)
        if match is None:
            raise UserError(f"{path}: not a findings file name: expected <recipe>-<scale>.json with a recipe of `groklab recipe --list`")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{path}: not readable JSON ({err})") from None
        if not isinstance(data, dict) or (data.get("recipe"), data.get("scale")) != match:
            got = (data.get("recipe"), data.get("scale")) if isinstance(data, dict) else None
            raise UserError(f"{path}: holds the findings of {got}, not of recipe {match[0]!r} at scale {match[1]!r}")
        if int(data.get("schema", 1)) > FINDINGS_SCHEMA:
            raise UserError(
                f"{path}: findings schema {data['schema']} is newer than this groklab reads ({FINDINGS_SCHEMA}): upgrade groklab"
            )
        found[match] = data
    return found


def judge(claim: Claim, findings: dict[tuple[str, str], dict[str, Any]]) -> tuple[dict[str, str], str]:
    """(what we measured at each scale that has run, the verdict from the most faithful judged scale)."""
    ours, results = {}, {}
    for scale in SCALES:
        data = findings.get((claim.recipe, scale))
        if data is None:
            continue
        judged = next(c for c in evaluate(claim.recipe, data) if c["source"] == claim.source and c["paper"] == claim.paper)
        ours[scale], results[scale] = judged["ours"], judged["verdict"]
    return ours, next((results[s] for s in JUDGED_SCALES if s in results), "not yet run")


def command(recipe: str) -> str:
    """A row's faithful command, with the 2 workers most faithful runs used on the 2-core CPU (docs/recipes.md has each run's own)."""
    return f"`groklab recipe {recipe} --scale faithful --out runs/{recipe}-faithful --workers 2`"


def render(findings: dict[tuple[str, str], dict[str, Any]]) -> str:
    """docs/reproductions.md's text for these findings."""
    lines = [
        "# Reproductions",
        "",
        "<!-- Written by `groklab reproductions` from docs/findings/: do not edit by hand. -->",
        "",
        "Each row is one published claim: the paper's number or ordering, what the recipe measured at each scale that",
        "has run, and a verdict. To add a measurement, run the command of a row, copy its `findings.json` to",
        "`docs/findings/<recipe>-<scale>.json` and run `groklab reproductions` at the repository root.",
        "",
        RULES,
        "| claim | paper | ours | verdict | command |",
        "| --- | --- | --- | --- | --- |",
    ]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731  (a pipe would end the table cell)
    for claim in CLAIMS:
        ours, verdict = judge(claim, findings)
        measured = "<br>".join(f"*{scale}*: {text}" for scale, text in ours.items()) or "—"
        lines.append(f"| {cell(claim.source)} | {cell(claim.paper)} | {cell(measured)} | **{verdict}** | {command(claim.recipe)} |")
    counts = verdict_counts(findings)
    lines += ["", "Totals: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", ""]
    return "\n".join(lines)


def write_reproductions(root: Path) -> tuple[Path, dict[str, int]]:
    """Rewrite root/docs/reproductions.md from root/docs/findings/; returns the page and the verdict counts."""
    docs = root / "docs"
    if not docs.is_dir():
        raise UserError(f"{docs} does not exist: run groklab reproductions at the repository root")
    findings = read_findings(docs / "findings")
    page = docs / "reproductions.md"
    page.write_text(render(findings))
    return page, verdict_counts(findings)


def verdict_counts(findings: dict[tuple[str, str], dict[str, Any]]) -> dict[str, int]:
    verdicts = [judge(c, findings)[1] for c in CLAIMS]
    return {v: verdicts.count(v) for v in VERDICTS}


__all__ = ["RULES", "VERDICTS", "judge", "read_findings", "render", "verdict_counts", "write_reproductions"]
