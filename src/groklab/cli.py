"""The `groklab` command: one argparse parser with a sub-command per feature. It parses, calls the Python API and
prints; the feature modules take typed arguments, return data and never import this module.

User errors (bad values, unknown names, a clashing --out, argparse's own usage errors) print one line to stderr
and exit with 2.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from groklab.config import UserError, leaf_fields
from groklab.stats import GROK_ACC

EXIT_USAGE = 2

USAGE = """\
usage: groklab COMMAND [ARGS]

commands:
  presets              list the presets with one line each
  train                train one run:  groklab train --preset mlp --out runs/mlp
  resume DIR           continue an interrupted run exactly; --steps N trains a run on to N steps
  convert RUN ...      rewrite a trusted run's checkpoints of an earlier groklab so that they load as plain data
  sweep SPEC --out DIR run a TOML sweep of many runs, locally or on a Ray cluster
  query DIR "SQL"      DuckDB SQL over a sweep's `runs` and `metrics` tables
  recipe NAME --out D  reproduce a published figure (a bundled sweep, its figures, findings.json)
  reproductions        rewrite docs/reproductions.md, the scoreboard of published claims, from docs/findings/
  analyze RUN          Fourier circuits, norms, RQI, sharpness and phase of a run
  export-tl RUN        the run's transformer as a TransformerLens model (extra: interp)
  report DIR           a self-contained HTML report (and PNGs) of a run or a sweep
  ls DIR               a table of the runs in a sweep or folder
  compare RUN RUN ...  overlaid curves of several runs in one report
  bench                speed side by side with the reference implementation

`groklab COMMAND --help` shows each command's options and examples.
"""

FIELD_PREFIX = "field:"
"""Namespace key prefix of the config-field options (`groklab train --task.p 7` -> args["field:task.p"])."""


class Parser(argparse.ArgumentParser):
    """argparse with exact option names and its usage errors raised as a UserError (one line, exit 2)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(allow_abbrev=False, **kwargs)  # `--ste` must not silently mean `--steps`
        # Python 3.11 reads `--optim.lr -1e-3` as two options; a dash followed by a digit is a value (as in 3.13).
        self._negative_number_matcher = re.compile(r"^-\.?\d")

    def error(self, message: str) -> NoReturn:
        # argparse prefixes a type's error with "argument --x: "; ours then read "--x 'v' is not valid: expected ...".
        raise UserError(re.sub(r"^argument (\S+): ('.*' is not valid: )", r"\1 \2", message))


