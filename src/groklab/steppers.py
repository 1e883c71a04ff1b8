"""Steppers: what the training loop steps. `Single` is one model; `Ensemble` is N seeds of one config whose weights
are stacked (N, ...) and stepped together by one `torch.func.vmap`ped forward and backward.

Both answer the same questions, so train.py has one loop: how many members, one step of every member (with a
finite-or-not flag each), member k as an ordinary module (for evaluation, analysis and saving), and member k's
resumable state in the exact layout of a single run's checkpoint (so `groklab resume DIR/seed-<k>` and a single run
read each other's checkpoints).

Ensembles: AdamW, Adam and SGD are elementwise, so one optimizer over the stacked tensors updates each member
exactly as its own optimizer would; member k draws its own batches from its own BatchSampler and follows the
trajectory of the single run with seed config.seed + k (up to float rounding of batched matmuls). Of the optimizer
interventions, the elementwise ones are exact too (Grokfast filters, weight decay towards init: their state is
stacked like the weights and sliced per member). Those that look at a whole weight tensor or share one random
stream would mix the members, so they are refused (ENSEMBLE_REFUSED), as are dropout and torch.compile.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from groklab.compiled import compiled_step, compiled_update
from groklab.config import Config, get_path
from groklab.data import Dataset
from groklab.errors import UserError
from groklab.losses import LossFn, make_loss
from groklab.models import build_model
from groklab.optim import (
    AdamRule,
    Interventions,
    adam_rule,
    adam_scalars,
    adam_state,
    build_optimizer,
    clip_factor,
    total_norm,
)

Tensor = torch.Tensor


class BatchSampler:
    """Minibatches of training indices: a fresh permutation each epoch, drawn from its own generator; an epoch's last,
    partial batch is dropped, or with `keep_last` taken as one smaller step."""

    def __init__(self, train_idx: Tensor, batch_size: int, seed: int, keep_last: bool = False) -> None:
        self.idx = train_idx
        n = len(train_idx)
        self.batch_size = n if batch_size == 0 or batch_size >= n else batch_size
        self.end = n if keep_last else n - n % self.batch_size  # an epoch ends where its last batch ends
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0

    def next(self) -> Tensor:
        if self.batch_size == len(self.idx):  # full batch: no sampling at all
            return self.idx
        if self.pos >= self.end:
            self.perm, self.pos = torch.randperm(len(self.idx), generator=self.gen), 0
        batch = self.perm[self.pos : min(self.pos + self.batch_size, self.end)]
        self.pos += len(batch)
        return self.idx[batch.to(self.idx.device)]

    def sizes(self) -> list[int]:
        """The sizes of an epoch's batches: the batch size, and the last batch's if it is smaller."""
        last = self.end % self.batch_size
        return [self.batch_size, last] if last else [self.batch_size]

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm, self.pos = state["perm"], state["pos"]


def sampler(config: Config, data: Dataset) -> BatchSampler:
    """The batch sampler of a run: its training split, batch size, seed and last-batch rule."""
    return BatchSampler(data.train, config.optim.batch_size, config.seed, config.optim.last_batch == "keep")


def batch_loss(loss_fn: LossFn, logits: Tensor, data: Dataset, idx: Tensor) -> Tensor:
    """The loss of logits for the examples idx: (batch, n_out) at the answer, or (batch, seq, n_out) under the task's mask."""
    return loss_fn(logits, data.y[idx], None if data.mask is None else data.mask[idx])


def optimizer_step(
    params: list[nn.Parameter],
    forward: Callable[[Tensor], Tensor],
    optimizer: torch.optim.Optimizer | Interventions,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: LossFn,
    data: Dataset,
    idx: Tensor,
    clip: float = 0.0,
) -> bool:
    """One optimizer step on the examples idx (batch,); False, with no update, if the loss or gradient is not finite.

    `params` are the model's parameters (the optimizer's), listed once by the caller; `forward` is the model itself or
    its compiled forward (`compiled_forward`); `clip` > 0 clips the gradient to that global norm first. The benchmark
    times this very function.
    """
    loss = batch_loss(loss_fn, forward(data.x[idx]), data, idx)
    for p in params:  # optimizer.zero_grad(set_to_none=True), without its per-call overhead
        p.grad = None
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    grad_norm = total_norm(grads)
    if not bool(torch.isfinite(loss + grad_norm)):  # one sync per step: cheaper than a check per tensor
        return False
    if clip:
        torch._foreach_mul_(grads, clip_factor(grad_norm, clip))
    optimizer.step()
    schedule.step()
    return True


