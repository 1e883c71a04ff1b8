"""Reports a person opens: `groklab report DIR`, `groklab ls DIR` and `groklab compare RUN RUN ... --out DIR`.

A report is DIR/report/index.html (self-contained: Plotly inlined, no network, opens from file://) plus one
PNG per figure. A sweep report also writes a lighter page per run under report/runs/ (curves only, sharing
one copy of Plotly's JavaScript) so that a 100-run sweep renders in seconds; `groklab report RUN_DIR` gives
any single run the full page with the analysis figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from groklab.errors import UserError
from groklab.report.data import (
    SPLITS,
    RunData,
    flatten,
    is_run,
    is_sweep,
    kind_of,
    load_run_data,
    row_run_dir,
    run_row,
    sweep_rows,
    varying_columns,
)
from groklab.report.page import badge, esc, figures_html, kv_table, note, sortable_table, write_page, write_plotly_file
from groklab.report.plots import (
    Figure,
    compare_figures,
    figure_from_dict,
    phase_heatmap,
    run_figures,
    save_png,
    steps_to_grok_figure,
    test_acc_figure,
)
from groklab.report.recipe_page import arm_table, claims_html
from groklab.runio import UnreadableCheckpoint, contained
from groklab.stats import RESULT_COLUMNS, SEED_COLUMNS

__all__ = ["report", "report_run", "report_sweep", "report_recipe", "compare_runs", "run_phase", "ls_rows"]

FINAL_KEYS = tuple(f"{s}/{m}" for s in SPLITS for m in ("acc", "loss"))


# ---------------------------------------------------------------------------------------------
# Pieces shared by the pages.


SHOWN_RESULTS = tuple(c for c in RESULT_COLUMNS if c not in ("status", "wall_s", "grokked") and not c.endswith("/loss"))
"""A run's outcome as every run table shows it (after the run id, the varying config and the status)."""


def run_phase(run: RunData) -> str | None:
    """Liu et al.'s phase of a finished run from its curves (None while unfinished or without analysis)."""
    if not run.complete or "train/acc" not in run.columns or "val/acc" not in run.columns:
        return None
    try:
        from groklab.analysis.phases import classify_phase
    except (ImportError, AttributeError):
        return None
    to_list = lambda a: [None if v != v else v for v in a.tolist()]  # noqa: E731  (NaN -> None)
    return classify_phase(run.steps.astype(int).tolist(), to_list(run.columns["train/acc"]), to_list(run.columns["val/acc"]))


def run_analysis(path: Path, sharpness: bool) -> tuple[dict[str, Any] | None, str]:
    """`analyze_run`'s dict, or None and a note saying why it is missing (not installed, no checkpoints)."""
    try:
        from groklab.analysis import analyze_run
    except (ImportError, AttributeError):
        return None, "The analysis module (groklab.analysis) is not available: Fourier, embedding and norm figures are omitted."
    from groklab.runio import load_run

    try:
        return analyze_run(load_run(path), sharpness=sharpness), ""
    except UnreadableCheckpoint:
        raise  # not a missing piece but a file groklab refused to load: report_run says so after writing the page
    except UserError as err:
        return None, f"Analysis skipped: {err}"


def write_figures(figs: list[Figure], out: Path, pngs: bool) -> dict[str, str]:
    """PNG files beside the page, one per figure; returns figure key -> file name."""
    if not pngs:
        return {}
    names = {}
    for fig in figs:
        names[fig.key] = f"{fig.key}.png"
        save_png(fig, out / names[fig.key])
    return names


def summary_items(run: RunData, phase: str | None, analysis: dict[str, Any] | None) -> dict[str, Any]:
    summary = run.summary or {}
    last = {k: float(run.columns[k][-1]) for k in FINAL_KEYS if k in run.columns and len(run.columns[k])}
    items: dict[str, Any] = {
        "status": summary.get("status", "incomplete"),
        "steps": summary.get("steps", int(run.steps[-1]) if len(run.steps) else 0),
        "wall time (s)": summary.get("wall_s"),
        "steps to 99% train acc": run.first_step("train/acc"),
        "steps to 99% val acc (grokking point)": run.first_step("val/acc"),
        "grok delay (steps)": summary.get("grok_delay"),
        "phase": phase,
    }
    items.update({f"final {k}": (summary.get("final") or last).get(k) for k in FINAL_KEYS})
    for key in ("rqi", "sharpness"):
        value = (analysis or {}).get(key)
        if isinstance(value, dict):
            items.update({f"{key} {k}": v for k, v in value.items() if isinstance(v, (int, float, str))})
        elif value is not None:
            items[key] = value
    return items


