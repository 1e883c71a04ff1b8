"""Seeds as one ensemble: N seeds of one config trained together in one process with `torch.func.vmap`.

Every seed's weights are stacked along a new leading dimension (N, ...) and one vmapped forward and backward
steps them all; AdamW, Adam and SGD are elementwise, so one optimizer over the stacked tensors updates each
member exactly as its own optimizer would. Member k (seed = config.seed + k) draws its own batches from its
own BatchSampler, so it follows the same trajectory as `groklab train --seed <seed>` (up to float rounding of
batched matmuls) and writes an ordinary run directory DIR/seed-<k>/ that `groklab resume` and every other
command read like any other run. On a GPU, where one small model leaves the device idle, this is the main lever.

Of the optimizer interventions, the elementwise ones are exact here too (Grokfast EMA/MA filters, weight decay
towards init: their state is stacked like the weights and sliced per member into each checkpoint). Those that
look at a whole weight tensor or share a random stream (⊥Grad, the norm constraint, gradient noise) would mix
the members, so they are refused (see UNSUPPORTED).
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from groklab.config import Config, UserError, validate
from groklab.data import Dataset, build_task
from groklab.loggers import MetricLoggers
from groklab.losses import make_loss
from groklab.models import build_model
from groklab.models.transformer import Transformer
from groklab.optim import build_optimizer
from groklab.runio import RunDir, config_digest, summarize
from groklab.stats import GROK_ACC
from groklab.train import (
    BatchSampler,
    Progress,
    eval_schedule,
    evaluate,
    is_eval_step,
    keep_freed_memory,
    resolve_device,
    rng_states,
    stop_on_signals,
    weight_norm,
)

Tensor = torch.Tensor


UNSUPPORTED = {
    "optim.orthograd": "projects each whole weight tensor, which would mix the stacked seeds",
    "optim.norm_constraint": "rescales by the norm of all weights together, which would mix the stacked seeds",
    "optim.grad_noise": "draws one noise stream for all seeds, not each seed's own",
}
"""Config fields the vmapped step does not reproduce exactly (while on) -> why."""


def check_supported(config: Config) -> None:
    """Refuse, naming the field, a config whose ensemble would not match its single runs (dropout, some interventions)."""
    o = config.optim
    values = {"optim.orthograd": o.orthograd, "optim.norm_constraint": o.norm_constraint, "optim.grad_noise": o.grad_noise}
    for name, value in values.items():
        if value:
            raise UserError(f"{name}={value} is not valid with --seeds: the ensemble {UNSUPPORTED[name]}; train the seeds one by one")
    if config.model.dropout > 0:
        raise UserError(
            f"model.dropout={config.model.dropout} is not valid with --seeds: dropout masks drawn under vmap differ from "
            "single runs; train the seeds one by one"
        )


def parse_seeds(value: str | int) -> int:
    """The --seeds value as an integer >= 1, or a UserError naming it."""
    try:
        n = int(str(value).replace("_", ""))
    except ValueError:
        raise UserError(f"--seeds={value!r} is not valid: expected an integer >= 1 (the number of seeds to train)") from None
    if n < 1:
        raise UserError(f"--seeds={value!r} is not valid: expected an integer >= 1 (the number of seeds to train)")
    return n


class Ensemble:
    """N members of one config, weights stacked (N, ...), stepped together by one vmapped forward and backward."""

    def __init__(self, config: Config, data: Dataset, n: int, device: torch.device) -> None:
        check_supported(config)
        self.n, self.data = n, data
        self.configs = [dataclasses.replace(config, seed=config.seed + k) for k in range(n)]
        models = [build_model(config.model, data, c.seed).to(device) for c in self.configs]
        self.template = models[0]  # an ordinary module that holds one member's weights for evaluation and saving
        params, self.buffers = stack_module_state(models)
        self.names = list(params)
        # nn.Parameters in a module, so the ordinary optimizer builder applies to the stacked tensors.
        self.stacked = nn.ParameterList(nn.Parameter(params[name].detach()) for name in self.names)
        self.optimizer, self.schedule = build_optimizer(config.optim, self.stacked)
        self.samplers = [BatchSampler(data.train, config.optim.batch_size, c.seed) for c in self.configs]
        self.loss_fn = make_loss(config.loss, config.loss_dtype)
        base = copy.deepcopy(self.template).to("meta")  # stateless structure for functional_call
        # A transformer's distinct shared prefixes (a data-dependent count, which vmap cannot batch) are found once
        # for every member's batch, outside vmap; each member then runs the union of them.
        shares = isinstance(self.template, Transformer) and self.template.shares_prefix() > 0
        self.prefixes = self.template.prefixes if shares else lambda x: None

        def member_loss(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor, prefixes: Any) -> Tensor:
            kwargs = {} if prefixes is None else {"prefixes": prefixes}
            return self.loss_fn(functional_call(base, (p, b), (x,), kwargs), y)

        # (N, batch, ...) inputs -> (N,) losses; prefixes: the shared (u, c) tokens and each member's (N, batch) indices
        self.member_losses = vmap(member_loss, in_dims=(0, 0, 0, 0, (None, 0) if shares else None))

    def backward(self) -> Tensor:
        """Gradients of every member on its next batch; returns (N,) bool: loss and gradient finite."""
        idx = torch.stack([s.next() for s in self.samplers])  # (N, batch)
        params = dict(zip(self.names, self.stacked, strict=True))
        x = self.data.x[idx]  # (N, batch, ...)
        losses = self.member_losses(params, self.buffers, x, self.data.y[idx], self.prefixes(x))  # (N,)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the sum's gradient wrt member k's weights is member k's own gradient
        sq = sum(p.grad.flatten(1).pow(2).sum(1) for p in self.stacked if p.grad is not None)  # (N,)
        return torch.isfinite(losses + torch.as_tensor(sq).sqrt())

    def update(self) -> None:
        self.optimizer.step()
        self.schedule.step()

    def step(self) -> Tensor:
        """One optimizer step of every member (the benchmark's unit); returns backward()'s finite mask."""
        finite = self.backward()
        self.update()
        return finite

    def load_member(self, k: int) -> nn.Module:
        """The template module holding member k's weights (copied, so saving it never drags the stack along)."""
        with torch.no_grad():
            for p, s in zip(self.template.parameters(), self.stacked, strict=True):
                p.copy_(s[k])
        return self.template

    def member_optimizer_state(self, k: int) -> dict[str, Any]:
        """Member k's slice of the optimizer state, in the exact layout of a single run's optimizer.state_dict()."""
        full = self.optimizer.state_dict()
        state = {
            i: {key: v[k].clone() if torch.is_tensor(v) and v.dim() > 0 else v for key, v in slot.items()}
            for i, slot in full["state"].items()
        }
        out = {"state": state, "param_groups": full["param_groups"]}
        if "groklab" in full:  # the Interventions wrapper (optim.py): its stacked state sliced the same way
            out["groklab"] = member_interventions_state(full["groklab"], k)
        return out


def member_interventions_state(extra: dict[str, Any], k: int) -> dict[str, Any]:
    """Member k's part of Interventions.state_dict()["groklab"]: Grokfast buffers and initial weights, sliced.

    Every tensor there is stacked (N, ...) like the weights, except the MA ring buffers (window, N, ...).
    The noise generator and norm target are unused (check_supported refuses them).
    """

    def pick(tensors: list[Tensor] | None, dim: int = 0) -> list[Tensor] | None:
        return None if tensors is None else [t.select(dim, k).clone() for t in tensors]

    filt = extra["filter"]
    if filt is not None and "ema" in filt:
        filt = {"ema": pick(filt["ema"])}
    elif filt is not None:
        filt = {"seen": filt["seen"], "buffers": pick(filt["buffers"], dim=1), "sums": pick(filt["sums"])}
    return {**extra, "filter": filt, "init": pick(extra["init"])}


def train_ensemble(config: Config, out: str | Path, n_seeds: int, *, progress: bool = True) -> list[dict[str, Any]]:
    """Train seeds config.seed .. config.seed + n_seeds - 1 together into out/seed-<k>/; return their summaries."""
    config = validate(config)
    out = Path(out)
    for k in range(n_seeds):
        if (out / f"seed-{k}" / "config.json").exists():
            raise UserError(
                f"{out / f'seed-{k}'} already holds a run: continue it with `groklab resume {out / f'seed-{k}'}`, or choose a new --out"
            )
    if config.threads:
        torch.set_num_threads(config.threads)
    if config.compile:  # the vmapped step is not compiled (yet): say so rather than silently ignore the flag
        print("warning: --compile is not applied to --seeds ensembles; training them eagerly", file=sys.stderr)
    device = resolve_device(config.device)
    keep_freed_memory(device)
    data = build_task(config.task, config.split_seed).to(device)
    ens = Ensemble(config, data, n_seeds, device)
    runs = [RunDir(out / f"seed-{k}") for k in range(n_seeds)]
    loggers = [MetricLoggers(cfg, run.path) for run, cfg in zip(runs, ens.configs, strict=True)]  # --log; before anything is written
    for run, cfg in zip(runs, ens.configs, strict=True):
        run.prepare(cfg)

    rows: list[list[dict[str, Any]]] = [[] for _ in range(n_seeds)]
    held: list[int | None] = [None] * n_seeds
    summaries: list[dict[str, Any] | None] = [None] * n_seeds
    step, t_start, last_ckpt_time = 0, time.perf_counter(), time.perf_counter()

    def active() -> list[int]:
        return [k for k in range(n_seeds) if summaries[k] is None]

    def checkpoint(k: int) -> None:
        model = ens.load_member(k)
        runs[k].save_state(step, {
            "config_digest": config_digest(ens.configs[k]), "step": step, "elapsed": time.perf_counter() - t_start,
            "held_since": held[k], "model": model.state_dict(), "optimizer": ens.member_optimizer_state(k),
            "schedule": ens.schedule.state_dict(), "sampler": ens.samplers[k].state_dict(), "rng": rng_states(),
        })  # fmt: skip

    def finish(k: int, status: str, **extra: Any) -> None:
        """Member k's last checkpoint, final weights and summary, in the order train() writes them."""
        elapsed = time.perf_counter() - t_start
        checkpoint(k)
        runs[k].save_model(step, ens.load_member(k).state_dict())
        summaries[k] = summarize(rows[k], status, step, elapsed, seed=ens.configs[k].seed, split_seed=config.split_seed, **extra)
        runs[k].finish(summaries[k])

    log_steps = eval_schedule(config)
    label = f"{config.task.op if config.task.name == 'binop' else config.task.name} {config.model.name} ×{n_seeds}"
    bar = Progress(progress, config.steps, label)
    for k in range(n_seeds):
        checkpoint(k)
        runs[k].save_model(step, ens.load_member(k).state_dict())
    with stop_on_signals() as caught:
        while True:
            if is_eval_step(step, config, log_steps):
                for k in active():
                    model = ens.load_member(k)
                    row = {"step": step, "time_s": round(time.perf_counter() - t_start, 4), **evaluate(model, data, ens.loss_fn)}
                    row["norm/total"] = weight_norm(model)
                    row["lr"] = ens.schedule.get_last_lr()[0]
                    runs[k].append_metrics(row)
                    loggers[k].log(row)
                    rows[k].append(row)
                    held[k] = (held[k] if held[k] is not None else step) if row["val/acc"] >= GROK_ACC else None
                    if config.stop_patience and held[k] is not None and step - held[k] >= config.stop_patience:
                        finish(k, "finished", stopped_early=True)
                live = [rows[k][-1] for k in range(n_seeds)]
                bar.update(step, {key: sum(r[key] for r in live) / n_seeds for key in ("train/acc", "val/acc")})
            if step >= config.steps or not active():
                break
            if caught:
                break

            # One step of every member; a member whose loss or gradient is not finite stops before the update.
            finite = ens.backward().tolist()
            for k in active():
                if not finite[k]:
                    finish(k, "diverged", diverged_at_step=step + 1)
            ens.update()
            step += 1
            bar.update(step)
            if step & (step - 1) == 0:
                for k in active():
                    runs[k].save_model(step, ens.load_member(k).state_dict())
            if step % config.checkpoint_every == 0 or time.perf_counter() - last_ckpt_time >= config.checkpoint_seconds:
                for k in active():
                    checkpoint(k)
                last_ckpt_time = time.perf_counter()
        for k in active():
            finish(k, "interrupted" if caught else "finished")
    bar.close()
    for logger in loggers:
        logger.close()
    return [s for s in summaries if s is not None]
