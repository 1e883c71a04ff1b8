"""Reports a person opens: `groklab report DIR`, `groklab ls DIR` and `groklab compare RUN RUN ... --out DIR`.

A report is DIR/report/index.html (self-contained: Plotly inlined, no network, opens from file://) plus one
PNG per figure. A sweep report also writes a lighter page per run under report/runs/ (curves only, sharing
one copy of Plotly's JavaScript) so that a 100-run sweep renders in seconds; `groklab report RUN_DIR` gives
any single run the full page with the analysis figures.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from groklab.errors import UserError
from groklab.report.data import (
    SEED_COLUMNS,
    SPLITS,
    RunData,
    flatten,
    is_run,
    is_sweep,
    kind_of,
    load_run_data,
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
from groklab.stats import RESULT_COLUMNS

__all__ = ["report", "report_run", "report_sweep", "report_recipe", "compare_runs", "run_phase", "command", "ls_command", "compare_command"]

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
    analysis, why = run_analysis(path, sharpness) if analyze else (None, "")
    phase = (analysis or {}).get("phase") or run_phase(run)
    figs = run_figures(run, analysis)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "index.html"
    write_page(page, f"groklab run {run.name}", run_body(run, figs, write_figures(figs, out, pngs), phase, analysis, [why]), plotly_src)
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
        run_dir = path / str(row.get("run_dir") or Path("runs") / str(row.get("run_id")))
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
        body += [f"<p><b>{esc(findings.get('headline', ''))}</b></p>", "<h2>Findings</h2>", kv_table(flatten(findings))]
    body += ["<h2>Figures</h2>", figures_html(figs, {f.key: f"../figures/{f.key}.png" for f in figs}), "<h2>Sweeps</h2><ul>"]
    for part in meta.get("parts", []):
        if is_sweep(path / part):
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


# ---------------------------------------------------------------------------------------------
# Command line.

REPORT_HELP = """\
usage: groklab report DIR [--quiet] [--no-analysis] [--no-sharpness]

Write DIR/report/index.html (opens from disk, offline) and a PNG per figure, for a run directory, a sweep
directory (runs.parquet or spec.toml) or a folder of run directories. A sweep report also writes a page
per run (report/runs/<id>.html) and a sortable table linking to them.

options:
  --quiet          print only the page's path
  --no-analysis    run reports: skip the checkpoint analysis (Fourier, norms, embeddings, sharpness)
  --no-sharpness   run reports: skip only the Hessian sharpness (the slowest part of the analysis)

examples:
  groklab report runs/mlp
  groklab report sweeps/fig2 --quiet
  groklab report runs/nanda --no-sharpness
"""

LS_HELP = """\
usage: groklab ls DIR [--quiet]

List the runs of a sweep directory or of a folder of run directories: status, steps, steps to 99%
train and val accuracy (the grokking point), final accuracies. --quiet prints tab-separated values.

examples:
  groklab ls sweeps/fig2
  groklab ls runs
  groklab ls sweeps/fig2 --quiet | sort -t$'\\t' -k5 -n
"""

COMPARE_HELP = """\
usage: groklab compare RUN RUN [RUN ...] --out DIR [--quiet]

Overlay the accuracy and loss curves of several runs in one report, DIR/index.html (plus PNGs),
with a table of what differs between their configs.