CompiledUpdate = Callable[[list[Tensor]], Tensor | None]
"""A compiled training step of one batch: the optimizer's state -> the gradient's norm (compiled.compiled_update)."""


def updated_step(
    step: CompiledUpdate, params: list[nn.Parameter], optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, clip: float
) -> bool:
    """`optimizer_step` by a compiled step that applies the optimizer's Adam(W) update itself (`compiled_updates`): the
    same update, checks and clipping, the step counts and the schedule advanced here as the optimizer's step would.
    The benchmark times this very function where train() takes it."""
    steps, exp_avgs, exp_avg_sqs = adam_state(optimizer, params)
    norm = step([*params, *exp_avgs, *exp_avg_sqs, adam_scalars(optimizer, float(steps[0]) + 1, clip)])
    if norm is None or not bool(torch.isfinite(norm)):
        return False
    torch._foreach_add_(steps, 1)
    optimizer._opt_called = True  # type: ignore[attr-defined]  # as optimizer.step() records it: the schedule checks
    schedule.step()
    return True


def compiled_forward(
    model: nn.Module, eager: Callable[[Tensor], Tensor], loss_fn: LossFn, data: Dataset, sizes: list[int], bf16: bool = False
) -> Callable[[Tensor], Tensor]:
    """The training forward compiled for each batch size in `sizes` (each tried once on that many training examples);
    `eager` (the model, or it under bfloat16), with a one-line warning, if that fails.

    On the CPU each size's forward and backward are AOTInductor libraries from groklab's cache (compiled.py: built by a
    model's first compiled run, loaded in milliseconds by later ones); elsewhere `torch.compile(model)` with static
    shapes. A failure (no C++ compiler, an unsupported platform) surfaces in the trial forwards and backwards here,
    before the run has taken a step (RNG states and gradients are left as found). A batch of any other size runs
    `eager`. The model itself stays uncompiled, so checkpoints keep their ordinary parameter names and evaluation
    stays eager.
    """
    steps: dict[int, Callable[[Tensor], Tensor]] = {}
    try:
        for size in sizes:
            idx = data.train[:size]
            steps[size] = compiled_for(model, data, idx, bf16)
            with torch.random.fork_rng(devices=[]):
                batch_loss(loss_fn, steps[size](data.x[idx]), data, idx).backward()
            model.zero_grad(set_to_none=True)
    except Exception as err:  # noqa: BLE001 - any compiler failure means: train eagerly
        model.zero_grad(set_to_none=True)
        warn_uncompiled(err)
        return eager
    return lambda x: steps[len(x)](x) if len(x) in steps else eager(x)


def compiled_updates(
    model: nn.Module, rule: AdamRule, loss_fn: LossFn, data: Dataset, sampler: BatchSampler, bf16: bool = False
) -> Callable[[Tensor], CompiledUpdate | None] | None:
    """idx -> the whole training step on the examples idx (forward, loss, backward and the Adam(W) update `rule`)
    compiled for each of `sampler`'s batch sizes (compiled.compiled_update), or None for a batch of another size; None
    instead, with a one-line warning, if compiling fails (as `compiled_forward`).

    Each size is tried once on throwaway copies of the parameters and moments, so the model is left as found."""
    steps: dict[int, Callable[[tuple[Any, ...], Callable[[Tensor], Tensor], list[Tensor]], Tensor | None]] = {}
    arguments: dict[int, Callable[[Tensor], tuple[Any, ...]]] = {}
    try:
        for size in sampler.sizes():
            idx = data.train[:size]
            arguments[size] = compiled_arguments(model, data, size)
            steps[size] = compiled_update(model, arguments[size](data.x[idx]), rule, bf16)
            params = [p.detach().clone() for p in model.parameters()]
            state = [*params, *map(torch.zeros_like, params), *map(torch.zeros_like, params), torch.zeros(4)]
            with torch.random.fork_rng(devices=[]):
                steps[size](arguments[size](data.x[idx]), lambda out, i=idx: batch_loss(loss_fn, out, data, i), state)
    except Exception as err:  # noqa: BLE001 - any compiler failure means: train eagerly
        warn_uncompiled(err)
        return None

    def step(idx: Tensor) -> CompiledUpdate | None:
        size = len(idx)
        if size not in steps:
            return None
        return lambda state: steps[size](arguments[size](data.x[idx]), lambda out: batch_loss(loss_fn, out, data, idx), state)

    return step


