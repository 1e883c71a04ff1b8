"""Sweeps: a TOML spec expanded into runs, run on a local process pool or on Ray, queried with DuckDB.

Python API: ``run_sweep(spec_path, out)``, ``expand(load_spec(path))``, ``query(sweep_dir, sql)``, and the
statistics in ``groklab.sweep.stats``. CLI: ``groklab sweep`` and ``groklab query`` (below).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from groklab.errors import UserError
from groklab.sweep.query import query
from groklab.sweep.runner import SweepResult, run_sweep
from groklab.sweep.spec import PlannedRun, SweepSpec, expand, load_spec, parse_spec, run_id
from groklab.sweep.stats import group_stats, mean_ci, stats_table

__all__ = [
    "PlannedRun",
    "SweepResult",
    "SweepSpec",
    "command",
    "expand",
    "group_stats",
    "load_spec",
    "mean_ci",
    "parse_spec",
    "query",
    "query_command",
    "run_id",
    "run_sweep",
]

SWEEP_HELP = """\
usage: groklab sweep SPEC --out DIR [--backend local|ray] [--workers N] [--address ADDR] [--dry-run] [--quiet]

Run every run of the sweep spec SPEC (TOML) into DIR: DIR/spec.toml, DIR/runs.parquet (one row per run:
flattened config + summary) and DIR/runs/<run_id>/ (ordinary run dirs). Rerunning the same command skips
finished runs and resumes interrupted ones. A failed run does not stop the others (exit code 1 at the end).
Two sweeps may run on one DIR at once: each run is trained by one of them only (DIR/locks/), the other
skips it as "running elsewhere", and runs.parquet keeps the results of both.

