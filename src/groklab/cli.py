"""The `groklab` command: thin wrappers that parse arguments, call the Python API and print.

User errors (bad values, unknown names, a clashing --out) print one line to stderr and exit with 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from groklab.config import UserError, leaf_fields

EXIT_USAGE = 2

TRAIN_HELP = """\
usage: groklab train --preset NAME --out DIR [--quiet] [--<field> VALUE ...]
       groklab train --preset NAME --out DIR --seeds N [...]   (N seeds at once, as one vmapped ensemble)

Train one run into DIR (created; if DIR already holds this very run, it is resumed).

examples:
  groklab train --preset mlp --out runs/mlp
  groklab train --preset mlp --out runs/mul --task.op x*y --task.p 101 --task.train-frac 0.4
  groklab train --preset power-fig1 --out runs/fig1 --optim.weight-decay 0.5 --seed 3 --steps 20000

fields (dotted paths; `-` and `_` are interchangeable):
"""

USAGE = """\
usage: groklab COMMAND [ARGS]

commands:
  presets              list the presets with one line each
  train                train one run:  groklab train --preset mlp --out runs/mlp
  resume DIR           continue an interrupted run exactly where its last checkpoint left it
  sweep SPEC --out DIR run a TOML sweep of many runs, locally or on a Ray cluster
  query DIR "SQL"      DuckDB SQL over a sweep's `runs` and `metrics` tables
  recipe NAME --out D  reproduce a published figure (a bundled sweep, its figures, findings.json)
  analyze RUN          Fourier circuits, norms, RQI, sharpness and phase of a run
  export-tl RUN        the run's transformer as a TransformerLens model (extra: interp)
  report DIR           a self-contained HTML report (and PNGs) of a run or a sweep
  ls DIR               a table of the runs in a sweep or folder
  compare RUN RUN ...  overlaid curves of several runs in one report
  bench                speed side by side with the reference implementation

`groklab COMMAND --help` shows each command's options and examples.
"""


def parse_options(args: list[str], flags: set[str], options: set[str]) -> tuple[dict[str, str | bool], dict[str, str]]:
    """Split `--name value` / `--name=value` pairs into known options, boolean flags and config overrides."""
    known: dict[str, str | bool] = {}
    overrides: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UserError(f"unexpected argument {arg!r}: options look like --name VALUE")
        name, eq, value = arg[2:].partition("=")
        if name in flags:
            known[name] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(args):
                raise UserError(f"--{name} needs a value")
            value = args[i + 1]
            i += 1
        i += 1
        if name in options:
            known[name] = value
        else:
            overrides[name] = value
    return known, overrides


def int_option(known: dict[str, str | bool], name: str, expected: str = "an integer >= 1") -> int | None:
    """The integer value of option --name from `parse_options`'s known dict (None if absent), or a one-line error."""
    if name not in known:
        return None
    try:
        return int(str(known[name]))
    except ValueError:
        raise UserError(f"--{name} {known[name]!r} is not valid: expected {expected}") from None


def field_help() -> str:
    from groklab.config import Config, get_path

    default = Config()
    lines = []
    for path, (_, doc) in leaf_fields().items():
        lines.append(f"  --{path.replace('_', '-')}  (default {get_path(default, path)!r})\n      {doc}")
    return "\n".join(lines)


def cmd_presets(args: list[str]) -> None:
    if args:
        raise UserError(f"groklab presets takes no arguments, got {' '.join(args)!r}")
    from groklab.presets import PRESETS

    width = max(map(len, PRESETS))
    for name, preset in PRESETS.items():
        print(f"{name:<{width}}  {preset.description}")


def cmd_train(args: list[str]) -> None:
    if "--help" in args or "-h" in args:
        print(TRAIN_HELP + field_help())
        return
    known, overrides = parse_options(args, flags={"quiet"}, options={"preset", "out", "seeds"})
    if "out" not in known:
        raise UserError("groklab train needs --out DIR (where the run directory is written)")
    from groklab.config import apply_overrides, validate
    from groklab.presets import get_preset

    config = validate(apply_overrides(get_preset(str(known.get("preset", "mlp"))), overrides))
    if "seeds" in known:  # N seeds as one vmapped ensemble: one run directory per seed, DIR/seed-<k>/
        from groklab.ensemble import parse_seeds, train_ensemble

        out = Path(str(known["out"]))
        for k, summary in enumerate(train_ensemble(config, out, parse_seeds(str(known["seeds"])), progress=not known.get("quiet"))):
            report(summary, out / f"seed-{k}", bool(known.get("quiet")))
        return
    from groklab.train import train

    report(train(config, Path(str(known["out"])), progress=not known.get("quiet")), Path(str(known["out"])), bool(known.get("quiet")))


def cmd_resume(args: list[str]) -> None:
    if "--help" in args or "-h" in args or not args:
        print(
            "usage: groklab resume DIR [--quiet]\n\nContinue the run in DIR from its newest valid checkpoint.\n\nexample:\n  groklab resume runs/mlp"
        )
        if not args:
            raise SystemExit(EXIT_USAGE)
        return
    known, overrides = parse_options(args[1:], flags={"quiet"}, options=set())
    if overrides:
        raise UserError(f"groklab resume takes no config fields (got --{next(iter(overrides))}): a resumed run keeps its config")
    from groklab.runio import RunDir
    from groklab.train import train

    path = Path(args[0])
    if not path.is_dir():
        raise UserError(f"{path} is not a directory holding a groklab run")
    config = RunDir(path).read_config()
    report(train(config, path, progress=not known.get("quiet")), path, bool(known.get("quiet")))


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
    print(f"final acc  train {final['train/acc']:.3f}  val {final['val/acc']:.3f}  test {final['test/acc']:.3f}")
    if summary["status"] == "diverged":
        print(f"diverged: non-finite loss or gradient at step {summary['diverged_at_step']}; the update was not applied")
    t99, v99 = summary["steps_to_train_acc_99"], summary["steps_to_val_acc_99"]
    if summary["grokked"]:
        print(f"grokked: train acc reached 0.99 at step {t99}, val acc at step {v99} (delay {summary['grok_delay']} steps)")
    else:
        print(f"not grokked: train acc reached 0.99 at step {t99}; val acc never reached 0.99 within budget")
    print(f"run directory: {out}  (summary.json, metrics.jsonl, metrics.parquet, checkpoints/)")


COMMANDS: dict[str, Callable[[list[str]], None] | str] = {
    "presets": cmd_presets,
    "train": cmd_train,
    "resume": cmd_resume,
    # Commands whose argument handling lives beside their feature ("module:function", imported on use).
    "bench": "groklab.bench:command",
    "sweep": "groklab.sweep:command",
    "query": "groklab.sweep:query_command",
    "recipe": "groklab.experiments.recipes:command",
    "analyze": "groklab.analysis:command",
    "export-tl": "groklab.analysis.tl:command",
    "report": "groklab.report:command",
    "ls": "groklab.report:ls_command",
    "compare": "groklab.report:compare_command",
}


def resolve(command: Callable[[list[str]], None] | str) -> Callable[[list[str]], None]:
    if callable(command):
        return command
    import importlib

    module, _, function = command.partition(":")
    return getattr(importlib.import_module(module), function)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else EXIT_USAGE
    command = COMMANDS.get(argv[0])
    try:
        if command is None:
            raise UserError(f"unknown command {argv[0]!r}: expected one of {', '.join(COMMANDS)}")
        resolve(command)(argv[1:])
        sys.stdout.flush()  # so that a reader that went away is noticed here, not at interpreter exit
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