def warn_uncompiled(err: Exception) -> None:
    """The one-line warning of a run that trains without --compile because compiling failed with `err`."""
    reason = (str(err).strip().splitlines() or [""])[0][:160]
    print(f"warning: --compile is unavailable here ({type(err).__name__}: {reason}); training without it", file=sys.stderr)


def compiled_for(model: nn.Module, data: Dataset, idx: Tensor, bf16: bool) -> Callable[[Tensor], Tensor]:
    """The model's training forward compiled for batches of len(idx) examples shaped as data.x[idx]."""
    arguments = compiled_arguments(model, data, len(idx))
    if idx.device.type == "cpu":
        step = compiled_step(model, arguments(data.x[idx]), bf16)
    else:
        graph = torch.compile(model, dynamic=False)
        step = in_bfloat16(graph) if bf16 else graph
    return lambda x: step(*arguments(x))


def compiled_arguments(model: nn.Module, data: Dataset, batch: int) -> Callable[[Tensor], tuple[Any, ...]]:
    """x -> the arguments of a compiled forward: (x,), or for a transformer that shares prefixes (x, its batch's
    distinct prefixes found eagerly (`FastTransformer.prefixes`)). Their count depends on the data: found inside, it
    would split the graph, and each new count would compile it again; so they are padded to the most that a batch of
    `batch` training examples can hold, and every full batch has one shape."""
    prefixes = getattr(model, "prefixes", None)
    every = None if prefixes is None else prefixes(data.x[data.train])  # the training set's distinct prefixes
    if every is None:
        return lambda x: (x,)
    rows = min(batch, len(every[0]))
    return lambda x: (x, prefixes(x, rows))


