"""MLP: embed each operand token and concatenate them (or take float features), then hidden layers: the plain reference.

Training runs `models/fast.py`'s FastMLP, which takes the first layer from token tables when that is less work.
"""

from __future__ import annotations

import torch
from torch import nn

from groklab.config import ModelConfig
from groklab.models.activations import ACTIVATIONS
from groklab.models.linear import Linear

Tensor = torch.Tensor


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, n_inputs: int, n_out: int, vocab_size: int, operand_positions: tuple[int, ...]) -> None:
        super().__init__()
        # Token tasks embed each operand with one shared table; feature tasks (images, parity) feed x directly.
        self.embed = nn.Embedding(vocab_size, cfg.d_model) if vocab_size else None
        self.positions = list(operand_positions)
        width_in = len(self.positions) * cfg.d_model if vocab_size else n_inputs
        self.hidden = nn.ModuleList(Linear(cfg.width if i else width_in, cfg.width) for i in range(cfg.depth))
        self.out = Linear(cfg.width, n_out)
        self.act = ACTIVATIONS[cfg.activation]
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, seq) tokens or (batch, features) floats -> logits (batch, n_out)."""
        return self.out(self.drop(self.neurons(x)))

    def neurons(self, x: Tensor) -> Tensor:
        """x -> the last hidden layer's activations (batch, width): the neurons that feed the logits."""
        if self.embed is not None:
            # only the operands carry information (not the op or `=` tokens); concatenated, so their order matters
            # (by integer index: a list index would make a tensor that tracing for --compile cannot follow)
            x = self.embed(torch.stack([x[:, pos] for pos in self.positions], 1)).flatten(1)  # (batch, n_operands · d_model)
        return self.activations(self.hidden[0](x))

    def activations(self, h: Tensor) -> Tensor:
        """The first hidden layer's pre-activation (batch, width) -> the last hidden layer's activations (batch, width)."""
        for layer in self.hidden[1:]:
            h = layer(self.drop(self.act(h)))
        return self.act(h)

    def neuron_layers(self) -> tuple[nn.Linear, nn.Linear]:
        """(the layer producing the neurons that feed the logits, the layer reading them): what each neuron owns."""
        return self.hidden[-1], self.out

    def readout(self) -> nn.Linear:
        """The layer that produces the logits."""
        return self.out

    def embedding(self) -> Tensor:
        """The operand-token embedding (vocab, d_model); rows 0..p−1 are the operands of the binary-operation tables."""
        if self.embed is None:
            raise ValueError("this MLP reads float features: it has no token embedding")
        return self.embed.weight
