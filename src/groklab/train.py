"""The training loop: ``train(config, run_dir) -> summary``, readable top to bottom.

The whole dataset lives on the device as tensors; batches are drawn by index; each evaluation runs the
full train, val and test splits in one forward each under inference mode. The test split is only ever
measured and logged: early stopping looks at val alone.
"""

from __future__ import annotations

import ctypes
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from groklab.config import Config, UserError, validate
from groklab.data import Dataset, build_task
from groklab.loggers import MetricLoggers
from groklab.losses import LossFn, make_loss
from groklab.models import build_model
from groklab.optim import Interventions, build_optimizer
from groklab.runio import RunDir, config_digest, read_metrics, summarize
from groklab.stats import GROK_ACC

Tensor = torch.Tensor


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
    """For a CPU run on glibc, keep freed memory for reuse instead of handing it back to the OS: tensors under 32 MiB come from the
    heap rather than a fresh mmap each, and the heap is not trimmed after every step. The page faults this avoids
    cost small CPU models 10-15% per step when measured as environment variables (MALLOC_MMAP_THRESHOLD_=33554432,
    MALLOC_TRIM_THRESHOLD_); this is their run-time form, so `train` gets what `bench` times. Process-wide; a
    no-op where there is no mallopt."""
    if device.type != "cpu" or sys.platform != "linux":
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD (glibc's maximum)
    mallopt(-1, (1 << 31) - 1)  # M_TRIM_THRESHOLD


class BatchSampler:
    """Minibatches of training indices: a fresh permutation each epoch, drawn from its own generator."""

    def __init__(self, train_idx: Tensor, batch_size: int, seed: int) -> None:
        self.idx = train_idx
        n = len(train_idx)
        self.batch_size = n if batch_size == 0 or batch_size >= n else batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> Tensor:
        if self.batch_size == len(self.idx):  # full batch: no sampling at all
            return self.idx
        if self.pos + self.batch_size > len(self.perm):  # drop the ragged tail, as DataLoader(drop_last=True)
            self.perm, self.pos = torch.randperm(len(self.idx), generator=self.gen), 0
        batch = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.idx[batch.to(self.idx.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"], state["pos"]


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


@torch.inference_mode()
def evaluate(model: nn.Module, data: Dataset, loss_fn: LossFn, chunk: int = 65536) -> dict[str, float]:
    """Loss and accuracy on the full train, val and test splits (chunks only bound memory for big image sets)."""
    model.eval()
    out: dict[str, float] = {}
    for split in ("train", "val", "test"):
        x, y = data.split(split)
        logits = torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])  # (n, n_classes)
        out[f"{split}/loss"] = float(loss_fn(logits, y))
        out[f"{split}/acc"] = float((logits.argmax(-1) == y).float().mean())
    model.train()
    return out


def optimizer_step(
    model: nn.Module,
    forward: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer | Interventions,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: LossFn,
    x: Tensor,
    y: Tensor,
) -> bool:
    """One optimizer step on the batch x (batch, ...) -> y (batch,); False, with no update, if the loss or gradient is not finite.

    `forward` is the model itself or its compiled forward (`compiled_forward`); the benchmark times this very function.
    """
    loss = loss_fn(forward(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in model.parameters() if p.grad is not None])))
    if not bool(torch.isfinite(loss + grad_norm)):  # one sync per step: cheaper than a check per tensor
        return False
    optimizer.step()
    schedule.step()
    return True


def compiled_forward(model: nn.Module, loss_fn: LossFn, x: Tensor, y: Tensor) -> Callable[[Tensor], Tensor]:
    """`torch.compile(model)` for training, tried once on the batch (x, y); the plain model, with a one-line warning, if that fails.

    Compilation is lazy, so a missing compiler or an unsupported platform only shows at the first call: the trial
    forward and backward surface it here, before the run has taken a step (RNG states and gradients are left as found).
    The model itself stays uncompiled, so checkpoints keep their ordinary parameter names and evaluation stays eager.
    """
    try:
        compiled = torch.compile(model)
        with torch.random.fork_rng(devices=[]):
            loss_fn(compiled(x), y).backward()
        model.zero_grad(set_to_none=True)
        return compiled
    except Exception as err:  # noqa: BLE001 - any compiler failure means: train eagerly
        model.zero_grad(set_to_none=True)
        reason = (str(err).strip().splitlines() or [""])[0][:160]
        print(f"warning: --compile is unavailable here ({type(err).__name__}: {reason}); training without it", file=sys.stderr)
        return model


def rng_states() -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
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


