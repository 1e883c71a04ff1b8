"""Optimizers, the warm-up schedule, and the grokking interventions that act around an optimizer's step.

The interventions from the literature (all off by default, each a field of OptimConfig):

- Grokfast gradient filters (Lee et al. 2024): amplify the slow component of the gradient, g <- g + λ·ema(g)
  (`grokfast = "ema"`) or g <- g + λ·mean(last `window` gradients) (`grokfast = "ma"`).
- ⊥Grad (Prieto et al. 2025): keep only the part of each parameter's gradient orthogonal to the parameter,
  rescaled to the gradient's norm, so the update cannot just grow the weights along themselves (the route to
  softmax collapse).
- Gradient noise and weight decay towards the initial weights instead of zero (Power et al.'s interventions).
- Weight-norm-constrained training (Liu et al. 2023, Omnigrok): after each step the parameters are rescaled to a
  fixed total norm.

With none of them on, `build_optimizer` returns torch's own optimizer (reached without torch._dynamo: see
`WithoutDynamo`), so the common path is torch's step alone.
Otherwise it returns an `Interventions` wrapper with the same interface (step, zero_grad, param_groups,
state_dict, load_state_dict); the training loop does not know the difference. The order inside one step is:
gradient noise, Grokfast filter, ⊥Grad, weight decay towards init, the inner optimizer's update, norm projection.
Every piece of state (filter buffers, initial weights, the noise generator) is in state_dict, so a resumed run
continues bitwise identically.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from groklab.config import OptimConfig, UserError

Tensor = torch.Tensor


class EMAFilter:
    """Grokfast-EMA: ema <- α·ema + (1-α)·g, then g <- g + λ·ema (the first gradient seeds the average)."""

    def __init__(self, alpha: float, lamb: float) -> None:
        self.alpha, self.lamb = alpha, lamb
        self.ema: list[Tensor] | None = None

    def __call__(self, grads: list[Tensor]) -> None:
        """Filter `grads` (one tensor per parameter) in place."""
        if self.ema is None:
            self.ema = [g.detach().clone() for g in grads]
        else:
            torch._foreach_mul_(self.ema, self.alpha)
            torch._foreach_add_(self.ema, grads, alpha=1 - self.alpha)
        torch._foreach_add_(grads, self.ema, alpha=self.lamb)

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema = state["ema"]


class MAFilter:
    """Grokfast-MA: g <- g + λ·mean(last `window` gradients), applied once `window` gradients have been seen.

    A ring buffer (window, *shape) per parameter holds the recent gradients and a float64 running sum their total,
    so one step costs O(parameters) instead of O(window · parameters).
    """

    def __init__(self, window: int, lamb: float) -> None:
        self.window, self.lamb = window, lamb
        self.seen = 0
        self.buffers: list[Tensor] | None = None  # each (window, *param.shape)
        self.sums: list[Tensor] | None = None  # each param.shape, float64

    def __call__(self, grads: list[Tensor]) -> None:
        """Filter `grads` (one tensor per parameter) in place."""
        if self.buffers is None or self.sums is None:
            self.buffers = [g.new_zeros((self.window, *g.shape)) for g in grads]
            self.sums = [torch.zeros_like(g, dtype=torch.float64) for g in grads]
        slot = self.seen % self.window
        for g, buf, total in zip(grads, self.buffers, self.sums, strict=True):
            total.sub_(buf[slot]).add_(g)
            buf[slot] = g
        self.seen += 1
        if self.seen >= self.window:
            for g, total in zip(grads, self.sums, strict=True):
                g.add_((total * (self.lamb / self.window)).to(g.dtype))

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "buffers": self.buffers, "sums": self.sums}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.buffers, self.sums = state["seen"], state["buffers"], state["sums"]


def orthogonalize_(params: list[Tensor], grads: list[Tensor], eps: float = 1e-30) -> None:
    """⊥Grad in place: each gradient loses its component along its own parameter and keeps its norm.

    A parameter that is all zeros (a fresh bias) leaves its gradient unchanged.
    """
    for w, g in zip(params, grads, strict=True):
        w_flat, g_flat = w.detach().flatten(), g.flatten()
        along = torch.dot(w_flat, g_flat) / (torch.dot(w_flat, w_flat) + eps)
        g_norm = torch.linalg.vector_norm(g_flat)
        g_flat.sub_(along * w_flat)  # g_flat is a view of g: g is updated in place
        g_flat.mul_(g_norm / (torch.linalg.vector_norm(g_flat) + eps))


def total_norm(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of all tensors taken together, as a 0-d tensor (no host sync)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def clip_factor(norm: Tensor, clip: float | Tensor) -> Tensor:
    """What clipping to `clip` multiplies a gradient of global norm `norm` by (elementwise for a vector of norms), as
    torch.nn.utils.clip_grad_norm_ computes it."""
    return (clip / (norm + 1e-6)).clamp(max=1.0)


class Interventions:
    """An optimizer (`inner`) plus the enabled interventions of `cfg`, applied around each `step()`.

    `params` must be the same list, in the same order, as the inner optimizer's; their current values are taken as
    the initial weights (for weight decay towards init and the norm constraint).
    """

    def __init__(self, cfg: OptimConfig, params: list[nn.Parameter], inner: torch.optim.Optimizer, seed: int) -> None:
        self.cfg, self.params, self.inner = cfg, params, inner
        self.filter: EMAFilter | MAFilter | None = None
        if cfg.grokfast == "ema":
            self.filter = EMAFilter(cfg.grokfast_alpha, cfg.grokfast_lamb)
        elif cfg.grokfast == "ma":
            self.filter = MAFilter(cfg.grokfast_window, cfg.grokfast_lamb)
        device = params[0].device
        self.noise_gen = torch.Generator(device=device).manual_seed(seed) if cfg.grad_noise > 0 else None
        self.init = [p.detach().clone() for p in params] if cfg.wd_target == "init" else None
        with torch.no_grad():
            self.target_norm = cfg.norm_constraint * float(total_norm(params)) if cfg.norm_constraint > 0 else 0.0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        cfg = self.cfg
        live = [p for p in self.params if p.grad is not None]
        grads = [p.grad for p in live]
        if self.noise_gen is not None:
            for g in grads:
                g.add_(torch.randn(g.shape, generator=self.noise_gen, device=g.device, dtype=g.dtype), alpha=cfg.grad_noise)
        if self.filter is not None:
            self.filter(grads)  # type: ignore[arg-type]
        if cfg.orthograd:
            orthogonalize_(live, grads)  # type: ignore[arg-type]
        if self.init is not None and cfg.weight_decay > 0:
            self._decay_towards_init()
        self.inner.step()
        if self.target_norm > 0:
            torch._foreach_mul_(self.params, self.target_norm / total_norm(self.params))

    def _decay_towards_init(self) -> None:
        """Pull each weight towards its initial value: decoupled for AdamW (p -= lr·wd·(p - p0)), as L2 in the gradient otherwise."""
        assert self.init is not None
        diff = torch._foreach_sub(self.params, self.init)
        if self.cfg.name == "adamw":
            start = 0  # self.params lists the parameter groups' params in group order; each group has its own lr
            for group in self.inner.param_groups:
                end = start + len(group["params"])
                torch._foreach_add_(self.params[start:end], diff[start:end], alpha=-group["lr"] * self.cfg.weight_decay)
                start = end
        else:
            live = [(p.grad, d) for p, d in zip(self.params, diff, strict=True) if p.grad is not None]
            torch._foreach_add_([g for g, _ in live], [d for _, d in live], alpha=self.cfg.weight_decay)

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state_dict plus a `groklab` entry with every intervention's state."""
        extra = {
            "filter": self.filter.state_dict() if self.filter is not None else None,
            "noise_gen": self.noise_gen.get_state() if self.noise_gen is not None else None,
            "init": self.init,
            "target_norm": self.target_norm,
        }
        return {**self.inner.state_dict(), "groklab": extra}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        extra = state.pop("groklab")
        self.inner.load_state_dict(state)
        if self.filter is not None:
            self.filter.load_state_dict(extra["filter"])
        if self.noise_gen is not None:
            self.noise_gen.set_state(extra["noise_gen"])
        if self.init is not None:
            self.init = [t.to(p.device) for t, p in zip(extra["init"], self.params, strict=True)]
        self.target_norm = extra["target_norm"]


