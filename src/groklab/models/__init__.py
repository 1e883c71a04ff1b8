"""Models: one file per family, built from a ModelConfig and the task's shapes.

A new model is one file here plus one line in ``build_model``.
"""

from __future__ import annotations

import torch
from torch import nn

from groklab.config import ModelConfig
from groklab.data import Dataset
from groklab.models.mlp import MLP
from groklab.models.transformer import Transformer


def build_model(cfg: ModelConfig, data: Dataset, seed: int) -> nn.Module:
    """A freshly initialized model (on the CPU) for `data`, every weight scaled by cfg.init_scale (Omnigrok's α)."""
    torch.manual_seed(seed)
    if cfg.name == "mlp":
        model: nn.Module = MLP(cfg, data.x.shape[1], data.n_classes, data.vocab_size, data.operand_positions)
    else:
        # the positions before the last operand (`a op` in `a op b =`) are shared by every sample with the same first operand
        model = Transformer(
            cfg, data.vocab_size, data.n_classes, seq_len=data.x.shape[1], shared_prefix=max(data.operand_positions, default=0)
        )
    if cfg.init_scale != 1.0:
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(cfg.init_scale)
    return model


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