def run_body(
    run: RunData, figs: list[Figure], pngs: dict[str, str], phase: str | None, analysis: dict[str, Any] | None, notes: list[str]
) -> list[str]:
    items = summary_items(run, phase, analysis)
    body = [f"<h1>Run {esc(run.name)} {badge(str(items['status']))}</h1>"]
    config = run.config
    body.append(
        f"<p>{esc(config.get('task.name'))} {esc(config.get('task.op'))} · model {esc(config.get('model.name'))} · seed {esc(config.get('seed'))}</p>"
    )
    if not run.complete:
        last = int(run.steps[-1]) if len(run.steps) else 0
        notes = [
            f"No summary.json: this run is unfinished or was interrupted. Showing the {len(run.steps)} evaluations logged so far (last step {last})."
        ] + notes
    body += [note(n) for n in notes if n]
    body += ["<h2>Summary</h2>", kv_table(items), "<h2>Figures</h2>", figures_html(figs, pngs)]
    body += ["<h2>Configuration</h2>", kv_table(config)]
    return body


# ---------------------------------------------------------------------------------------------
# Run, sweep and compare reports.


def report_run(
    path: Path, out: Path | None = None, *, analyze: bool = True, sharpness: bool = True, pngs: bool = True, plotly_src: str | None = None
) -> Path:
    """Write the run report (index.html in `out`, default path/report) and return the page's path."""
    out = out or path / "report"
    run = load_run_data(path)
    unreadable = None
    try:
        analysis, why = run_analysis(path, sharpness) if analyze else (None, "")
    except UnreadableCheckpoint as err:
        analysis, why, unreadable = None, f"Analysis unavailable: {err}", err
    phase = (analysis or {}).get("phase") or run_phase(run)
    figs = run_figures(run, analysis)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    write_page(page, f"groklab run {run.name}", run_body(run, figs, write_figures(figs, out, pngs), phase, analysis, [why]), plotly_src)
    if unreadable is not None:
        raise UnreadableCheckpoint(f"{unreadable}; {page} shows the curves without the analysis")
    return page


def report_sweep(path: Path, *, quiet: bool = False) -> Path:
    """Write the sweep (or folder-of-runs) report with a light page per run, and return index.html's path."""
    out = path / "report"
    rows = sweep_rows(path)
    if not rows:
        raise UserError(f"{path} holds no runs yet: nothing to report")
    shared = write_plotly_file(out)
    links: dict[int, str] = {}
    phases: list[str | None] = []
    table = [dict(row) for row in rows]  # the table adds status notes and phases; figures group the raw rows
    for i, row in _progress(list(enumerate(table)), quiet, "run pages"):
        run_dir = row_run_dir(path, row)
        if not is_run(run_dir):
            row["status"] = f"{row.get('status') or 'missing'} (no run directory)"
            phases.append(None)
            continue
        run = load_run_data(run_dir)
        phase = run_phase(run)
        phases.append(phase)
        row["phase"] = phase
        if not run.complete:
            row["status"] = "incomplete"
        name = f"runs/{run_dir.name}.html"
        body = run_body(
            run, run_figures(run, None), {}, phase, None, [f"Curves only; `groklab report {run_dir}` adds the analysis figures and PNGs."]
        )
        body.insert(0, '<p><a href="../index.html">← sweep report</a></p>')
        write_page(out / name, f"groklab run {run.name}", body, plotly_src=f"../{shared}")
        links[i] = name
    figs: list[Figure] = [f for f in (steps_to_grok_figure(rows),) if f is not None]
    figs.append(test_acc_figure(rows))
    notes = []
    try:
        from groklab.analysis.phases import PHASES
    except (ImportError, AttributeError):
        PHASES = None
        notes.append("The phase classifier (groklab.analysis.phases) is not available: the phase map is omitted.")
    heat = phase_heatmap(rows, phases, tuple(PHASES)) if PHASES else None
    if heat is not None:
        figs.append(heat)
    figs_pngs = write_figures(figs, out, True)
    groups = varying_columns(rows)
    columns = [
        "run_id",
        *groups,
        "status",
        "phase",
        *SHOWN_RESULTS,
        "wall_s",
    ]
    counts = {s: sum(1 for r in table if str(r.get("status", "")).startswith(s)) for s in ("finished", "incomplete", "diverged", "failed")}
    grokked = sum(1 for r in rows if r.get("grokked"))
    body = [
        f"<h1>Sweep {esc(path.resolve().name)}</h1>",
        f"<p>{len(rows)} runs · {grokked} grokked · " + " · ".join(f"{v} {k}" for k, v in counts.items() if v) + "</p>",
        f"<p>Varying: {esc(', '.join(groups) or 'nothing')}. Statistics are over {esc(' and '.join(c for c in SEED_COLUMNS if c in groups) or 'runs')} (95% t-intervals).</p>",
        *[note(n) for n in notes],
        "<h2>Figures</h2>",
        figures_html(figs, figs_pngs),
        "<h2>Runs</h2><p>Click a header to sort; the run id opens its page.</p>",
        sortable_table(columns, table, links),
    ]
    spec = path / "spec.toml"
    if spec.is_file():
        body += ["<h2>Sweep spec</h2>", f"<pre>{esc(spec.read_text())}</pre>"]
    page = out / "index.html"
    write_page(page, f"groklab sweep {path.resolve().name}", body)
    return page