class Progress:
    """A rich progress bar with live train/val accuracy; silent when disabled."""

    def __init__(self, enabled: bool, total: int, label: str) -> None:
        self.bar = None
        if enabled:
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
        self.t0, self.s0 = time.perf_counter(), 0

    def update(self, step: int, row: dict[str, Any] | None = None) -> None:
        if self.bar is None:
            return
        fields = {}
        if row is not None:
            now = time.perf_counter()
            speed = (step - self.s0) / max(now - self.t0, 1e-9)
            self.t0, self.s0 = now, step
            fields = {"train": f"{row['train/acc']:.3f}", "val": f"{row['val/acc']:.3f}", "speed": f"{speed:.0f}"}
        self.bar.update(self.task, completed=step, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(config: Config, run_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train `config` into `run_dir` (resuming it if it already holds this run) and return summary.json's content."""
    config = validate(config)
    loggers = MetricLoggers(config, run_dir)  # --log mirrors; a missing extra fails here, before the run dir is written
    run = RunDir(Path(run_dir))
    existing = run.prepare(config)
    summary = run.read_summary() if existing else None
    if summary is not None and summary.get("status") == "finished":
        return summary
    if config.threads:
        torch.set_num_threads(config.threads)

    # Build everything from the seeds: data split (split_seed), init, batch order and dropout (seed).
    device = resolve_device(config.device)
    keep_freed_memory(device)
    data = build_task(config.task, config.split_seed).to(device)
    model = build_model(config.model, data, config.seed).to(device)
    optimizer, schedule = build_optimizer(config.optim, model, seed=config.seed)
    loss_fn = make_loss(config.loss, config.loss_dtype)
    sampler = BatchSampler(data.train, config.optim.batch_size, config.seed)
    trial = data.train[: sampler.batch_size]  # compile for the training batch shape (static: no recompiles)
    forward = compiled_forward(model, loss_fn, data.x[trial], data.y[trial]) if config.compile else model
    step, elapsed, held_since = 0, 0.0, None

    # Resume: restore every piece of state from the newest valid checkpoint; drop metrics past it.
    state, corrupt = run.latest_state() if existing else (None, [])
    if state is None and read_metrics(run.metrics_path):
        raise UserError(
            f"{run.ckpt_dir} holds no valid checkpoint ({len(corrupt)} corrupt): the run cannot be resumed exactly; train it again into a new --out"
        )
    if corrupt:
        print(f"warning: skipped corrupt checkpoint(s) {', '.join(p.name for p in corrupt)}; resuming from an older one", file=sys.stderr)
    if state is not None and state["config_digest"] != config_digest(config):
        raise UserError(
            f"{run.config_path} differs from the config its checkpoints were trained with (was it edited?); train into a new --out instead"
        )
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        sampler.load_state_dict(state["sampler"])
        set_rng_states(state["rng"])
        step, elapsed, held_since = state["step"], state["elapsed"], state["held_since"]
    rows = run.truncate_metrics(step if state is not None else -1)

    def checkpoint() -> None:
        run.save_state(step, {
            "config_digest": config_digest(config), "step": step, "elapsed": elapsed, "held_since": held_since, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
            "sampler": sampler.state_dict(), "rng": rng_states(),
        })  # fmt: skip

    log_steps = eval_schedule(config)
    bar = Progress(progress, config.steps, f"{config.task.op if config.task.name == 'binop' else config.task.name} {config.model.name}")
    bar.update(step)
    status, extra = "finished", {}
    t_start, last_ckpt_time = time.perf_counter() - elapsed, time.perf_counter()
    if state is None:
        checkpoint()
        run.save_model(step, model.state_dict())
    with stop_on_signals() as caught:
        while True:
            if is_eval_step(step, config, log_steps) and (not rows or rows[-1]["step"] < step):
                row = {"step": step, "time_s": round(time.perf_counter() - t_start, 4), **evaluate(model, data, loss_fn)}
                row["norm/total"] = weight_norm(model)
                row["lr"] = schedule.get_last_lr()[0]
                if config.analysis and len(rows) % config.analysis_every == 0:  # mechanism measurements (--analysis)
                    from groklab.analysis import training_metrics

                    row.update(training_metrics(model, data, config, loss_fn))
                run.append_metrics(row)
                loggers.log(row)
                rows.append(row)
                bar.update(step, row)
                held_since = (held_since if held_since is not None else step) if row["val/acc"] >= GROK_ACC else None
                if config.stop_patience and held_since is not None and step - held_since >= config.stop_patience:
                    extra["stopped_early"] = True
                    break
            if step >= config.steps:
                break
            if caught:
                status = "interrupted"
                break

            # One optimizer step; a non-finite loss or gradient stops the run before the update is applied.
            idx = sampler.next()
            if not optimizer_step(model, forward, optimizer, schedule, loss_fn, data.x[idx], data.y[idx]):
                status, extra["diverged_at_step"] = "diverged", step + 1
                break
            step += 1
            bar.update(step)
            if step & (step - 1) == 0:  # weights at log-spaced steps 1, 2, 4, ... for analysis over time
                run.save_model(step, model.state_dict())

            elapsed = time.perf_counter() - t_start
            if step % config.checkpoint_every == 0 or time.perf_counter() - last_ckpt_time >= config.checkpoint_seconds:
                checkpoint()
                last_ckpt_time = time.perf_counter()
        elapsed = time.perf_counter() - t_start
        checkpoint()
        run.save_model(step, model.state_dict())
    bar.close()
    loggers.close()
    summary = summarize(rows, status, step, elapsed, seed=config.seed, split_seed=config.split_seed, **extra)
    run.finish(summary)
    return summary