options:
  --backend local|ray  local: a process pool on this machine (default); ray: Ray core tasks
  --workers N          runs at once (default: all cores locally, all CPUs of a Ray cluster); each local
                       worker gets cores // N torch threads unless the spec sets `threads`
  --address ADDR       connect to an existing Ray cluster (e.g. auto or ray://head:10001); run dirs must
                       then be on a filesystem every node sees
  --dry-run            print the expanded runs as a table and exit
  --quiet              no progress bar and no table; print DIR at the end

spec:
  preset = "mlp"                     # base preset (groklab presets)
  seeds = 3                          # seed = 0, 1, 2; split_seed stays fixed unless set
  [set]                              # fixed overrides, Config dotted paths as in the CLI
  steps = 2000
  [grid]                             # cartesian product
  "task.op" = ["x+y", "x-y"]
  "task.train_frac" = [0.3, 0.5]
  [zip]                              # equal-length lists walked together
  "optim.lr" = [1e-3, 3e-3]
  "optim.weight_decay" = [1.0, 0.3]

examples:
  groklab sweep ops.toml --out sweeps/ops --dry-run
  groklab sweep ops.toml --out sweeps/ops --workers 2
  groklab sweep ops.toml --out /mnt/nfs/sweeps/ops --backend ray --address auto
  groklab query sweeps/ops "SELECT \\"task.op\\", avg(steps_to_val_acc_99) FROM runs GROUP BY 1"
"""

QUERY_HELP = """\
usage: groklab query DIR "SQL" [--format table|csv|json]

Run DuckDB SQL over a sweep dir. Views: `runs` (DIR/runs.parquet: run_id, run_dir, the flattened config
such as "task.op" and "optim.lr", status, steps, steps_to_val_acc_99, grokked, "test/acc", ...) and
`metrics` (every run's metric rows with a run_id column: step, "val/acc", "train/loss", ...). Names with
a dot or slash need double quotes.

examples:
  groklab query sweeps/ops "SELECT status, count(*) FROM runs GROUP BY status"
  groklab query sweeps/ops "SELECT \\"task.train_frac\\", avg(grokked::INT) AS frac_grokked FROM runs GROUP BY 1 ORDER BY 1"
  groklab query sweeps/ops "SELECT run_id, max(\\"val/acc\\") FROM metrics GROUP BY run_id" --format csv
"""


def split_positional(args: list[str], options: set[str]) -> tuple[list[str], list[str]]:
    """Separate positional arguments from `--name value` pairs (values of `options` are not positional)."""
    positional, rest = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--"):
            rest.append(arg)
            if arg[2:] in options and i + 1 < len(args):
                rest.append(args[i + 1])
                i += 1
        else:
            positional.append(arg)
        i += 1
    return positional, rest


def _parse(args: list[str], flags: set[str], options: set[str], n_positional: int, usage: str) -> tuple[list[str], dict[str, str | bool]]:
    from groklab.cli import parse_options

    positional, rest = split_positional(args, options)
    known, unknown = parse_options(rest, flags, options)
    if unknown:
        allowed = ", ".join(f"--{o}" for o in sorted(options | flags))
        raise UserError(f"unknown option --{next(iter(unknown))}: expected {allowed} (config fields go in the spec)")
    if len(positional) != n_positional:
        raise UserError(f"expected {n_positional} positional argument(s), got {len(positional)}: {usage.splitlines()[0]}")
    return positional, known


def command(args: list[str]) -> None:
    """`groklab sweep`: run a sweep spec (see SWEEP_HELP)."""
    if "--help" in args or "-h" in args:
        print(SWEEP_HELP)
        return
    from groklab.cli import int_option

    (spec_arg,), known = _parse(args, {"dry-run", "quiet"}, {"out", "backend", "workers", "address"}, 1, SWEEP_HELP)
    spec_path = Path(spec_arg)
    from rich.console import Console

    console = Console()
    if known.get("dry-run"):
        spec = load_spec(spec_path)
        print_plan(console, spec, expand(spec, spec_path.name))
        return
    if "out" not in known:
        raise UserError("groklab sweep needs --out DIR (where the sweep dir is written)")
    out = Path(str(known["out"]))
    quiet = bool(known.get("quiet"))
    result = run_sweep(
        spec_path,
        out,
        backend=str(known.get("backend", "local")),
        workers=int_option(known, "workers"),
        address=str(known["address"]) if "address" in known else None,
        progress=not quiet,
    )
    failed = sum(r["status"] == "failed" for r in result.rows)
    if quiet:
        print(out)
    else:
        console.print(stats_table(group_stats(result.rows, result.spec.axes), result.spec.axes))
        ran = len(result.runs) - result.skipped - len(result.elsewhere)
        elsewhere = f", {len(result.elsewhere)} running elsewhere (another process holds them)" if result.elsewhere else ""
        console.print(
            f"{len(result.runs)} runs: {ran} run now, {result.skipped} already done, {failed} failed{elsewhere}, in {result.wall_s:.1f} s\n"
            f'sweep dir: {out}  (runs.parquet; query it with `groklab query {out} "SELECT ... FROM runs"`)'
        )
    if failed:
        raise SystemExit(1)


def print_plan(console: object, spec: SweepSpec, runs: list[PlannedRun]) -> None:
    """The dry-run table: one line per run with its axis values and seed."""
    from rich.table import Table

    columns = [*spec.axes, "seed"]
    fixed = ", ".join(f"{k}={v!r}" for k, v in spec.fixed.items()) or "nothing"
    table = Table(title=f"{len(runs)} runs of preset {spec.preset}", caption=f"fixed: {fixed}")
    table.add_column("run_id")
    for name in columns:
        table.add_column(name)
    for run in runs:
        table.add_row(run.run_id, *(str(run.point.get(c, "")) for c in columns))
    console.print(table)  # type: ignore[attr-defined]


def query_command(args: list[str]) -> None:
    """`groklab query`: DuckDB SQL over a sweep dir (see QUERY_HELP)."""
    if "--help" in args or "-h" in args:
        print(QUERY_HELP)
        return
    (sweep_dir, sql), known = _parse(args, set(), {"format"}, 2, QUERY_HELP)
    fmt = str(known.get("format", "table"))
    if fmt not in ("table", "csv", "json"):
        raise UserError(f"--format {fmt!r} is not valid: expected table, csv or json")
    columns, rows = query(Path(sweep_dir), sql)
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif fmt == "json":
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(caption=f"{len(rows)} rows")
        for name in columns:
            table.add_column(name)
        for row in rows:
            table.add_row(*("NULL" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v) for v in row))
        Console().print(table)