class WithoutDynamo(torch.optim.Optimizer):
    """A torch optimizer whose methods skip the wrappers that import torch._dynamo on their first call.

    torch wraps Optimizer.step, zero_grad, state_dict, load_state_dict and add_param_group so that a compiler can
    trace around them; the first call imports torch._dynamo, about 2 s of every run's start-up, and groklab never
    compiles an optimizer. Each method here calls the function under the wrapper, so updates and the state_dict
    layout are torch's own (a run's checkpoints load either way). Mixed in before a torch optimizer class.
    """

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        unwrapped(super().add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        unwrapped(super().zero_grad)(self, set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return unwrapped(super().state_dict)(self)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        unwrapped(super().load_state_dict)(self, state_dict)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # torch's wrapper also sets no_grad around the update
        return unwrapped(super().step)(self, closure)


def unwrapped(method: Any) -> Any:
    """The plain function under a bound method's decorator (the decorated method itself if it has none)."""
    return getattr(method, "__wrapped__", method.__func__)


class AdamW(WithoutDynamo, torch.optim.AdamW):
    pass


class Adam(WithoutDynamo, torch.optim.Adam):
    pass


class SGD(WithoutDynamo, torch.optim.SGD):
    pass


@dataclass(frozen=True)
class AdamRule:
    """The constants of an Adam or AdamW update (one parameter group), as compiled into a fused training step."""

    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool
    """AdamW's decay of the weights themselves, not Adam's L2 term in the gradient."""


def adam_rule(optimizer: torch.optim.Optimizer | Interventions) -> AdamRule | None:
    """The update rule of `optimizer` when a compiled step can apply it itself: groklab's Adam or AdamW with one
    parameter group and neither amsgrad nor maximize; else None (interventions, SGD, an embedding's own lr)."""
    if not isinstance(optimizer, (Adam, AdamW)) or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if group["amsgrad"] or group["maximize"]:
        return None
    beta1, beta2 = group["betas"]
    return AdamRule(beta1, beta2, group["eps"], group["weight_decay"], isinstance(optimizer, AdamW))


def adam_update(
    rule: AdamRule, params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], scalars: Tensor
) -> tuple[list[tuple[Tensor, Tensor, Tensor]], Tensor]:
    """One Adam(W) step as functions of its inputs, with the gradient's global norm and the rest of the training
    step's checks: each parameter's (new weight, new first moment, new second moment), and the norm.

    `scalars` holds this step's (lr·weight decay, lr / (1 - β1^k), sqrt(1 - β2^k), clip) (`adam_scalars`). The gradient is clipped
    to `clip` first where clip > 0, and where its norm is not finite every tensor keeps its value. The arithmetic is
    torch's fused Adam kernel's, in its order. Written in tensor operations alone, so that it can be traced into a
    compiled step's graph (compiled.py) as well as run.
    """
    decay, step_size, bias_sqrt, clip = scalars[0], scalars[1], scalars[2], scalars[3]
    # total_norm's foreach norm is not compiled into an AOTInductor library (it calls back into torch): one norm each
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    finite = torch.isfinite(norm)
    factor = torch.where(clip > 0, clip_factor(norm, clip), 1.0)
    updated = []
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        g = g * factor
        if rule.decoupled:
            new_p = p - p * decay
        else:
            new_p, g = p, g + p * rule.weight_decay
        new_m = torch.lerp(m, g, 1 - rule.beta1)
        new_v = v * rule.beta2 + g * g * (1 - rule.beta2)
        new_p = new_p - step_size * new_m / (torch.sqrt(new_v) / bias_sqrt + rule.eps)
        updated.append((torch.where(finite, new_p, p), torch.where(finite, new_m, m), torch.where(finite, new_v, v)))
    return updated, norm


def adam_state(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """The step counts, first and second moments of `params` in `optimizer`'s own state, created as torch's fused Adam
    creates them on its first step: an updated step reads and writes the tensors that the optimizer's state_dict
    saves and loads, so checkpoints keep torch's layout."""
    for p in params:
        if not optimizer.state[p]:
            optimizer.state[p].update(
                step=torch.zeros((), dtype=torch.float32, device=p.device),
                exp_avg=torch.zeros_like(p, memory_format=torch.preserve_format),
                exp_avg_sq=torch.zeros_like(p, memory_format=torch.preserve_format),
            )
    states = [optimizer.state[p] for p in params]
    return [s["step"] for s in states], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states]


def adam_scalars(optimizer: torch.optim.Optimizer, step: float, clip: float) -> Tensor:
    """`adam_update`'s scalars for the parameters' `step`-th update (from 1), at the group's current learning rate,
    computed in double precision as torch's fused kernel computes them."""
    group = optimizer.param_groups[0]
    lr, (beta1, beta2) = group["lr"], group["betas"]
    decay = lr * group["weight_decay"]
    return torch.tensor([decay, lr / (1 - beta1**step), (1 - beta2**step) ** 0.5, clip], dtype=torch.float32)


def has_interventions(cfg: OptimConfig) -> bool:
    """True when any intervention of `cfg` is on (then build_optimizer returns an Interventions wrapper)."""
    return cfg.grokfast != "none" or cfg.orthograd or cfg.grad_noise > 0 or cfg.wd_target == "init" or cfg.norm_constraint > 0


def param_groups(cfg: OptimConfig, model: nn.Module) -> list[dict[str, Any]]:
    """One group of all parameters, or with cfg.embed_lr > 0 two: the decoder (lr) and the token embedding (embed_lr).

    The embedding is the model's `embed` module (MLP.embed, Transformer.embed): Liu et al. 2022's representation,
    whose learning rate their second phase diagram varies independently of the decoder's.
    """
    params = list(model.parameters())
    if cfg.embed_lr == 0:
        return [{"params": params}]
    embed = getattr(model, "embed", None)
    if not isinstance(embed, nn.Module):
        raise UserError(
            f"optim.embed_lr={cfg.embed_lr} needs a model with a token embedding: use 0"
        )
    embedding = list(embed.parameters())
    ids = {id(p) for p in embedding}
    return [{"params": [p for p in params if id(p) not in ids]}, {"params": embedding, "lr": cfg.embed_lr}]


def lr_factor(cfg: OptimConfig, step: int) -> float:
    """The learning rate at `step` as a fraction of cfg.lr: a linear warm-up from 1/warmup_steps to 1, then constant, or
    with cfg.decay_steps linearly down to 0 at that step."""
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    if not cfg.decay_steps or step < cfg.warmup_steps:
        return warm
    return max(0.0, (cfg.decay_steps - step) / (cfg.decay_steps - cfg.warmup_steps))


def build_optimizer(
    cfg: OptimConfig, model: nn.Module, seed: int = 0
) -> tuple[torch.optim.Optimizer | Interventions, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer over all parameters (weight decay on every weight, as in Power et al.) and its schedule (lr_factor).

    `seed` seeds the gradient-noise generator (used only when cfg.grad_noise > 0). The model's current weights are
    the "initial" weights of weight decay towards init and of the norm constraint. With cfg.embed_lr > 0 the
    embedding is a second parameter group with its own learning rate (the warm-up scales both).
    """
    groups = param_groups(cfg, model)
    params = [p for group in groups for p in group["params"]]
    # Decay towards init replaces the inner optimizer's decay towards zero.
    wd = 0.0 if cfg.wd_target == "init" else cfg.weight_decay
    # One fused kernel per parameter instead of a dozen elementwise ops (faster on CPU and CUDA; same update up to rounding).
    fused = True if params and params[0].device.type in ("cpu", "cuda") else None
    if cfg.name == "adamw":
        opt: torch.optim.Optimizer = AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd, fused=fused)
    elif cfg.name == "adam":
        opt = Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=wd, fused=fused)
    else:
        opt = SGD(groups, lr=cfg.lr, momentum=cfg.beta1, weight_decay=wd)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(cfg, step))
    if not has_interventions(cfg):
        return opt, schedule
    return Interventions(cfg, params, opt, seed), schedule
