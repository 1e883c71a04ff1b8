"""The training engine: one loop over a stepper (one model, or N seeds as one vmapped ensemble), readable top to
bottom, with hooks at evaluation time (analysis measures, loggers, the progress bar, a sweep's test hook).

``train(config, run_dir)`` trains one run; ``train_ensemble(config, out, n)`` trains seeds config.seed .. +n-1 together
into out/seed-<k>/, each an ordinary run directory. Both are ``fit`` over a different stepper (steppers.py), so every
option means the same for both. The whole dataset lives on the device as tensors; batches are drawn by index; each
evaluation runs every split in one forward each under inference mode. The test split is only ever measured and
logged: early stopping looks at val alone.
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import random
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from groklab.analysis import parse_analysis, training_metrics
from groklab.config import Config, flatten, to_dict, validate
from groklab.data import Dataset, build_task, check_task
from groklab.data.sequences import Forward
from groklab.errors import UserError
from groklab.loggers import MetricLoggers, parse_log
from groklab.losses import LossFn
from groklab.runio import (
    RunDir,
    config_digest,
    numpy_rng_from_plain,
    numpy_rng_to_plain,
    python_rng_from_plain,
    python_rng_to_plain,
    read_metrics,
    summarize,
)
from groklab.stats import GROK_ACC
from groklab.steppers import Ensemble, Single, check_ensemble, in_bfloat16

Tensor = torch.Tensor


def check(config: Config) -> Config:
    """The config as a run sees it: field ranges (config.validate) and the names that live with their
    implementations (the op registry, the loggers, the analyses). Returns it unchanged or raises UserError."""
    validate(config)
    check_task(config.task)
    parse_log(config.log)
    parse_analysis(config.analysis)
    return config


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda if available, then mps, then cpu; anything else is taken as given."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def keep_freed_memory(device: torch.device) -> None:
    """For a CPU run on glibc, keep freed memory for reuse instead of handing it back to the OS: tensors under 32 MiB
    come from the heap rather than a fresh mmap each, and the heap is not trimmed after every step (the page faults
    this avoids are measured in docs/performance-history.md). Process-wide; a no-op where there is no mallopt."""
    if device.type != "cpu" or sys.platform != "linux":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's maximum)
    mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD


def eval_schedule(config: Config) -> set[int] | None:
    """Log-spaced evaluation steps (about 20 per decade), or None for every `eval_every` steps."""
    if config.eval_spacing == "linear":
        return None
    decades = math.log10(max(config.steps, 1))
    return {0} | {round(10 ** (i / 20)) for i in range(int(20 * decades) + 1)}


def is_eval_step(step: int, config: Config, log_steps: set[int] | None) -> bool:
    if step == config.steps:
        return True
    return step in log_steps if log_steps is not None else step % config.eval_every == 0


def weight_norm(model: nn.Module) -> float:
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in model.parameters()))


def correct(data: Dataset, forward: Forward, x: Tensor, logits: Tensor, y: Tensor, mask: Tensor | None) -> Tensor:
    """Per-example correctness (n,), or for sequence tasks without their own score the correctness of every target
    position pooled (its mean is token accuracy). logits = forward(x); a task's score may run forward again."""
    if data.score is not None:
        assert mask is not None  # every task with a score is a sequence task
        return data.score(forward, x, logits, y, mask)
    right = (logits.argmax(-1) == y).float()
    return right if mask is None else right[mask]


EVAL_TOKENS = 8192
"""Tokens in one forward of an evaluation on the CPU: a chunk of that many keeps its activations in the CPU's caches,
where a whole split's would stream through memory at every op (docs/performance.md)."""


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset, loss_fn: LossFn, bf16: bool = False) -> dict[str, float]:
    """Loss and accuracy on every split, run in chunks (`eval_rows`); `bf16`: the forward as training runs it under
    `Config.bf16`."""
    model.eval()
    forward = in_bfloat16(model) if bf16 else model
    out: dict[str, float] = {}
    for split in data.split_names:
        idx = data.indices(split)
        x, y, mask = data.x[idx], data.y[idx], None if data.mask is None else data.mask[idx]
        run = in_chunks(forward, eval_rows(x))
        logits = run(x)  # (n, n_classes) or (n, seq, n_classes)
        out[f"{split}/loss"] = float(loss_fn(logits, y, mask))
        out[f"{split}/acc"] = float(correct(data, run, x, logits, y, mask).mean())
    model.train()
    return out


