"""MLP: embed each operand token and concatenate (or take float features), then hidden layers."""

from __future__ import annotations

import torch
from torch import nn

from groklab.config import ModelConfig
from groklab.models.activations import ACTIVATIONS

Tensor = torch.Tensor


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, n_inputs: int, n_classes: int, vocab_size: int, operand_positions: tuple[int, ...]) -> None:
        super().__init__()
        # Token tasks embed each operand with one shared table; feature tasks (images, parity) feed x directly.
        self.embed = nn.Embedding(vocab_size, cfg.d_model) if vocab_size else None
        self.positions = list(operand_positions)
        width_in = len(self.positions) * cfg.d_model if vocab_size else n_inputs
        self.hidden = nn.ModuleList(nn.Linear(cfg.width if i else width_in, cfg.width) for i in range(cfg.depth))
        self.out = nn.Linear(cfg.width, n_classes)
        self.act = ACTIVATIONS[cfg.activation]
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, seq) tokens or (batch, features) floats -> logits (batch, n_classes)."""
        if self.embed is not None:
            x = self.embed(x[:, self.positions]).flatten(1)  # (batch, n_operands * d_model)
        for layer in self.hidden:
            x = self.drop(self.act(layer(x)))
        return self.out(x)
