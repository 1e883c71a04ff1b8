"""Models: one file per family (the plain reference), their fast paths in fast.py, built from a ModelConfig and the task.

A new model is one file here plus one line in ``build_model``.
"""

from __future__ import annotations

import torch
from torch import nn

from groklab.config import ModelConfig
from groklab.data import Dataset, build_task
from groklab.errors import UserError, first_line
from groklab.models.fast import FastMLP, FastTransformer
from groklab.models.mlp import MLP
from groklab.models.toy import Toy
from groklab.models.transformer import LanguageModel, Transformer
from groklab.runio import Run, UnreadableCheckpoint


def build_model(cfg: ModelConfig, data: Dataset, seed: int, *, fast: bool = True) -> nn.Module:
    """A freshly initialized model (on the CPU) for `data` (cfg.init), every weight scaled by cfg.init_scale (Omnigrok's α).

    fast: the fast path that training uses (same parameters and state_dict keys, same answer logits), or the plain
    reference model that analysis reads (False).
    """
    torch.manual_seed(seed)
    if data.mask is not None:  # a sequence task: logits at every position (the fast paths serve one answer position)
        if cfg.name != "lm":
            raise UserError(f"model.name={cfg.name!r} is not valid for a sequence task (targets at many positions): expected lm")
        model: nn.Module = LanguageModel(cfg, data.vocab_size, data.n_classes, seq_len=data.x.shape[1])
    elif cfg.name == "mlp":
        mlp = FastMLP if fast else MLP
        model = mlp(cfg, data.x.shape[1], data.n_classes, data.vocab_size, data.operand_positions)
    elif cfg.name == "toy":  # one reference model: nothing to make fast
        model = Toy(cfg, data.n_classes, data.vocab_size, data.operand_positions)
    elif fast:
        # the positions before the last operand (`a op` in `a op b =`) are shared by every sample with the same first operand
        shared = max(data.operand_positions, default=0)
        model = FastTransformer(cfg, data.vocab_size, data.n_classes, seq_len=data.x.shape[1], shared_prefix=shared)
    else:
        model = Transformer(cfg, data.vocab_size, data.n_classes, seq_len=data.x.shape[1])
    if cfg.init == "uniform":  # Liu et al.'s toy code draws its representation from U(−½, ½), not N(0, 1)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Embedding):
                    module.weight.uniform_(-0.5, 0.5)
    if cfg.init_scale != 1.0:
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(cfg.init_scale)
    return model


def load_model(run: Run, step: int | None = None) -> nn.Module:
    """The reference model of `run` (from groklab.load_run) at its weights-only checkpoint `step` (default: the newest)."""
    config = run.config
    model = build_model(config.model, build_task(config.task, config.split_seed), config.seed, fast=False)
    try:
        model.load_state_dict(run.model_state(step))
    except RuntimeError as err:  # weights of another shape or names than config.json's model: a foreign or edited run
        raise UnreadableCheckpoint(f"{run.path}: the model checkpoint does not fit config.json's model ({first_line(err)})") from None
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