def eval_rows(x: Tensor) -> int:
    """Rows per forward of an evaluation on inputs x: on the CPU, EVAL_TOKENS tokens' worth of token sequences;
    features, images, and anything on a GPU (not measured there) 65,536 rows, which only bounds the memory of big
    image sets."""
    return 65536 if x.is_floating_point() or x.device.type != "cpu" else max(1, EVAL_TOKENS // x[0].numel())


def in_chunks(forward: Forward, rows: int) -> Forward:
    """`forward` run on `rows` rows of its input at a time, the outputs concatenated."""
    return lambda x: torch.cat([forward(x[i : i + rows]) for i in range(0, len(x), rows)])


def evaluated(data: Dataset, config: Config) -> Dataset:
    """`data` as evaluations see it: the training split cut to a fixed sample of config.eval_train_size examples (drawn
    with split_seed, in split order) where that is smaller than the split; the held-out splits whole."""
    n = config.eval_train_size
    if not n or n >= len(data.train):
        return data
    pick = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(config.split_seed))[:n].sort().values
    return dataclasses.replace(data, train=data.train[pick.to(data.train.device)])


def rng_states() -> dict[str, Any]:
    """Every random stream's state as tensors and plain values (what a weights-only checkpoint can hold)."""
    states = {
        "torch": torch.get_rng_state(),
        "numpy": numpy_rng_to_plain(np.random.get_state()),
        "python": python_rng_to_plain(random.getstate()),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(numpy_rng_from_plain(states["numpy"]))
    random.setstate(python_rng_from_plain(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """SIGINT/SIGTERM set a flag (the loop finishes its step, checkpoints, and stops) instead of killing."""
    caught: list[int] = []
    previous = {}
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: caught.append(signum))
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield caught
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ---------------------------------------------------------------------------------------------
# Hooks: what happens around an evaluation, the same for every member of every stepper.


class Hook:
    """Called by the loop; every method is optional. `member` k indexes the runs being trained together."""

    def measure(self, member: int, evaluation: int, model: nn.Module) -> dict[str, float]:
        """Extra keys for member k's next metrics row (the `evaluation`-th, counting from 0), before it is written."""
        return {}

    def logged(self, member: int, row: dict[str, Any]) -> None:
        """Member k's row has been appended to its metrics.jsonl."""

    def stepped(self, step: int, rows: Sequence[dict[str, Any]] | None) -> None:
        """The loop reached `step`; rows: every live member's newest row when this step was an evaluation."""

    def close(self) -> None:
        """The loop ended (also on an error)."""


class Measures(Hook):
    """`--analysis`: the mechanism measurements of config.analysis, every config.analysis_every evaluations."""

    def __init__(self, config: Config, data: Dataset, loss_fn: LossFn) -> None:
        self.config, self.data, self.loss_fn = config, data, loss_fn

    def measure(self, member: int, evaluation: int, model: nn.Module) -> dict[str, float]:
        if evaluation % self.config.analysis_every:
            return {}
        return training_metrics(model, self.data, self.config, self.loss_fn)


class Mirror(Hook):
    """`--log`: each member's rows mirrored to TensorBoard / wandb as they are written."""

    def __init__(self, loggers: list[MetricLoggers]) -> None:
        self.loggers = loggers

    def logged(self, member: int, row: dict[str, Any]) -> None:
        self.loggers[member].log(row)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


class Progress(Hook):
    """A rich progress bar with live train/val accuracy (the members' mean for an ensemble)."""

    def __init__(self, total: int, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
        from rich.progress import Progress as RichProgress

        self.bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("train {task.fields[train]}  val {task.fields[val]}  {task.fields[speed]} it/s"),
            TimeRemainingColumn(),
        )
        self.task = self.bar.add_task(label, total=total, train="-", val="-", speed="-")
        self.bar.start()
        self.t0, self.s0 = time.perf_counter(), None

    def stepped(self, step: int, rows: Sequence[dict[str, Any]] | None) -> None:
        fields = {}
        if rows:
            now = time.perf_counter()
            if self.s0 is not None:
                fields["speed"] = f"{(step - self.s0) / max(now - self.t0, 1e-9):.0f}"
            self.t0, self.s0 = now, step
            for split in ("train", "val"):
                fields[split] = f"{sum(r[f'{split}/acc'] for r in rows) / len(rows):.3f}"
        self.bar.update(self.task, completed=step, **fields)

    def close(self) -> None:
        self.bar.stop()


def label(config: Config, n: int) -> str:
    task = config.task.op if config.task.name == "binop" else config.task.name
    return f"{task} {config.model.name}" + (f" ×{n}" if n > 1 else "")


# ---------------------------------------------------------------------------------------------
# The loop.


def fit(
    configs: list[Config], runs: list[RunDir], data: Dataset, stepper: Single | Ensemble, hooks: Sequence[Hook]
) -> list[dict[str, Any]]:
    """Train the members (configs[k] into runs[k], all stepped by `stepper`) from where their checkpoints left them;
    return their summaries. The members share everything but their seeds, so they share the step and the schedule."""
    config, n = configs[0], len(configs)
    seen = evaluated(data, config)  # what the metrics rows measure

    # Resume: every member from its checkpoint at the same step (the newest that all of them hold); drop rows and states past it.
    logged = [read_metrics(run.metrics_path) for run in runs]
    step, states = resume_states(configs, runs, logged)
    for k, state in enumerate(states):
        if state is not None:
            stepper.load(k, state)
    if states[0] is not None:
        set_rng_states(states[0]["rng"])
    rows = [run.rewind(step if states[0] is not None else -1, mine) for run, mine in zip(runs, logged, strict=True)]
    held: list[int | None] = [s["held_since"] if s is not None else None for s in states]
    elapsed = states[0]["elapsed"] if states[0] is not None else 0.0
    summaries: list[dict[str, Any] | None] = [None] * n
    t_start, last_ckpt = time.perf_counter() - elapsed, time.perf_counter()

    def live() -> list[int]:
        return [k for k in range(n) if summaries[k] is None]

    def checkpoint(k: int) -> None:
        runs[k].save_state(step, {
            "config_digest": config_digest(configs[k]), "step": step, "elapsed": time.perf_counter() - t_start,
            "held_since": held[k], **stepper.state(k), "rng": rng_states(),
        })  # fmt: skip

    def finish(k: int, status: str, **extra: Any) -> None:
        """Member k's last checkpoint, final weights and summary."""
        checkpoint(k)
        runs[k].save_model(step, stepper.member(k).state_dict())
        where = {"device": data.train.device.type, "threads": torch.get_num_threads()}  # what wall_s was measured on
        summaries[k] = summarize(
            rows[k], status, step, time.perf_counter() - t_start, seed=configs[k].seed, split_seed=config.split_seed, **where, **extra
        )
        runs[k].finish(summaries[k])

    def evaluation(k: int) -> dict[str, Any]:
        """Member k's metrics row at this step, written and handed to the hooks."""
        model = stepper.member(k)
        row = {"step": step, "time_s": round(time.perf_counter() - t_start, 4), **evaluate(model, seen, stepper.loss_fn, bf16=config.bf16)}
        row["norm/total"] = weight_norm(model)
        row["lr"] = stepper.lr()
        for hook in hooks:
            row.update(hook.measure(k, len(rows[k]), model))
        runs[k].append_metrics(row)
        rows[k].append(row)
        for hook in hooks:
            hook.logged(k, row)
        return row

    log_steps = eval_schedule(config)
    if states[0] is None:
        for k in range(n):
            checkpoint(k)
            runs[k].save_model(step, stepper.member(k).state_dict())
    try:
        with stop_on_signals() as caught:
            for hook in hooks:
                hook.stepped(step, None)
            while True:
                # Evaluate every live member on every split; stop a member once val acc >= 0.99 has held stop_patience steps.
                if is_eval_step(step, config, log_steps):
                    for k in live():
                        row = rows[k][-1] if rows[k] and rows[k][-1]["step"] == step else evaluation(k)  # a resumed run has it
                        held[k] = (held[k] if held[k] is not None else step) if row["val/acc"] >= GROK_ACC else None
                        if config.stop_patience and held[k] is not None and step - held[k] >= config.stop_patience:
                            finish(k, "finished", stopped_early=True)
                    for hook in hooks:
                        hook.stepped(step, [rows[k][-1] for k in range(n)])
                if step >= config.steps or not live() or caught:
                    break

                # One optimizer step of every member; a member whose loss or gradient is not finite stops at its last good state.
                finite = stepper.step()
                for k in live():
                    if not finite[k]:
                        finish(k, "diverged", diverged_at_step=step + 1)
                step += 1
                for hook in hooks:
                    hook.stepped(step, None)
                if step & (step - 1) == 0:  # weights at log-spaced steps 1, 2, 4, ... for analysis over time
                    for k in live():
                        runs[k].save_model(step, stepper.member(k).state_dict())
                if step % config.checkpoint_every == 0 or time.perf_counter() - last_ckpt >= config.checkpoint_seconds:
                    for k in live():
                        checkpoint(k)
                    last_ckpt = time.perf_counter()
            for k in live():
                finish(k, "interrupted" if caught else "finished")
    finally:
        for hook in hooks:
            hook.close()
    return [s for s in summaries if s is not None]


def resume_states(configs: list[Config], runs: list[RunDir], logged: list[list[dict[str, Any]]]) -> tuple[int, list[dict[str, Any] | None]]:
    """(step, each member's state at it) from the newest valid checkpoint every member holds; (0, [None, ...]) for a
    fresh start: no member has logged a row yet (`logged`: each member's metrics rows) (an ensemble stopped while writing its members' first checkpoints holds
    step 0 in some of them only; a fresh start is the same run). A run with metrics but no usable checkpoint, or whose
    config.json was edited, is refused."""
    if not any(logged):
        return 0, [None] * len(runs)
    found = [run.states() for run in runs]  # ({step: state}, {unreadable path: why}) per member
    corrupt = [path for _, paths in found for path in paths]
    common = set.intersection(*(set(states) for states, _ in found))
    if not common:
        where = next((run.ckpt_dir for run, (states, _) in zip(runs, found, strict=True) if not states), runs[0].ckpt_dir)
        if corrupt and len(runs) == 1:  # the newest unreadable file, and why (an earlier format says how to convert it)
            raise UserError(f"{runs[0].path} holds no valid checkpoint and cannot be resumed: {found[0][1][corrupt[-1]]}")
        raise UserError(
            f"{where} holds no valid checkpoint{' shared by every member' if len(runs) > 1 else ''} ({len(corrupt)} corrupt): "
            "the run cannot be resumed exactly; train it again into a new --out"
        )
    step = max(common)
    if corrupt:
        print(f"warning: skipped corrupt checkpoint(s) {', '.join(p.name for p in corrupt)}; resuming from an older one", file=sys.stderr)
    elif any(max(states) > step for states, _ in found):
        print(f"warning: the members' newest checkpoints differ; every member resumes from step {step}", file=sys.stderr)
    for config, run, (states, _) in zip(configs, runs, found, strict=True):
        trained_as = {config_digest(dataclasses.replace(config, steps=s)) for s in (config.steps, *run.budgets())}  # budgets grow
        if states[step]["config_digest"] not in trained_as:
            raise UserError(
                f"{run.config_path} differs from the config its checkpoints were trained with (was it edited?); train into a new --out instead"
            )
    return step, [states[step] for states, _ in found]


def finished(summary: dict[str, Any], config: Config) -> bool:
    """Whether a run with this summary is done: finished within its budget (one that `extend` raised is not)."""
    return summary.get("status") == "finished" and (bool(summary.get("stopped_early")) or summary.get("steps", 0) >= config.steps)


def extend(run_dir: str | Path, steps: int) -> Config:
    """Raise the step budget of the run in `run_dir` to `steps` (`groklab resume DIR --steps N`), so that resuming it
    trains on from its newest checkpoint as though it had had that budget from the start (plus an evaluation at the
    old last step where it is off the evaluation grid); return its new config. A budget never shrinks, and a run that
    diverged or stopped early (val acc held 0.99 for stop_patience steps) is refused: it would stop again at once."""
    run = RunDir(Path(run_dir))
    config = run.read_config()
    if steps == config.steps:
        return config
    if steps < config.steps:
        raise UserError(f"--steps {steps} is below the run's budget of {config.steps} steps: a budget can only grow")
    summary = run.read_summary() or {}
    if summary.get("status") == "diverged":
        raise UserError(f"{run.path} diverged (non-finite loss or gradient at step {summary.get('diverged_at_step')}): it cannot train on")
    if summary.get("stopped_early"):
        raise UserError(
            f"{run.path} stopped early at step {summary.get('steps')} (val acc held {GROK_ACC} for stop_patience={config.stop_patience} "
            "steps): with more steps it would stop again at once"
        )
    longer = check(dataclasses.replace(config, steps=steps))  # a budget the config's other fields allow, before a file changes
    run.extend(steps)
    return longer


def train(config: Config, run_dir: str | Path, *, progress: bool = True, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Train `config` into `run_dir` (resuming it if it already holds this run) and return summary.json's content."""
    return run_members([config], [Path(run_dir)], False, progress, hooks)[0]


def resume(run_dir: str | Path, *, steps: int | None = None, progress: bool = True, hooks: Sequence[Hook] = ()) -> dict[str, Any]:
    """Continue the run in `run_dir` from its newest valid checkpoint (`groklab resume DIR`); with `steps`, train it on
    to that budget first raised by `extend` (`groklab resume DIR --steps N`). Returns summary.json's content."""
    config = RunDir(Path(run_dir)).read_config() if steps is None else extend(run_dir, steps)
    return train(config, run_dir, progress=progress, hooks=hooks)


def train_ensemble(
    config: Config, out: str | Path, n_seeds: int, *, progress: bool = True, hooks: Sequence[Hook] = ()
) -> list[dict[str, Any]]:
    """Train seeds config.seed .. config.seed + n_seeds - 1 together into out/seed-<k>/ (resuming those that hold
    their run already) as one vmapped ensemble; return every member's summary, in seed order."""
    configs = [dataclasses.replace(config, seed=config.seed + k) for k in range(n_seeds)]
    return train_pack(configs, [Path(out) / f"seed-{k}" for k in range(n_seeds)], progress=progress, hooks=hooks)


def train_pack(
    configs: Sequence[Config], run_dirs: Sequence[str | Path], *, progress: bool = True, hooks: Sequence[Hook] = ()
) -> list[dict[str, Any]]:
    """Train configs[k] into run_dirs[k] together as one vmapped ensemble: the configs may differ in their seed alone.
    Every member is an ordinary run (resumed if its directory holds it already); returns their summaries in order."""
    check_ensemble(configs[0])
    first = flatten(to_dict(configs[0]))
    for c in configs[1:]:
        differ = sorted(k for k, v in flatten(to_dict(c)).items() if v != first[k] and k != "seed")
        if differ:
            raise UserError(f"runs that differ in {', '.join(differ)} cannot train as one ensemble: only their seed may differ")
    return run_members(list(configs), [Path(d) for d in run_dirs], True, progress, hooks)


def run_members(configs: list[Config], outs: list[Path], ensemble: bool, progress: bool, hooks: Sequence[Hook]) -> list[dict[str, Any]]:
    """configs[k] into outs[k]: check everything that can fail before a file is written (the data included), create or
    reopen the run directories, build the stepper and the hooks, and fit the members not yet finished."""
    configs = [check(c) for c in configs]
    config = configs[0]
    loggers = [MetricLoggers(c, out) for c, out in zip(configs, outs, strict=True)]  # a missing --log extra fails here
    runs = [RunDir(out) for out in outs]
    existing = [run.holds(c) for run, c in zip(runs, configs, strict=True)]
    summaries = [run.read_summary() if old else None for run, old in zip(runs, existing, strict=True)]
    todo = [k for k, s in enumerate(summaries) if s is None or not finished(s, configs[k])]
    if not todo:
        return summaries  # type: ignore[return-value]
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    keep_freed_memory(device)
    data = build_task(config.task, config.split_seed).to(device)  # a size the generator cannot supply fails here, first
    for k in todo:
        if not existing[k]:
            runs[k].prepare(configs[k])
    members = [configs[k] for k in todo]
    stepper = Ensemble(members, data, device) if ensemble else Single(members[0], data, device)
    all_hooks: list[Hook] = [*hooks, Mirror([loggers[k] for k in todo])]
    if config.analysis:
        all_hooks.insert(0, Measures(config, data, stepper.loss_fn))
    if progress:
        all_hooks.append(Progress(config.steps, label(config, len(todo))))
    for k, summary in zip(todo, fit(members, [runs[k] for k in todo], data, stepper, all_hooks), strict=True):
        summaries[k] = summary
    return summaries  # type: ignore[return-value]