def compare_runs(paths: list[Path], out: Path) -> Path:
    """Overlay several runs' curves in one report at `out`/index.html."""
    for p in paths:
        if kind_of(p) != "run":
            raise UserError(f"{p} is not a run directory (no config.json): compare takes run directories")
    runs = [load_run_data(p) for p in paths]
    figs = compare_figures(runs)
    out.mkdir(parents=True, exist_ok=True)
    rows = [run_row(p, p.parent) | {"run_id": str(p)} for p in paths]
    differ = varying_columns(rows)
    columns = [
        "run_id",
        *differ,
        "status",
        *SHOWN_RESULTS,
    ]
    body = [
        f"<h1>Comparing {len(runs)} runs</h1>",
        f"<p>Config differences: {esc(', '.join(differ) or 'none (same config)')}.</p>",
        *[note(f"{r.path}: no summary.json (unfinished or interrupted); showing what was logged.") for r in runs if not r.complete],
        "<h2>Figures</h2>",
        figures_html(figs, write_figures(figs, out, True)),
        "<h2>Runs</h2>",
        sortable_table(columns, rows, {}),
    ]
    page = out / "index.html"
    write_page(page, "groklab compare", body)
    return page


def report_recipe(path: Path, *, quiet: bool = False) -> Path:
    """The recipe page (`groklab recipe`'s output dir): headline, findings, the recipe's figures (from
    figures/figures.json) and a sweep report per part, linked. Returns index.html's path."""
    import json

    meta = json.loads((path / "recipe.json").read_text())
    findings_file, figures_file = path / "findings.json", path / "figures" / "figures.json"
    findings = json.loads(findings_file.read_text()) if findings_file.is_file() else None
    figs = [figure_from_dict(d) for d in json.loads(figures_file.read_text())] if figures_file.is_file() else []
    out = path / "report"
    body = [
        f"<h1>Recipe {esc(meta['recipe'])} <small>({esc(meta['scale'])} scale)</small></h1>",
        f"<p>{esc(meta.get('description', ''))}</p>",
    ]
    if findings is None:
        body.append(note("No findings.json yet: the recipe's sweeps are unfinished. Rerun the same groklab recipe command to finish them."))
    else:
        body += [f"<p><b>{esc(findings.get('headline', ''))}</b></p>", claims_html(findings)]
    body += ["<h2>Figures</h2>", figures_html(figs, {f.key: f"../figures/{f.key}.png" for f in figs})]
    for part in meta.get("parts", []):  # one row per arm or setting, seeds pooled
        if is_sweep(contained(path, part, path / "recipe.json")):
            body += [f"<h2>Runs: {esc(part)}</h2>", arm_table(sweep_rows(path / part))]
    if findings is not None:
        body.append(f"<details><summary>All findings (findings.json, flattened)</summary>{kv_table(flatten(findings))}</details>")
    body.append("<h2>Sweeps</h2><ul>")
    for part in meta.get("parts", []):
        if is_sweep(contained(path, part, path / "recipe.json")):  # the part's report is written there: never outside
            report_sweep(path / part, quiet=quiet)
            body.append(f'<li><a href="../{esc(part)}/report/index.html">{esc(part)}</a>: runs, per-seed statistics, spec</li>')
        else:
            body.append(f"<li>{esc(part)}: not started</li>")
    body.append("</ul>")
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    write_page(page, f"groklab recipe {meta['recipe']}", body)
    return page


def report(path: Path, *, quiet: bool = False, analyze: bool = True, sharpness: bool = True) -> Path:
    """The report for a run, a sweep, a recipe or a folder of runs; a UserError for any other directory."""
    kind = kind_of(path)
    if kind == "run":
        return report_run(path, analyze=analyze, sharpness=sharpness)
    if kind == "recipe":
        return report_recipe(path, quiet=quiet)
    return report_sweep(path, quiet=quiet)


def _progress(items: list[Any], quiet: bool, what: str) -> Any:
    """Items, with a progress bar on stderr for large sweeps (none with --quiet or for a handful)."""
    if quiet or len(items) < 20:
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=what, console=Console(stderr=True), transient=True)


def ls_rows(path: Path) -> list[dict[str, Any]]:
    """One row per run (config and summary) in a run, sweep, recipe or folder directory, as `groklab ls` lists them."""
    kind = kind_of(path)
    if kind == "run":
        return [run_row(path, path.parent)]
    if kind == "recipe":  # every part's runs, their run_dir relative to the recipe dir
        parts = [d for d in sorted(path.iterdir()) if is_sweep(d)]
        return [{**row, "run_dir": f"{d.name}/{row.get('run_dir')}"} for d in parts for row in sweep_rows(d)]
    return sweep_rows(path)