def in_bfloat16(forward: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """`forward` under torch.autocast to bfloat16, its output back in float32 for the loss. Only the forward: with the
    optimizer step inside the autocast region too, training measured to barely move."""

    def run(x: Tensor, *args: Any) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = forward(x, *args)
        return out.float()

    return run


class Single:
    """One model, its optimizer, schedule and batch sampler: the stepper of an ordinary run."""

    def __init__(self, config: Config, data: Dataset, device: torch.device) -> None:
        self.n, self.data = 1, data
        self.model = build_model(config.model, data, config.seed).to(device)
        self.params = list(self.model.parameters())
        self.optimizer, self.schedule = build_optimizer(config.optim, self.model, seed=config.seed)
        self.loss_fn = make_loss(config.loss, config.loss_dtype)
        self.sampler = sampler(config, data)
        self.clip = config.optim.grad_clip
        self.forward = in_bfloat16(self.model) if config.bf16 else self.model
        self.updates: Callable[[Tensor], CompiledUpdate | None] = lambda idx: None
        rule = adam_rule(self.optimizer) if device.type == "cpu" else None
        # --compile: one compiled step per batch size (full batches and an epoch's kept remainder); on the CPU with
        # Adam(W) the update inside it too
        if config.compile and rule is not None:
            self.updates = compiled_updates(self.model, rule, self.loss_fn, data, self.sampler, config.bf16) or self.updates
        elif config.compile:
            self.forward = compiled_forward(self.model, self.forward, self.loss_fn, data, self.sampler.sizes(), config.bf16)

    def step(self) -> list[bool]:
        """One optimizer step; [False] (and no update) if the loss or gradient was not finite."""
        idx = self.sampler.next()
        update = self.updates(idx)
        if update is not None:
            return [updated_step(update, self.params, self.optimizer, self.schedule, self.clip)]
        return [optimizer_step(self.params, self.forward, self.optimizer, self.schedule, self.loss_fn, self.data, idx, self.clip)]

    def member(self, k: int) -> nn.Module:
        return self.model

    def lr(self) -> float:
        return self.schedule.get_last_lr()[0]

    def state(self, k: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(), "sampler": self.sampler.state_dict(),
        }  # fmt: skip

    def load(self, k: int, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.sampler.load_state_dict(state["sampler"])


ENSEMBLE_REFUSED = {
    "optim.orthograd": "the ensemble would project each whole stacked weight tensor, mixing the seeds",
    "optim.norm_constraint": "the ensemble would rescale by the norm of all seeds' weights together",
    "optim.grad_noise": "the ensemble would draw one noise stream for all seeds, not each seed's own",
    "model.dropout": "dropout masks drawn under vmap differ from single runs",
    "model.tie_embeddings": "the stacked weights hold one tensor per parameter name, and tied embeddings share one",
    "compile": "the vmapped step is not compiled",
    "bf16": "the vmapped step runs in float32",
}
"""Config fields (while on) whose single runs an ensemble would not reproduce -> why."""


def refused_field(config: Config) -> tuple[str, Any] | None:
    """The first field (name, value) of `config` that an ensemble would not reproduce, or None."""
    return next(((name, get_path(config, name)) for name in ENSEMBLE_REFUSED if get_path(config, name)), None)


def check_ensemble(config: Config) -> None:
    """Refuse, naming the field, a config whose ensemble would not match its single runs."""
    refused = refused_field(config)
    if refused is not None:
        name, value = refused
        raise UserError(f"{name}={value} is not valid with --seeds: {ENSEMBLE_REFUSED[name]}; train the seeds one by one")


class Ensemble:
    """Members of one config that differ only in their seed (`configs`), weights stacked (N, ...), stepped together."""

    def __init__(self, configs: list[Config], data: Dataset, device: torch.device) -> None:
        check_ensemble(configs[0])
        self.n, self.data, self.configs = len(configs), data, configs
        models = [build_model(c.model, data, c.seed).to(device) for c in configs]
        self.template = models[0]  # an ordinary module that holds one member's weights for evaluation and saving
        params, self.buffers = stack_module_state(models)
        self.names = list(params)
        # The stacked tensors as the parameters of a copy of the model, so the ordinary optimizer builder applies to them
        # as to one model (parameter groups such as the embedding's own learning rate included).
        holder = copy.deepcopy(self.template)
        for name in self.names:
            module, _, leaf = name.rpartition(".")
            setattr(holder.get_submodule(module), leaf, nn.Parameter(params[name].detach()))
        self.stacked = list(holder.parameters())
        self.optimizer, self.schedule = build_optimizer(configs[0].optim, holder)
        self.samplers = [sampler(c, data) for c in configs]
        self.loss_fn = make_loss(configs[0].loss, configs[0].loss_dtype)
        base = copy.deepcopy(self.template).to("meta")  # stateless structure for functional_call
        # A transformer's distinct shared prefixes (a data-dependent count, which vmap cannot batch) are found once
        # for every member's batch, outside vmap; each member then runs the union of them.
        shares = getattr(self.template, "shares_prefix", lambda: 0)() > 0
        self.prefixes: Callable[[Tensor], Any] = self.template.prefixes if shares else lambda x: None  # type: ignore[assignment,operator]

        def member_loss(p: dict[str, Tensor], b: dict[str, Tensor], batch: tuple[Tensor, ...], prefixes: Any) -> Tensor:
            kwargs = {} if prefixes is None else {"prefixes": prefixes}
            return self.loss_fn(functional_call(base, (p, b), (batch[0],), kwargs), *batch[1:])

        # batch: (x, y) or (x, y, mask), each (N, batch, ...) -> (N,) losses; prefixes: the shared (u, c) tokens and
        # each member's (N, batch) indices
        self.member_losses = vmap(member_loss, in_dims=(0, 0, 0, (None, 0) if shares else None))

    def step(self) -> list[bool]:
        """One step of every member; a member whose loss or gradient is not finite is flagged False (its update is
        applied but the loop has already finished that member at its last good state)."""
        idx = torch.stack([s.next() for s in self.samplers])  # (N, batch)
        params = dict(zip(self.names, self.stacked, strict=True))
        x = self.data.x[idx]  # (N, batch, ...)
        batch = (x, self.data.y[idx]) if self.data.mask is None else (x, self.data.y[idx], self.data.mask[idx])
        losses = self.member_losses(params, self.buffers, batch, self.prefixes(x))  # (N,)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # the sum's gradient wrt member k's weights is member k's own gradient
        grads = [p.grad for p in self.stacked if p.grad is not None]
        norms = torch.as_tensor(sum(g.flatten(1).pow(2).sum(1) for g in grads)).sqrt()  # (N,): each member's own
        finite = torch.isfinite(losses + norms).tolist()
        if clip := self.configs[0].optim.grad_clip:
            factor = clip_factor(norms, clip)
            for g in grads:
                g.mul_(factor.view(-1, *[1] * (g.dim() - 1)))
        self.optimizer.step()
        self.schedule.step()
        return finite

    def member(self, k: int) -> nn.Module:
        """The template module holding member k's weights (copied in, so saving it never drags the stack along)."""
        with torch.no_grad():
            for p, s in zip(self.template.parameters(), self.stacked, strict=True):
                p.copy_(s[k])
        return self.template

    def lr(self) -> float:
        return self.schedule.get_last_lr()[0]

    def state(self, k: int) -> dict[str, Any]:
        """Member k's resumable state, in the exact layout of a single run's (Single.state)."""
        full = self.optimizer.state_dict()
        slots = {i: {key: pick(v, k) for key, v in slot.items()} for i, slot in full["state"].items()}
        optimizer = {"state": slots, "param_groups": full["param_groups"]}
        if "groklab" in full:  # the Interventions wrapper (optim.py): its stacked state sliced the same way
            optimizer["groklab"] = interventions_state(full["groklab"], k)
        return {
            "model": self.member(k).state_dict(), "optimizer": optimizer,
            "schedule": self.schedule.state_dict(), "sampler": self.samplers[k].state_dict(),
        }  # fmt: skip

    def load(self, k: int, state: dict[str, Any]) -> None:
        """Put a member's (or a single run's) state into slot k; every member resumes from the same step."""
        with torch.no_grad():
            for s, name in zip(self.stacked, self.names, strict=True):
                s[k].copy_(state["model"][name])
        own, full = state["optimizer"], self.optimizer.state_dict()
        full["param_groups"] = own["param_groups"]  # the learning rate the schedule had set (same layout: one stacked tensor per parameter)
        if not full["state"]:  # fresh optimizer: shape its stacked state from the member's, then fill slot k
            full["state"] = {i: {key: stack_like(v, self.n) for key, v in slot.items()} for i, slot in own["state"].items()}
        for i, slot in own["state"].items():
            for key, v in slot.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    full["state"][i][key][k] = v
                else:
                    full["state"][i][key] = v
        if "groklab" in own:
            full["groklab"] = load_interventions_state(full.get("groklab"), own["groklab"], k, self.n)
        self.optimizer.load_state_dict(full)
        self.schedule.load_state_dict(state["schedule"])
        self.samplers[k].load_state_dict(state["sampler"])


def pick(v: Any, k: int) -> Any:
    """Member k's slice of a stacked optimizer value (scalars such as Adam's step are shared and kept)."""
    return v[k].clone() if torch.is_tensor(v) and v.dim() > 0 else v


def stack_like(v: Any, n: int) -> Any:
    return v.unsqueeze(0).repeat(n, *([1] * v.dim())).clone() if torch.is_tensor(v) and v.dim() > 0 else v


def interventions_state(extra: dict[str, Any], k: int) -> dict[str, Any]:
    """Member k's part of Interventions.state_dict()["groklab"]: Grokfast buffers and initial weights, sliced.

    Every tensor there is stacked (N, ...) like the weights, except the MA ring buffers (window, N, ...).
    The noise generator and norm target are unused (check_ensemble refuses them).
    """

    def cut(tensors: list[Tensor] | None, dim: int = 0) -> list[Tensor] | None:
        return None if tensors is None else [t.select(dim, k).clone() for t in tensors]

    filt = extra["filter"]
    if filt is not None and "ema" in filt:
        filt = {"ema": cut(filt["ema"])}
    elif filt is not None:
        filt = {"seen": filt["seen"], "buffers": cut(filt["buffers"], dim=1), "sums": cut(filt["sums"])}
    return {**extra, "filter": filt, "init": cut(extra["init"])}


def load_interventions_state(full: dict[str, Any] | None, own: dict[str, Any], k: int, n: int) -> dict[str, Any]:
    """The inverse of interventions_state: member k's Grokfast buffers and initial weights written into slot k."""

    def put(stacked: list[Tensor] | None, mine: list[Tensor] | None, dim: int = 0) -> list[Tensor] | None:
        if mine is None:
            return stacked
        if stacked is None:
            stacked = [m.unsqueeze(dim).repeat_interleave(n, dim).clone() for m in mine]
        for s, m in zip(stacked, mine, strict=True):
            s.select(dim, k).copy_(m)
        return stacked

    full = full or {**own, "filter": None, "init": None}
    filt, mine = full["filter"], own["filter"]
    if mine is not None and "ema" in mine:
        filt = {"ema": put(filt and filt.get("ema"), mine["ema"])}
    elif mine is not None:
        filt = {
            "seen": mine["seen"],
            "buffers": put(filt and filt.get("buffers"), mine["buffers"], dim=1),
            "sums": put(filt and filt.get("sums"), mine["sums"]),
        }
    return {**own, "filter": filt, "init": put(full["init"], own["init"])}
