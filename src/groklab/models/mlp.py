"""MLP: embed each operand token and concatenate (or take float features), then hidden layers.

On tokens, the first layer's input is the concatenation of the operands' embeddings, so its pre-activation is a
sum over operands of (that operand's slice of the weight) · (its token's embedding): the fast path computes that
product once per (operand, token) and gathers it per sample ("token tables", as in the transformer), when the
vocabulary is smaller than the batch. `plain(x)` is the direct computation (the tests compare the two; forward hooks on
the first hidden layer fire there only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from groklab.config import ModelConfig
from groklab.models.activations import ACTIVATIONS
from groklab.models.gather import gather

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
        if self.embed is None or self.embed.num_embeddings >= x.shape[0]:
            return self.plain(x)
        first = self.hidden[0]
        # operand j's slice of the first weight, (width, d_model) each, applied to every token's embedding: (vocab, width)
        tables = [F.linear(self.embed.weight, w) for w in first.weight.view(first.out_features, len(self.positions), -1).unbind(1)]
        h = sum((gather(x[:, pos], table) for pos, table in zip(self.positions, tables, strict=True)), first.bias)
        return self.rest(h)  # h: the first layer's pre-activation (batch, width)

    def plain(self, x: Tensor) -> Tensor:
        """The direct computation: x (batch, seq) tokens or (batch, features) floats -> logits (batch, n_classes)."""
        if self.embed is not None:
            x = self.embed(x[:, self.positions]).flatten(1)  # (batch, n_operands * d_model)
        return self.rest(self.hidden[0](x))

    def rest(self, h: Tensor) -> Tensor:
        """The first hidden layer's pre-activation (batch, width) -> logits (batch, n_classes)."""
        for layer in [*self.hidden[1:], self.out]:
            h = layer(self.drop(self.act(h)))
        return h