examples:
  groklab compare runs/wd1 runs/wd0 --out reports/wd
  groklab compare sweeps/fig2/runs/* --out reports/fig2-all
"""


def _parse(args: list[str], flags: set[str], options: set[str], usage: str) -> tuple[list[str], dict[str, Any]] | None:
    """(positionals, options) or None after printing `usage` for --help."""
    if "--help" in args or "-h" in args:
        print(usage)
        return None
    positional: list[str] = []
    known: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            if name in flags:
                known[name] = True
            elif name in options:
                if not eq:
                    if i + 1 >= len(args):
                        raise UserError(f"--{name} needs a value")
                    i += 1
                    value = args[i]
                known[name] = value
            else:
                allowed = ", ".join(f"--{o}" for o in sorted(flags | options))
                raise UserError(f"unknown option --{name}: expected one of {allowed}")
        else:
            positional.append(arg)
        i += 1
    return positional, known


def _one_dir(positional: list[str], command: str) -> Path:
    if len(positional) != 1:
        raise UserError(
            f"groklab {command} takes one DIR, got {len(positional)} ({' '.join(positional) or 'none'}); see groklab {command} --help"
        )
    return Path(positional[0])


def command(args: list[str]) -> None:
    """`groklab report DIR`."""
    parsed = _parse(args, {"quiet", "no-analysis", "no-sharpness"}, set(), REPORT_HELP)
    if parsed is None:
        return
    positional, known = parsed
    path = _one_dir(positional, "report")
    quiet = bool(known.get("quiet"))
    page = report(path, quiet=quiet, analyze=not known.get("no-analysis"), sharpness=not known.get("no-sharpness"))
    print(page if quiet else f"report written: {page}  (open it in a browser; PNGs beside it)")


def ls_rows(path: Path) -> list[dict[str, Any]]:
    kind = kind_of(path)
    if kind == "run":
        return [run_row(path, path.parent)]
    if kind == "recipe":  # every part's runs, their run_dir relative to the recipe dir
        parts = [d for d in sorted(path.iterdir()) if is_sweep(d)]
        return [{**row, "run_dir": f"{d.name}/{row.get('run_dir')}"} for d in parts for row in sweep_rows(d)]
    return sweep_rows(path)


def ls_command(args: list[str]) -> None:
    """`groklab ls DIR`."""
    parsed = _parse(args, {"quiet"}, set(), LS_HELP)
    if parsed is None:
        return
    positional, known = parsed
    rows = ls_rows(_one_dir(positional, "ls"))
    groups = [c for c in varying_columns(rows) if c not in SEED_COLUMNS]
    columns = [
        "run_id",
        *groups,
        *(c for c in SEED_COLUMNS if c in varying_columns(rows)),
        "status",
        *SHOWN_RESULTS,
    ]
    from groklab.report.page import fmt

    if known.get("quiet"):
        print("\t".join(columns))
        for row in rows:
            print("\t".join("" if row.get(c) is None else fmt(row.get(c)) for c in columns))
        return
    from rich.console import Console
    from rich.table import Table

    # Short headers so that the table fits a terminal: the last part of a dotted config name.
    headers = {
        "run_id": "run",
        "steps_to_train_acc_99": "fit@",
        "steps_to_val_acc_99": "grok@",
        "grok_delay": "delay",
        "train/acc": "train",
        "val/acc": "val",
        "test/acc": "test",
    }
    table = Table(
        title=f"{len(rows)} runs in {positional[0]}",
        caption="fit@ / grok@: first step with train / val accuracy ≥ 0.99; delay: grok@ − fit@; train, val, test: final accuracy",
        title_justify="left",
    )
    for c in columns:
        left = c in ("run_id", "status") or c in groups
        table.add_column(headers.get(c, c.split(".")[-1]), justify="left" if left else "right", no_wrap=c in ("status", "run_id"))
    styles = {"finished": "green", "incomplete": "yellow", "interrupted": "yellow", "diverged": "red", "failed": "red"}
    for row in rows:
        status = str(row.get("status", "?"))
        cells = [fmt(row.get(c)) for c in columns]
        cells[columns.index("status")] = f"[{styles.get(status, 'white')}]{status}[/]"
        table.add_row(*cells)
    Console().print(table)


def compare_command(args: list[str]) -> None:
    """`groklab compare RUN RUN ... --out DIR`."""
    parsed = _parse(args, {"quiet"}, {"out"}, COMPARE_HELP)
    if parsed is None:
        return
    positional, known = parsed
    if len(positional) < 2:
        raise UserError(f"groklab compare needs at least two run directories, got {len(positional)}")
    if "out" not in known:
        raise UserError("groklab compare needs --out DIR (where the comparison report is written)")
    paths = [Path(p) for p in positional]
    for p in paths:
        if kind_of(p) != "run":
            raise UserError(f"{p} is not a run directory (no config.json): compare takes run directories")
    page = compare_runs(paths, Path(str(known["out"])))
    print(page if known.get("quiet") else f"comparison written: {page}", file=sys.stdout)
