"""What a sweep will cost before it runs: its tasks (runs, or packs of seeds) × steps × this machine's measured time per
step, plus its evaluations, in CPU-hours (or GPU-hours for runs on a GPU).

The time per step is measured once per kind of task on this machine (a second of training after a warm-up, and one
evaluation; on a CPU in CPU time, so that a busy machine does not inflate it) and cached in the user's cache directory
(``$XDG_CACHE_HOME/groklab/calibration.json``, by default under ``~/.cache``; ``~/Library/Caches`` on macOS,
``%LOCALAPPDATA%`` on Windows), never in a sweep dir. The kind of task is
its config without the fields that do not change the work per step (learning rates, seeds, budgets, the op of a
modular table), the pack size, the torch threads and the machine. The estimate is an upper bound for runs that may
stop early (`stop_patience`); checkpoints are not counted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import platform
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groklab.config import Config, flatten, to_dict
from groklab.errors import UserError
from groklab.runio import atomic_write_json
from groklab.sweep.packs import plan_packs
from groklab.sweep.runner import gpu_available, worker_threads
from groklab.sweep.spec import PlannedRun

COST_FREE = (
    "seed", "split_seed", "steps", "eval_every", "eval_spacing", "stop_patience", "checkpoint_every", "checkpoint_seconds",
    "log", "optim.lr", "optim.embed_lr", "optim.beta1", "optim.beta2", "optim.weight_decay", "optim.warmup_steps",
    "optim.decay_steps", "optim.grokfast_alpha", "optim.grokfast_lamb", "model.init", "model.init_scale", "task.op", "task.p",
)  # fmt: skip
"""Fields that leave the work of a step and of an evaluation as it is (task.op and task.p enter as the table's size)."""

CALIBRATION_S = 1.0
"""Seconds of training timed per kind of task (after two warm-up steps)."""
EVAL_SAMPLE = 4096
"""Examples per split an evaluation is timed on (its time is scaled to the split's size)."""
EVAL_TOKENS = 16384
"""For a language model, whose examples are whole sequences: tokens per split the evaluation is timed on (4096 sequences
of a paper-sized LM took most of an hour on one thread)."""


def cache_dir() -> Path:
    """groklab's directory in the platform's user cache home."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "groklab"


def machine(device: Any) -> str:
    """This machine and device as a cache key part: a home directory shared between machines keeps their figures apart."""
    import torch

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return f"{socket.gethostname()} {where} {os.cpu_count()} cpus torch {torch.__version__}"


def cost_fields(config: Config) -> dict[str, Any]:
    """The config's fields that set the work of a step and of an evaluation."""
    from groklab.data import n_elements

    fields = {k: v for k, v in flatten(to_dict(config)).items() if k not in COST_FREE}
    if config.task.name == "binop":
        fields["task.elements"] = n_elements(config.task)
    if config.optim.batch_size:  # a minibatch's work does not depend on how big the training set is
        fields.pop("task.train_frac", None)
        fields.pop("task.val_frac", None)
    return fields


def cost_key(fields: dict[str, Any], members: int, threads: int, device: Any) -> str:
    text = json.dumps([machine(device), fields, members, threads], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def evaluations(steps: int, eval_every: int, eval_spacing: str) -> int:
    """How many evaluations a run of `steps` steps makes (the loop's own schedule)."""
    from groklab.train import eval_schedule, is_eval_step

    config = dataclasses.replace(Config(), steps=steps, eval_every=eval_every, eval_spacing=eval_spacing)
    schedule = eval_schedule(config)
    return sum(is_eval_step(s, config, schedule) for s in range(steps + 1))


@functools.lru_cache(maxsize=2)
def dataset(task: Any, split_seed: int) -> Any:
    """The task's data, built once for every kind of task that shares it (a depth sweep of sequence models, say)."""
    from groklab.data import build_task

    return build_task(task, split_seed)


def calibrate(config: Config, members: int, threads: int) -> tuple[float, float]:
    """(seconds per optimizer step of a task of `members` seeds, seconds per evaluation of one member) on this machine.

    On a CPU the seconds are the process's CPU time over its threads, not wall time, so that other work on the machine
    (another sweep, another user) does not inflate them; with one thread, as sweep workers have by default, that is
    the wall time of an otherwise idle core. With more threads than the machine has idle cores, CPU time counts the
    threads spinning while they wait for one that is descheduled (measured: 9-22x): see `busy_load`. On a GPU they are
    wall seconds, synchronised.
    """
    import torch

    from groklab.steppers import Ensemble, Single
    from groklab.train import Measures, evaluate, evaluated, resolve_device, weight_norm

    device = resolve_device(config.device)

    def clock() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time() / threads

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            data = dataset(config.task, config.split_seed).to(device)
            configs = [dataclasses.replace(config, seed=config.seed + k) for k in range(members)]
            stepper = Ensemble(configs, data, device) if members > 1 else Single(config, data, device)
            for _ in range(2):  # warm-up: first-call allocations, lazy initialisation, a compile
                stepper.step()
            n, t0, wall = 0, clock(), time.perf_counter()
            while n < 3 or time.perf_counter() - wall < CALIBRATION_S:
                stepper.step()
                n += 1
            step_s = (clock() - t0) / n
            model = stepper.member(0)
            # An evaluation forwards every example it measures (eval_train_size cuts the train split): time a sample, scale up.
            seen = evaluated(data, config)
            sizes = {name: len(seen.indices(name)) for name in data.split_names}
            per_split = EVAL_SAMPLE if config.model.name != "lm" else max(1, EVAL_TOKENS // data.x.shape[1])
            cut = {name: data.indices(name)[:per_split] for name in data.split_names}
            sample = dataclasses.replace(
                data, train=cut["train"], val=cut["val"], test=cut["test"], extra_splits={k: cut[k] for k in data.extra_splits}
            )
            t0 = clock()
            evaluate(model, sample, stepper.loss_fn)
            eval_s = (clock() - t0) * sum(sizes.values()) / max(1, sum(len(i) for i in cut.values()))
            t0 = clock()
            weight_norm(model)
            eval_s += clock() - t0
            if config.analysis:  # the mechanism measures of every analysis_every-th evaluation
                t0 = clock()
                Measures(config, data, stepper.loss_fn).measure(0, 0, model)
                eval_s += (clock() - t0) / config.analysis_every
    finally:
        torch.set_num_threads(previous)
    return step_s, eval_s


def busy_load(threads: int) -> float | None:
    """The 1-minute load average when other work already holds cores that a `threads`-thread calibration needs (None
    when the machine is idle enough, or with one thread, which CPU time keeps honest under load)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return load if threads > 1 and load > (os.cpu_count() or 1) - threads + 0.5 else None


@dataclass(frozen=True)
class Line:
    """The cost of the tasks of one kind."""

    label: str
    device: str
    """cpu or cuda: what `seconds` are seconds of."""
    threads: int
    members: int
    """Seeds per task (1: unpacked)."""
    tasks: int
    runs: int
    step_s: float | None
    """Seconds per optimizer step of one task (None: not measured, see `error`)."""
    eval_s: float | None
    seconds: float | None
    """Device-seconds of all these tasks (CPU: wall seconds of one task's threads)."""
    cached: bool
    error: str | None = None

    @property
    def hours(self) -> float | None:
        """CPU-hours (core-hours: seconds × threads) or GPU-hours."""
        return None if self.seconds is None else self.seconds * (self.threads if self.device == "cpu" else 1) / 3600


@dataclass(frozen=True)
class Estimate:
    lines: list[Line]
    cache: Path
    """The calibration file the figures came from."""
    workers: int

    def hours(self, on_cpu: bool) -> float:
        """CPU-hours (on_cpu) or accelerator hours (GPU-hours) of the measured lines."""
        return sum(line.hours or 0.0 for line in self.lines if (line.device == "cpu") == on_cpu)

    @property
    def wall_s(self) -> float:
        """The sweep's wall time here: the CPU tasks spread over the workers, an accelerator's tasks one after another."""
        cpu = sum(line.seconds or 0.0 for line in self.lines if line.device == "cpu")
        return cpu / self.workers + sum(line.seconds or 0.0 for line in self.lines if line.device != "cpu")

    @property
    def unmeasured(self) -> list[Line]:
        return [line for line in self.lines if line.seconds is None]


def estimate(runs: list[PlannedRun], pack: int | None = None, workers: int | None = None, say: Callable[[str], None] = print) -> Estimate:
    """The cost of `runs` swept on this machine with `workers` workers: in packs as the sweep would (plan_packs), each
    task with the sweep's torch threads unless its config sets its own. Measures what the cache does not hold yet
    (announced through `say`)."""
    from groklab.train import resolve_device

    n_workers, threads = worker_threads(workers)
    gpu_here = gpu_available()

    path = cache_dir() / "calibration.json"
    try:
        cache: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        cache = {}
    lines: dict[str, dict[str, Any]] = {}
    kinds: dict[str, dict[str, Any]] = {}  # key -> cost fields, to tell apart kinds that read the same
    for task in plan_packs(runs, pack, gpu_here):
        config, n = task[0].config, len(task)
        device = resolve_device(config.device)
        n_threads = config.threads or threads
        fields = cost_fields(config)
        key = cost_key(fields, n, n_threads, device)
        if key not in lines:
            kinds[key] = fields
            table = f"{fields['task.elements']}-element table" if "task.elements" in fields else config.task.name
            what = f"{config.model.name}, {table}"
            line = lines[key] = {"label": what, "device": device.type, "threads": n_threads, "members": n, "tasks": 0, "runs": 0}
            line.update(step_s=None, eval_s=None, seconds=0.0, cached=key in cache, error=None)
            if key not in cache:
                say(
                    f"calibrating {what}{f' x{n}' if n > 1 else ''} on {device.type} ({n_threads} thread(s); seconds, minutes for a large LM)"
                )
                load = busy_load(n_threads) if device.type == "cpu" else None
                if load is not None:
                    say(
                        f"this machine is busy (load {load:.1f}): {n_threads} threads measured now count their waiting, so this "
                        "line is too high and is not cached; dry-run again on an idle machine"
                    )
                try:
                    step_s, eval_s = calibrate(config, n, n_threads)
                except UserError as err:  # e.g. image files not at hand here: that kind stays unmeasured
                    line.update(error=str(err), seconds=None)
                else:
                    line.update(step_s=step_s, eval_s=eval_s)
                    if load is None:
                        cache[key] = {"step_s": step_s, "eval_s": eval_s, "what": what, "measured": time.strftime("%Y-%m-%d")}
                        path.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_json(path, cache)
            if key in cache:
                line.update(step_s=cache[key]["step_s"], eval_s=cache[key]["eval_s"])
        line = lines[key]
        line["tasks"] += 1
        line["runs"] += n
        if line["step_s"] is not None:
            line["seconds"] += (
                config.steps * line["step_s"] + evaluations(config.steps, config.eval_every, config.eval_spacing) * line["eval_s"] * n
            )
    # Kinds that read the same get the fields that tell them apart (the widths of a width sweep, say).
    suffixes = {}
    for key, line in lines.items():
        same = [other for other, o in lines.items() if o["label"] == line["label"] and other != key]
        differ = sorted({f for other in same for f in kinds[key] if kinds[other].get(f) != kinds[key][f]})
        suffixes[key] = "".join(f", {f.rpartition('.')[2]} {kinds[key][f]}" for f in differ)
    for key, line in lines.items():
        line["label"] += suffixes[key]
    return Estimate([Line(**line) for line in lines.values()], path, n_workers or 1)