def integer(expected: str, minimum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer (>= minimum), else an error naming the value and `expected`."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or (minimum is not None and number < minimum):
            raise argparse.ArgumentTypeError(f"{value!r} is not valid: expected {expected}")
        return number

    return parse


def add_config_fields(parser: Parser) -> None:
    """One option per Config field, spelled with `-` (shown in --help) and with `_` (accepted, not shown).

    Values stay strings here: `apply_overrides` converts them and names the field in its errors, as for a sweep spec.
    """
    from groklab.config import Config, get_path

    default = Config()
    group = parser.add_argument_group("config fields (dotted paths; `-` and `_` are interchangeable)")
    for path, (tp, doc) in leaf_fields().items():
        dest = FIELD_PREFIX + path
        # A bool field alone (`--compile`) means true; `--compile false` still works.
        kind: dict[str, Any] = {"nargs": "?", "const": "true", "metavar": "BOOL"} if tp is bool else {"metavar": "VALUE"}
        text = f"{doc} (default {get_path(default, path)!r})".replace("%", "%%")  # argparse %-formats help text
        group.add_argument("--" + path.replace("_", "-"), dest=dest, default=argparse.SUPPRESS, help=text, **kind)
        if "_" in path:
            group.add_argument("--" + path, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kind)


def field_overrides(args: argparse.Namespace) -> dict[str, str]:
    return {key.removeprefix(FIELD_PREFIX): value for key, value in vars(args).items() if key.startswith(FIELD_PREFIX)}


def run_dir_arg(value: str) -> Path:
    """A RUN / DIR positional that must be an existing directory."""
    path = Path(value)
    if not path.is_dir():
        raise UserError(f"{path} is not a directory holding a groklab run")
    return path


# ---------------------------------------------------------------------------------------------
# The commands: each takes the parsed arguments, calls the API and prints.


def cmd_presets(args: argparse.Namespace) -> None:
    from groklab.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, preset in PRESETS.items():
        print(f"{name:<{width}}  {preset.description}")


def cmd_train(args: argparse.Namespace) -> None:
    if args.out is None:
        raise UserError("groklab train needs --out DIR (where the run directory is written)")
    from groklab.config import apply_overrides, check_overridden_cadence
    from groklab.presets import get_preset
    from groklab.train import check

    overrides = field_overrides(args)
    config = check(apply_overrides(get_preset(args.preset), overrides))
    check_overridden_cadence(config, overrides)
    out = Path(args.out)
    if args.seeds is not None:  # N seeds as one vmapped ensemble: one run directory per seed, DIR/seed-<k>/
        from groklab.train import train_ensemble

        for k, summary in enumerate(train_ensemble(config, out, args.seeds, progress=not args.quiet)):
            report(summary, out / f"seed-{k}", args.quiet)
        return
    from groklab.train import train

    report(train(config, out, progress=not args.quiet), out, args.quiet)


def cmd_resume(args: argparse.Namespace) -> None:
    from groklab.train import resume

    path = run_dir_arg(args.dir)
    report(resume(path, steps=args.steps, progress=not args.quiet), path, args.quiet)


def cmd_convert(args: argparse.Namespace) -> None:
    from groklab.runio import convert_run

    for value in args.runs:
        path = run_dir_arg(value)
        done = convert_run(path)
        print(f"{path}: converted {len(done)} checkpoint(s)" if done else f"{path}: every checkpoint already loads as plain data")


def report(summary: dict, out: Path, quiet: bool) -> None:
    """One paragraph saying what happened and where to look."""
    if summary["status"] == "interrupted":
        print(f"interrupted at step {summary['steps']}; continue with: groklab resume {out}", file=sys.stderr)
        raise SystemExit(130)
    if quiet:
        print(out)
        return
    final = summary["final"]
    print(f"status {summary['status']} after {summary['steps']} steps in {summary['wall_s']:.1f} s")
    gen = f"  gen {final['gen/acc']:.3f}" if "gen/acc" in final else ""
    print(f"final acc  train {final['train/acc']:.3f}  val {final['val/acc']:.3f}  test {final['test/acc']:.3f}{gen}")
    if summary["status"] == "diverged":
        print(f"diverged: non-finite loss or gradient at step {summary['diverged_at_step']}; the update was not applied")
    t99, v99 = summary["steps_to_train_acc_99"], summary["steps_to_val_acc_99"]
    if summary["grokked"]:
        print(f"grokked: train acc reached {GROK_ACC} at step {t99}, val acc at step {v99} (delay {summary['grok_delay']} steps)")
    elif t99 is not None:
        print(f"not grokked: train acc reached {GROK_ACC} at step {t99}; val acc never reached {GROK_ACC} within budget")
    else:
        print(f"not grokked: neither train nor val acc reached {GROK_ACC} within budget")
    print(f"run directory: {out}  (summary.json, metrics.jsonl, metrics.parquet, checkpoints/)")


def cmd_sweep(args: argparse.Namespace) -> None:
    from rich.console import Console

    from groklab.stats import group_stats
    from groklab.sweep import expand, load_spec, run_sweep

    spec_path = Path(args.spec)
    console = Console()
    if args.dry_run:
        from groklab.sweep.cost import estimate

        spec = load_spec(spec_path)
        runs = expand(spec, spec_path.name)
        console.print(plan_table(spec, runs))
        print_cost(console, {spec_path.name: estimate(runs, args.pack, args.workers, say=say)})
        return
    if args.out is None:
        raise UserError("groklab sweep needs --out DIR (where the sweep dir is written)")
    out = Path(args.out)
    result = run_sweep(
        spec_path, out, backend=args.backend, workers=args.workers, address=args.address, progress=not args.quiet, pack=args.pack
    )
    failed = sum(r["status"] == "failed" for r in result.rows)
    if args.quiet:
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


def say(message: str) -> None:
    print(message, file=sys.stderr)


def duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def figure(x: float) -> str:
    """Three significant digits, without an exponent for big numbers (1,130 rather than 1.13e+03)."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def print_cost(console: Any, estimates: dict[str, Any]) -> None:
    """The dry-run's cost: one line per kind of task of each sweep (recipe part), then the total."""
    from rich.table import Table

    first = next(iter(estimates.values()))
    table = Table(title="estimated cost on this machine", caption=f"calibration: {first.cache}")
    for name in ("model, task", "device", "seeds/task", "runs", "ms/step", "ms/eval", "hours"):
        table.add_column(name, justify="left" if name in ("model, task", "device") else "right", overflow="fold")
    for name, est in estimates.items():
        if len(estimates) > 1:
            table.add_section()
            table.add_row(f"[bold]{name}")
        for line in est.lines:
            measured = line.step_s is not None and line.eval_s is not None and line.hours is not None
            cells = [figure(line.step_s * 1e3), figure(line.eval_s * 1e3), figure(line.hours)] if measured else ["-", "-", "?"]
            table.add_row(line.label, f"{line.device} ×{line.threads}", str(line.members), str(line.runs), *cells)
    console.print(table)
    for est in estimates.values():
        for line in est.unmeasured:
            console.print(f"not measured: {line.label}: {line.error}")
    cpu, gpu = (sum(e.hours(on_cpu) for e in estimates.values()) for on_cpu in (True, False))
    wall = sum(e.wall_s for e in estimates.values())
    hours = f"{figure(cpu)} CPU-hours" + (f" and {figure(gpu)} GPU-hours" if gpu else "")
    console.print(
        f"estimate: {hours}, about {duration(wall)} here with {first.workers} worker(s) "
        "(an upper bound where runs stop early; checkpoints not counted)"
    )


def plan_table(spec: Any, runs: list[Any]) -> Any:
    """The dry-run table: one line per run with its axis values and seed."""
    from rich.table import Table

    columns = [*spec.axes, *spec.replicates]
    fixed = ", ".join(f"{k}={v!r}" for k, v in spec.fixed.items()) or "nothing"
    table = Table(title=f"{len(runs)} runs of preset {spec.preset}", caption=f"fixed: {fixed}")
    table.add_column("run_id")
    for name in columns:
        table.add_column(name)
    for run in runs:
        table.add_row(run.run_id, *(str(run.point.get(c, "")) for c in columns))
    return table


def plus_minus(est: Any, digits: int) -> str:
    """An Estimate as `mean ± half-width` of its t-interval (symmetric), the mean alone for one value, `-` for none."""
    if est.n == 0:
        return "-"
    return f"{est.mean:.{digits}f}" if est.n < 2 else f"{est.mean:.{digits}f} ± {(est.hi - est.lo) / 2:.{digits}f}"


def stats_table(groups: list[Any], axes: list[str]) -> Any:
    """A rich Table of `group_stats` output, one line per group, every cell whole (80 columns hold three short axes).

    Runs that never grokked are censored: counted in `grokked`, never averaged; the median shows `>budget` when it is.
    """
    from rich import box
    from rich.table import Table

    headers = [short_header(a) for a in axes]
    headers += ["done", "grokked", "steps to grok", "median", "test acc"]
    rows = []
    for g in groups:
        median = f"{g.median_steps_to_grok:.0f}" if g.median_steps_to_grok is not None else (f">{g.budget}" if g.done else "-")
        rows.append([
            *(str(g.key[a]) for a in axes), f"{g.done}/{g.runs}" + (f" ({g.failed} failed)" if g.failed else ""),
            f"{g.grokked}/{g.done}",
            plus_minus(g.steps_to_grok, 0), median, plus_minus(g.test_acc, 3),
        ])  # fmt: skip
    table = Table(
        title="mean ± 95% t-interval over seeds; steps to grok: over the runs that grokked (99% val); the median counts the others as ∞",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, header in enumerate(headers):
        # a column never narrower than its widest cell: a wide table runs past the edge rather than cutting a number
        width = max([len(header), *(len(row[i]) for row in rows)])
        table.add_column(header, justify="left" if i < len(axes) else "right", no_wrap=True, min_width=width)
    for row in rows:
        table.add_row(*row)
    return table


def cmd_query(args: argparse.Namespace) -> None:
    from groklab.sweep import query

    columns, rows = query(Path(args.dir), args.sql)
    if args.format == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    elif args.format == "json":
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


def cmd_recipe(args: argparse.Namespace) -> None:
    from groklab.experiments.recipes import MODULES, get_recipe, recipe_runs, run_recipe, spec_text

    if args.list:
        for name in MODULES:
            try:
                print(f"{name:20s} {get_recipe(name).description}")
            except UserError:
                continue  # a recipe whose module is not installed is simply not offered
        return
    if len(args.name) != 1:
        raise UserError(f"groklab recipe takes one NAME, got {len(args.name)}: see groklab recipe --list")
    recipe = get_recipe(args.name[0])
    if args.print_spec is not None:
        print(spec_text(recipe, args.print_spec, args.scale), end="")
        return
    if args.dry_run:
        from rich.console import Console

        from groklab.sweep.cost import estimate

        parts = recipe_runs(recipe, args.scale)
        console = Console()
        for part, runs in parts.items():
            console.print(f"{recipe.name} ({args.scale}) part {part}: {len(runs)} runs")
        print_cost(console, {part: estimate(runs, args.pack, args.workers, say=say) for part, runs in parts.items()})
        return
    if args.out is None:
        raise UserError("groklab recipe needs --out DIR")
    out = Path(args.out)
    numbers = run_recipe(
        recipe.name,
        out,
        scale=args.scale,
        backend=args.backend,
        workers=args.workers,
        address=args.address,
        quiet=args.quiet,
        pack=args.pack,
    )
    if args.quiet:
        print(out / "findings.json")
    else:
        print(f"\n{recipe.name} ({args.scale}): {numbers.get('headline', '')}")
        print(f"findings: {out / 'findings.json'}  report: {out / 'report' / 'index.html'}")


def cmd_analyze(args: argparse.Namespace) -> None:
    from groklab.analysis import analyze_run
    from groklab.runio import load_run

    path = run_dir_arg(args.run)
    result = analyze_run(load_run(path), step=args.step, sharpness=not args.no_sharpness)
    if args.json:
        print(json.dumps(result))
    else:
        print_analysis(result, path)


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_analysis(result: dict[str, Any], run_path: Path) -> None:
    """`analyze_run`'s result as two tables: the measures, then the per-parameter norms."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    main = Table(title=f"{run_path} at step {result['step']}", show_header=False)
    main.add_column("measure", style="bold")
    main.add_column("value")
    main.add_row("phase", result["phase"])
    if (b := result["phase_boundaries"]) is not None:
        main.add_row(
            "Nanda phases",
            f"memorization → {b['memorization_end']}, circuit formation → {_short(b['circuit_formation_end'])}, "
            f"cleanup → {_short(b['cleanup_end'])} (from {b['cleanup_from']})",
        )
    if (f := result["fourier"]) is not None:
        main.add_row("key frequencies", f"{', '.join(map(str, f['key_frequencies'])) or 'none'}  ({len(f['key_frequencies'])})")
        main.add_row("spectrum", f"{f['state']}: the key frequencies hold {f['key_share']:.0%} of the power")
        for key in ("gini", "full_loss", "restricted_loss", "excluded_loss", "logit_variance_explained"):
            main.add_row(key.replace("_", " "), _short(f[key]))
    n = result["norms"]
    main.add_row("weight norm total", _short(n["total"]))
    main.add_row("last-layer norm", _short(n["last_layer"]))
    neurons = sorted(n["per_neuron"], reverse=True)
    if neurons:
        main.add_row("neuron norms", f"max {neurons[0]:.4g}, median {neurons[len(neurons) // 2]:.4g}, min {neurons[-1]:.4g}")
    main.add_row("RQI", _short(result["rqi"]))
    if (s := result["sharpness"]) is not None:
        main.add_row("top Hessian eigenvalue", _short(s["top_eigenvalue"]))
        main.add_row("ε-sharpness", _short(s["eps_sharpness"]))
    if (e := result["embeddings"]) is not None:
        main.add_row("embedding circularity", _short(e["circularity"]))
    console.print(main)
    layers = Table(title="per-parameter norms")
    layers.add_column("parameter")
    layers.add_column("norm", justify="right")
    for name, value in n["per_layer"].items():
        layers.add_row(name, _short(value))
    console.print(layers)


def cmd_export_tl(args: argparse.Namespace) -> None:
    from groklab.analysis.tl import export_tl

    out, diff = export_tl(run_dir_arg(args.run), None if args.out is None else Path(args.out), step=args.step)
    print(f"wrote {out}: HookedTransformer with logits within {diff:.2g} of groklab's on every example")


def cmd_report(args: argparse.Namespace) -> None:
    from groklab.report import report as write_report

    page = write_report(Path(args.dir), quiet=args.quiet, analyze=not args.no_analysis, sharpness=not args.no_sharpness)
    print(page if args.quiet else f"report written: {page}  (open it in a browser; PNGs beside it)")


def cmd_reproductions(args: argparse.Namespace) -> None:
    from groklab.experiments.reproductions import write_reproductions

    page, counts = write_reproductions(Path.cwd())
    print(f"{page}: " + ", ".join(f"{n} {verdict}" for verdict, n in counts.items()))


def cmd_compare(args: argparse.Namespace) -> None:
    if len(args.runs) < 2:
        raise UserError(f"groklab compare needs at least two run directories, got {len(args.runs)}")
    if args.out is None:
        raise UserError("groklab compare needs --out DIR (where the comparison report is written)")
    from groklab.report import compare_runs

    page = compare_runs([Path(p) for p in args.runs], Path(args.out))
    print(page if args.quiet else f"comparison written: {page}")


def cmd_bench(args: argparse.Namespace) -> None:
    from groklab.bench import CONFIG_KEYS, GROK_CASES, GROK_KEYS, PEER_NAME, peer_dir, run_bench, time_to_grok

    only = None
    if args.only is not None:
        only = {name.strip() for name in args.only.split(",") if name.strip()}
        if not only or not only <= set(CONFIG_KEYS) | set(GROK_KEYS):
            allowed = ", ".join(dict.fromkeys((*CONFIG_KEYS, *GROK_KEYS)))
            raise UserError(f"--only={args.only!r} is not valid: expected a comma-separated list of {allowed}")
    folder = peer_dir(args.peer)
    if folder is None:  # the JSON's peer fields are null then: say why, once, beside it
        print(f"note: the peer implementation ({PEER_NAME}) was not found: timing groklab alone; point --peer DIR or "
              "$GROKLAB_PEER_DIR at its folder", file=sys.stderr)  # fmt: skip
    compile = not (args.quick or args.no_compile)
    result = run_bench(quick=args.quick, compile=compile, threads=args.threads, folder=folder, only=only)
    if args.time_to_grok:
        cases = [c for c in GROK_CASES if only is None or c.key in only]
        result["time_to_grok"] = time_to_grok(cases, args.seeds, args.threads, folder, say=lambda line: print(line, file=sys.stderr), compile=compile)
    if args.json:
        print(json.dumps(result))
    else:
        print_bench(result)


def print_bench(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from groklab.bench import COMPILED, RATIO_SUFFIX

    table = Table(
        title=f"groklab bench: {result['device']}, {result['threads']} threads, peak {result['peak_gflops']} GFLOP/s",
        caption="GFLOP/s on the FLOPs a step stands for (the plain computation: a transformer's at the last position, an MLP's "
        "from concatenated embeddings); --json also gives the fewer the fast path executes (executed_gflop_per_step)",
    )
    for column in ("config", "ms/step", "steps/s", "tokens/s", "GFLOP/s", "of peak", "peer ms/step", "× peer"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for c in result["configs"]:
        peer = "-" if c["peer_ms_per_step"] is None else f"{c['peer_ms_per_step']:.1f}"
        ratio = "-" if c["ratio_vs_peer"] is None else f"{c['ratio_vs_peer']:.2f}"
        tokens = "-" if c["tokens_per_s"] is None else f"{c['tokens_per_s']:,}"
        table.add_row(
            c["name"],
            f"{c['ms_per_step']:.2f}",
            f"{c['steps_per_s']:.1f}",
            tokens,
            f"{c['gflops']:.1f}",
            f"{c['fraction_of_peak']:.0%}",
            peer,
            ratio,
        )
    console = Console()
    console.print(table)
    if "time_to_grok" not in result:
        return
    grok = Table(
        title="time to grok: median \\[min-max] over seeds, process start included",
        caption="steps: the first evaluation at the target val acc (0.99; fast-grok 0.95), every 100 steps for Power; "
        "never: not within the run's max steps; × peer: the peer's median seconds over this side's; paired: the median "
        "over seeds of the peer's seconds over this side's at the same seed, \\[with the interval of that median] (distribution-free: 95% "
        "from 6 seeds; with 5, min-max at 94%)",
    )
    for column in ("run (seeds)", "side", "steps", "seconds", "× peer", "× peer, paired"):
        grok.add_column(column, justify="left" if column in ("run (seeds)", "side") else "right")
    for entry in result["time_to_grok"]:
        sides = [side for side in ("groklab", "peer", COMPILED) if side in entry]
        for side in sides:
            suffix = RATIO_SUFFIX.get(side)
            ratios = [entry.get(f"{kind}ratio_{suffix}") for kind in ("", "paired_")]
            cells = ["" if suffix is None or ratio is None else f"{ratio:.2f}" for ratio in ratios]
            if cells[1] and (interval := entry.get(f"paired_ratio_{suffix}_interval")):
                cells[1] += f" \\[{interval[0]:.2f}-{interval[1]:.2f}]"
            name = f"{entry['name']} ({len(entry['seeds'])})" if side == sides[0] else ""
            grok.add_row(name, side, spread_cell(entry[side]["steps"]), spread_cell(entry[side]["seconds"]), *cells)
    console.print(grok)


def spread_cell(spread: dict[str, Any]) -> str:
    """`median [min-max]` of a time-to-grok spread (rich markup), with `, k never` for censored seeds."""
    def number(x: float) -> str:
        return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"

    median = "never" if spread["median"] is None else number(spread["median"])
    span = "" if spread["min"] is None else f" \\[{number(spread['min'])}-{number(spread['max'])}]"
    return median + span + (f", {spread['censored']} never" if spread["censored"] else "")


LS_HEADERS = {
    "run_id": "run",
    "steps_to_train_acc_99": "fit@",
    "steps_to_val_acc_99": "grok@",
    "grok_delay": "delay",
    "train/acc": "train",
    "val/acc": "val",
    "test/acc": "test",
    "train_frac": "frac",
    "weight_decay": "wd",
    "split_seed": "split",
}
"""Short headers for the terminal table; a config column shows the last part of its dotted name."""
LS_LOW_VALUE = ("split_seed", "train/acc", "seed")
"""Left out first, in this order, when the table is wider than the terminal (then swept fields, from the right)."""
LS_STATUS_STYLES = {"finished": "green", "incomplete": "yellow", "interrupted": "yellow", "diverged": "red", "failed": "red"}


def cmd_ls(args: argparse.Namespace) -> None:
    from groklab.report import SHOWN_RESULTS, ls_rows
    from groklab.report.data import varying_columns
    from groklab.stats import SEED_COLUMNS

    rows = ls_rows(Path(args.dir))
    varying = varying_columns(rows)
    seeds = [c for c in SEED_COLUMNS if c in varying]
    groups = [c for c in varying if c not in seeds]
    columns = ["run_id", *groups, *seeds, "status", *SHOWN_RESULTS]
    if args.quiet:  # full values, tab-separated, every column: for scripts
        from groklab.report.page import fmt

        print("\t".join(columns))
        for row in rows:
            print("\t".join("" if row.get(c) is None else fmt(row.get(c)) for c in columns))
        return
    print_ls_table(rows, columns, groups, f"{len(rows)} runs in {args.dir}")


def short_header(column: str) -> str:
    """A table header for a column: its LS_HEADERS abbreviation, else its last dotted part's, else that part."""
    leaf = column.split(".")[-1]
    return LS_HEADERS.get(column, LS_HEADERS.get(leaf, leaf))


def ls_cell(column: str, value: Any) -> str:
    from groklab.report.page import fmt

    if column.endswith("/acc") and isinstance(value, float) and value == value:
        return f"{value:.3f}"  # accuracies aligned on three decimals
    return fmt(value)


def print_ls_table(rows: list[dict[str, Any]], columns: list[str], groups: list[str], title: str) -> None:
    """`groklab ls` for a person: every kept cell whole, the table as wide as the terminal (80 when piped).

    Columns are left out (low-value ones first, then swept fields from the right) rather than cut to "…".
    """
    from rich.console import Console
    from rich.text import Text

    width = shutil.get_terminal_size().columns
    headers = {c: short_header(c) for c in columns}
    cells = {c: [ls_cell(c, row.get(c)) for row in rows] for c in columns}
    widths = {c: max([len(headers[c]), *map(len, cells[c])]) for c in columns}
    shown, gap = list(columns), 2
    droppable = [c for c in LS_LOW_VALUE if c in columns] + groups[::-1]
    while sum(widths[c] for c in shown) + gap * (len(shown) - 1) > width:
        if gap == 2:
            gap = 1
        elif droppable:
            shown.remove(droppable.pop(0))
        else:
            break  # only the key columns are left: let a long run id overflow rather than cut it
    left = {"run_id", "status", *groups}

    def line(values: dict[str, str], status_style: str = "") -> Text:
        text = Text()
        for i, c in enumerate(shown):
            cell = values[c].ljust(widths[c]) if c in left else values[c].rjust(widths[c])
            text.append(" " * gap if i else "")
            text.append(cell, style=status_style if c == "status" else "")
        return text

    console = Console(highlight=False, soft_wrap=True)
    console.print(title, markup=False)
    console.print(line(headers), style="bold")
    for i, row in enumerate(rows):
        console.print(line({c: cells[c][i] for c in shown}, LS_STATUS_STYLES.get(str(row.get("status")), "")))
    legend = f"fit@ / grok@: first step with train / val accuracy ≥ {GROK_ACC}; delay: grok@ − fit@; train, val, test: final accuracy."
    hidden = [headers[c] for c in columns if c not in shown]
    if hidden:
        legend += f" Left out to fit {width} columns: {', '.join(hidden)} (--quiet prints every column)."
    console.print(textwrap.fill(legend, width), markup=False)


# ---------------------------------------------------------------------------------------------
# The parser: one sub-command each, its help text and examples.

SWEEP_SPEC_HELP = """\
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

"""

EXPORT_TL_LOAD_HELP = """\
load it back (hooks included):
  from groklab.analysis.tl import load_hooked
  model = load_hooked("RUN/transformer_lens.pt")

"""

NO_CONFIG_FIELDS = {
    "resume": "a resumed run keeps its config (--steps N alone raises its budget)",
    "sweep": "config fields go in the spec",
    "recipe": "a recipe's config is its bundled spec (see --print-spec)",
}
"""Why a command other than train refuses a config-field option."""


def build_parser() -> dict[str, Parser]:
    """The parsers of the `groklab` sub-commands, by name (one parent parser holds them)."""
    parser = Parser(prog="groklab", add_help=False)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(
        name: str, run: Callable[[argparse.Namespace], None], usage: str, description: str, examples: list[str], epilog: str = ""
    ) -> Parser:
        sub = subparsers.add_parser(
            name, usage=usage, description=description, epilog=epilog + "examples:\n" + "".join(f"  {e}\n" for e in examples)
        )
        sub.set_defaults(handler=run)
        return sub

    def quiet(sub: Parser, what: str) -> None:
        sub.add_argument("--quiet", action="store_true", help=what)

    def workers_backend_address(sub: Parser) -> None:
        sub.add_argument(
            "--backend", default="local", metavar="local|ray", help="local: a process pool on this machine (default); ray: Ray core tasks"
        )
        sub.add_argument(
            "--workers",
            type=integer("an integer >= 1"),
            metavar="N",
            help="runs at once (default: all cores locally, all CPUs of a Ray cluster); each local worker gets cores // N torch "
            "threads unless the spec sets `threads`",
        )
        sub.add_argument(
            "--address",
            metavar="ADDR",
            help="connect to an existing Ray cluster (e.g. auto or ray://head:10001); run dirs must then be on a filesystem "
            "every node sees",
        )
        sub.add_argument(
            "--pack",
            type=integer("an integer >= 1 (1 trains every run on its own)", minimum=1),
            metavar="N",
            help="train runs that differ only in their seed as one vmapped ensemble of up to N per worker, each still its own "
            "run dir (default: on where the runs train on a GPU, off on a CPU)",
        )
        sub.add_argument(
            "--dry-run",
            action="store_true",
            help="print the expansion and its estimated cost on this machine (CPU-hours; a few seconds of calibration per kind of run, minutes for a large LM; cached "
            "per machine) and exit",
        )

    def step(sub: Parser, what: str) -> None:
        sub.add_argument("--step", type=integer("an integer step with a model checkpoint"), metavar="N", help=what)

    command("presets", cmd_presets, "groklab presets", "List the presets with one line each.", ["groklab presets"])

    sub = command(
        "train",
        cmd_train,
        "groklab train --preset NAME --out DIR [--quiet] [--<field> VALUE ...]\n"
        "       groklab train --preset NAME --out DIR --seeds N [...]   (N seeds at once, as one vmapped ensemble)",
        "Train one run into DIR (created; if DIR already holds this very run, it is resumed).",
        [
            "groklab train --preset mlp --out runs/mlp",
            "groklab train --preset mlp --out runs/mul --task.op x*y --task.p 101 --task.train-frac 0.4",
            "groklab train --preset power-fig1 --out runs/fig1 --optim.weight-decay 0.5 --seed 3 --steps 20000",
            "groklab train --preset mlp --out runs/s --seeds 8",
        ],
    )
    sub.add_argument(
        "--preset", default="mlp", metavar="NAME", help="the preset the fields below override (default mlp; see groklab presets)"
    )
    sub.add_argument("--out", metavar="DIR", help="the run directory to write (required)")
    sub.add_argument(
        "--seeds",
        type=integer("an integer >= 1 (the number of seeds to train)", minimum=1),
        metavar="N",
        help="train seeds seed .. seed+N-1 as one vmapped ensemble, one run directory per seed: DIR/seed-<k>/",
    )
    quiet(sub, "no progress bar; print only the run directory")
    add_config_fields(sub)

    sub = command(
        "resume",
        cmd_resume,
        "groklab resume DIR [--steps N] [--quiet]",
        "Continue the run in DIR from its newest valid checkpoint; with --steps, train it on to N steps (finished or not).",
        ["groklab resume runs/mlp", "groklab resume runs/mlp --steps 20000"],
    )
    sub.add_argument("dir", metavar="DIR")
    sub.add_argument(
        "--steps",
        type=integer("an integer >= 1 (the run's new step budget)", minimum=1),
        metavar="N",
        help="raise the run's step budget to N and train on from its newest checkpoint, as though it had had N from the start "
        "(config.json records the old budget in extended_from); refused for a run that diverged or stopped early",
    )
    quiet(sub, "no progress bar; print only the run directory")

    sub = command(
        "convert",
        cmd_convert,
        "groklab convert RUN [RUN ...]",
        "Rewrite the checkpoints that an earlier groklab wrote (NumPy objects in the resumable state) in today's format,\n"
        "which loads as tensors and plain values only. Reading the old files runs whatever code they hold, so convert\n"
        "only runs you trust (your own); every other command refuses such files instead of loading them.",
        ["groklab convert runs/mlp", "groklab convert runs/ens/seed-*"],
    )
    sub.add_argument("runs", nargs="+", metavar="RUN")

    sub = command(
        "sweep",
        cmd_sweep,
        "groklab sweep SPEC --out DIR [--backend local|ray] [--workers N] [--address ADDR] [--pack N] [--dry-run] [--quiet]",
        "Run every run of the sweep spec SPEC (TOML) into DIR: DIR/spec.toml, DIR/runs.parquet (one row per run:\n"
        "flattened config + summary) and DIR/runs/<run_id>/ (ordinary run dirs). Rerunning the same command skips\n"
        "finished runs and resumes interrupted ones. A failed run does not stop the others (exit code 1 at the end).\n"
        "Two sweeps may run on one DIR at once: each run is trained by one of them only (DIR/locks/), the other\n"
        'skips it as "running elsewhere", and runs.parquet keeps the results of both.',
        [
            "groklab sweep ops.toml --out sweeps/ops --dry-run",
            "groklab sweep ops.toml --out sweeps/ops --workers 2",
            "groklab sweep seeds.toml --out sweeps/seeds --pack 8",
            "groklab sweep ops.toml --out /mnt/nfs/sweeps/ops --backend ray --address auto",
            'groklab query sweeps/ops "SELECT \\"task.op\\", avg(steps_to_val_acc_99) FROM runs GROUP BY 1"',
        ],
        SWEEP_SPEC_HELP,
    )
    sub.add_argument("spec", metavar="SPEC")
    sub.add_argument("--out", metavar="DIR", help="the sweep directory to write (required, except with --dry-run)")
    workers_backend_address(sub)
    quiet(sub, "no progress bar and no table; print DIR at the end")

    sub = command(
        "query",
        cmd_query,
        'groklab query DIR "SQL" [--format table|csv|json]',
        "Run DuckDB SQL over a sweep dir. Views: `runs` (DIR/runs.parquet: run_id, run_dir, the flattened config\n"
        'such as "task.op" and "optim.lr", status, steps, steps_to_val_acc_99, grokked, "test/acc", ...) and\n'
        '`metrics` (every run\'s metric rows with a run_id column: step, "val/acc", "train/loss", ...). Names with\n'
        "a dot or slash need double quotes.",
        [
            'groklab query sweeps/ops "SELECT status, count(*) FROM runs GROUP BY status"',
            'groklab query sweeps/ops "SELECT \\"task.train_frac\\", avg(grokked::INT) AS frac_grokked FROM runs GROUP BY 1 ORDER BY 1"',
            'groklab query sweeps/ops "SELECT run_id, max(\\"val/acc\\") FROM metrics GROUP BY run_id" --format csv',
        ],
    )
    sub.add_argument("dir", metavar="DIR")
    sub.add_argument("sql", metavar="SQL")
    sub.add_argument("--format", default="table", choices=("table", "csv", "json"), help="table (default), csv or json")

    sub = command(
        "recipe",
        cmd_recipe,
        "groklab recipe NAME --out DIR [--scale quick|faithful|paper] [--workers N] [--backend local|ray] [--address ADDR] [--pack N]\n"
        "       [--dry-run] [--quiet]\n"
        "       groklab recipe --list",
        "Reproduce a published result: run the recipe's bundled sweep(s) into DIR/<part>/, then write\n"
        "DIR/findings.json (the headline numbers), DIR/figures/*.png and DIR/report/index.html.\n"
        "Rerunning the same command finishes an interrupted recipe (finished runs are skipped).",
        [
            "groklab recipe power-fig1 --out recipes/fig1",
            "groklab recipe grokfast --out recipes/grokfast --workers 2",
            "groklab recipe power-fig2 --out /mnt/nfs/fig2 --scale paper --backend ray --address auto",
            "groklab recipe power-fig2 --scale paper --dry-run",
            "groklab recipe omnigrok-digits --print-spec sweep --scale paper > mine.toml",
        ],
    )
    sub.add_argument("name", nargs="*", metavar="NAME")
    sub.add_argument("--out", metavar="DIR", help="the recipe directory to write")
    sub.add_argument(
        "--scale",
        default="quick",
        metavar="quick|faithful|paper",
        help="quick (default): minutes on a laptop CPU, smaller budgets; faithful: the paper's model, optimizer, loss and data "
        "with budgets and seeds cut for a 2-core CPU (the cuts are listed in findings.json); paper: the paper's settings",
    )
    workers_backend_address(sub)
    sub.add_argument("--list", action="store_true", help="list the recipes with one line each")
    sub.add_argument("--print-spec", metavar="PART", help="print the bundled sweep spec of PART at --scale (to copy and edit) and exit")
    quiet(sub, "no progress bars; print DIR/findings.json's path at the end")

    sub = command(
        "analyze",
        cmd_analyze,
        "groklab analyze RUN [--step N] [--json] [--no-sharpness]",
        "Measure the mechanism of a run's newest (or step N's) model checkpoint: Fourier key frequencies, Gini,\n"
        "restricted / excluded loss (modular tasks), weight norms, RQI (x+y), sharpness, embedding circularity,\n"
        "the run's phase and Nanda's phase boundaries.",
        ["groklab analyze runs/mlp", "groklab analyze runs/mlp --step 512 --json"],
    )
    sub.add_argument("run", metavar="RUN")
    step(sub, "analyze the weights-only checkpoint of step N (see RUN/checkpoints/model-*.pt)")
    sub.add_argument("--json", action="store_true", help="print the result as one JSON object instead of tables")
    sub.add_argument("--no-sharpness", action="store_true", help="skip the Hessian power iteration (the slowest part)")

    sub = command(
        "export-tl",
        cmd_export_tl,
        "groklab export-tl RUN [--step N] [--out FILE]",
        "Build a TransformerLens HookedTransformer from a run of the `nanda` or `power` model (weights of the newest,\n"
        "or step N's, checkpoint), check that its last-position logits match groklab's on every example to 1e-4, and\n"
        "save its config, state_dict and the power model's post-residual LayerNorms to FILE (default\n"
        "RUN/transformer_lens.pt). The power model's LayerNorms come after each residual addition, which TransformerLens\n"
        "blocks cannot express: they run as permanent hooks on blocks.i.hook_resid_mid and blocks.i.hook_resid_post.\n"
        "Needs the `interp` extra.",
        ["groklab export-tl runs/nanda", "groklab export-tl runs/nanda --step 4096 --out nanda-4096.pt"],
        EXPORT_TL_LOAD_HELP,
    )
    sub.add_argument("run", metavar="RUN")
    step(sub, "export the weights-only checkpoint of step N")
    sub.add_argument("--out", metavar="FILE", help="where to save it (default RUN/transformer_lens.pt)")

    sub = command(
        "report",
        cmd_report,
        "groklab report DIR [--quiet] [--no-analysis] [--no-sharpness]",
        "Write DIR/report/index.html (opens from disk, offline) and a PNG per figure, for a run directory, a sweep\n"
        "directory (runs.parquet or spec.toml) or a folder of run directories. A sweep report also writes a page\n"
        "per run (report/runs/<id>.html) and a sortable table linking to them.",
        ["groklab report runs/mlp", "groklab report sweeps/fig2 --quiet", "groklab report runs/nanda --no-sharpness"],
    )
    sub.add_argument("dir", metavar="DIR")
    quiet(sub, "print only the page's path")
    sub.add_argument(
        "--no-analysis", action="store_true", help="run reports: skip the checkpoint analysis (Fourier, norms, embeddings, sharpness)"
    )
    sub.add_argument(
        "--no-sharpness", action="store_true", help="run reports: skip only the Hessian sharpness (the slowest part of the analysis)"
    )

    command(
        "reproductions",
        cmd_reproductions,
        "groklab reproductions",
        "Rewrite docs/reproductions.md, the scoreboard of published claims, from the recipes' findings committed under\n"
        "docs/findings/<recipe>-<scale>.json (run it at the repository root).",
        ["groklab reproductions"],
    )

    sub = command(
        "ls",
        cmd_ls,
        "groklab ls DIR [--quiet]",
        "List the runs of a sweep directory or of a folder of run directories: status, steps, steps to 99%\n"
        "train and val accuracy (fit@, grok@: the grokking point), final accuracies, and the swept fields. The\n"
        "table fits the terminal (80 columns when piped), leaving out low-value columns rather than cutting cells.\n"
        "--quiet prints every column, tab-separated, with full values.",
        ["groklab ls sweeps/fig2", "groklab ls runs", "groklab ls sweeps/fig2 --quiet | sort -t$'\\t' -k5 -n"],
    )
    sub.add_argument("dir", metavar="DIR")
    quiet(sub, "tab-separated values of every column, for scripts")

    sub = command(
        "compare",
        cmd_compare,
        "groklab compare RUN RUN [RUN ...] --out DIR [--quiet]",
        "Overlay the accuracy and loss curves of several runs in one report, DIR/index.html (plus PNGs),\n"
        "with a table of what differs between their configs.",
        ["groklab compare runs/wd1 runs/wd0 --out reports/wd", "groklab compare sweeps/fig2/runs/* --out reports/fig2-all"],
    )
    sub.add_argument("runs", nargs="+", metavar="RUN")
    sub.add_argument("--out", metavar="DIR", help="the report directory to write (required)")
    quiet(sub, "print only the page's path")

    sub = command(
        "bench",
        cmd_bench,
        "groklab bench [--json] [--quick] [--no-compile] [--time-to-grok [--seeds N]] [--threads N] [--peer DIR] [--only LIST]",
        "Time groklab's training step against the peer implementation (danielmamay/grokking) side by side, and\n"
        "against this machine's matmul peak: Power transformer (x+y mod 97, batch 512, AdamW), Nanda full batch,\n"
        "MLP batch 512, Murty et al.'s language model (depth 6, width 512, batch 8), and vmapped ensembles of\n"
        "8 MLPs and of 8 Power transformers (64 and 256 on a GPU).\n"
        "--time-to-grok also launches fresh runs, seed by seed, alternating with the peer's at the same settings:\n"
        "the Power transformer on x+y and x/y mod 97 at 50% (both evaluated every 100 steps), and the mlp and\n"
        "fast-grok presets against their own targets; medians and ranges over seeds, every seed in --json. Unless\n"
        "--no-compile, the Power runs are also made with --compile (its first compile before the seeds).",
        ["groklab bench", "groklab bench --json --threads 2 --time-to-grok", "groklab bench --quick --only power,mlp",
         "groklab bench --time-to-grok --only power --seeds 7"],
    )
    sub.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    sub.add_argument(
        "--quick", action="store_true", help="short timing windows and no compiled variants (seconds, not minutes; for smoke tests)"
    )
    sub.add_argument(
        "--no-compile",
        action="store_true",
        help="skip the torch.compile variants (by default each transformer/MLP config is also timed compiled, and the "
        "Power time-to-grok runs also made with --compile)",
    )
    sub.add_argument(
        "--time-to-grok",
        action="store_true",
        help="also measure steps and wall seconds from process start to grokking, over seeds, beside the peer's",
    )
    sub.add_argument(
        "--seeds",
        type=integer("an integer >= 1", minimum=1),
        default=5,
        metavar="N",
        help="seeds per time-to-grok run (default 5; fast-grok twice as many)",
    )
    sub.add_argument(
        "--threads",
        type=integer("an integer >= 0 (0: torch's default)", minimum=0),
        default=0,
        metavar="N",
        help="CPU threads (default: torch's default for this machine)",
    )
    sub.add_argument(
        "--peer", metavar="DIR", help="the peer's folder (default: $GROKLAB_PEER_DIR, else ../shared/peers/danielmamay-grokking)"
    )
    sub.add_argument(
        "--only",
        metavar="LIST",
        help="time only these, comma-separated: power, bf16 (power with --bf16), nanda, mlp, lm, ensemble, fast-grok (sgemm always runs; power, mlp and "
        "fast-grok also choose the time-to-grok runs)",
    )
    return subparsers.choices


def refuse_extra(command: str, extra: list[str]) -> NoReturn:
    """A one-line error for the first argument the command's parser did not take."""
    arg = extra[0]
    if not arg.startswith("-"):
        raise UserError(f"unexpected argument {arg!r}: see groklab {command} --help")
    name = arg.partition("=")[0]
    if command == "train":
        from groklab.config import Config, apply_overrides

        apply_overrides(Config(), {name.removeprefix("--"): None})  # not a field: raises its error with the "did you mean" hint
    from groklab.config import normalize_path

    if command in NO_CONFIG_FIELDS and normalize_path(name.removeprefix("--")) in leaf_fields():
        raise UserError(f"groklab {command} takes no config fields (got {name}): {NO_CONFIG_FIELDS[command]}")
    raise UserError(f"groklab {command} has no option {name}: see groklab {command} --help")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else EXIT_USAGE
    try:
        commands = build_parser()
        if argv[0] not in commands:
            raise UserError(f"unknown command {argv[0]!r}: expected one of {', '.join(commands)}")
        # Intermixed: options may come before, between or after the positionals (`compare a --out d b`).
        args, extra = commands[argv[0]].parse_known_intermixed_args(argv[1:])
        if extra:
            refuse_extra(argv[0], extra)
        args.handler(args)
        sys.stdout.flush()  # so that a reader that went away is noticed here, not at interpreter exit
    except SystemExit as done:  # --help (0), or a command's own exit code
        return done.code if isinstance(done.code, int) else 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader stopped early (`groklab ls DIR | head -1`): end quietly. Pointing stdout at devnull keeps
        # the interpreter's final flush of the unwritten rest from raising the same error again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
