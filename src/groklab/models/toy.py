"""Liu et al. 2022's toy model ("Towards understanding grokking: an effective theory"): (a, b) → Dec(E_a + E_b).

Each operand token has a learnable embedding E (d_model dimensions, 1 in the paper's simplest case); the decoder
is an MLP of `depth` hidden layers of `width` reading the *sum* E_a + E_b, so the model can only answer through
what the sum keeps: a linear (parallelogram) representation generalizes, anything else must memorize. Its
output (target_dim,) is trained by MSE towards a fixed random target vector per class; the logits are the
negative squared distances to every class's target, so argmax is the nearest target (Liu et al.'s accuracy) and
`loss = "target_mse"` (minus the correct class's logit) is their MSE.
"""

from __future__ import annotations

import torch
from torch import nn

from groklab.config import ModelConfig
from groklab.models.activations import ACTIVATIONS
from groklab.models.linear import Linear

Tensor = torch.Tensor

TARGET_SEED = 0
"""The class targets are drawn from this seed, not the run's: they are the task's labels, the same for every seed."""


class Toy(nn.Module):
    def __init__(self, cfg: ModelConfig, n_classes: int, vocab_size: int, operand_positions: tuple[int, ...]) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)  # `embed`: optim.embed_lr is the representation lr
        self.positions = list(operand_positions)
        widths = [cfg.d_model] + [cfg.width] * cfg.depth
        self.hidden = nn.ModuleList(Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True))
        self.out = Linear(cfg.width, cfg.target_dim)
        self.act = ACTIVATIONS[cfg.activation]
        targets = torch.randn(n_classes, cfg.target_dim, generator=torch.Generator().manual_seed(TARGET_SEED))
        self.register_buffer("targets", targets)  # (n_classes, target_dim), saved with the weights, never trained

    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, seq) tokens -> logits (batch, n_classes): −mean squared distance of the output to each target."""
        out = self.out(self.neurons(x))  # (batch, target_dim)
        return -(out[:, None, :] - self.targets[None]).pow(2).mean(-1)

    def neurons(self, x: Tensor) -> Tensor:
        """x -> the decoder's last hidden activations (batch, width), from the summed operand embeddings."""
        h = self.embed(x[:, self.positions]).sum(1)  # (batch, d_model): E_a + E_b
        for layer in self.hidden:
            h = self.act(layer(h))
        return h

    def neuron_layers(self) -> tuple[nn.Linear, nn.Linear]:
        """(the layer producing the neurons that feed the output, the layer reading them)."""
        return self.hidden[-1], self.out

    def readout(self) -> nn.Linear:
        return self.out

    def embedding(self) -> Tensor:
        """The operand-token embedding (vocab, d_model): Liu et al.'s representation."""
        return self.embed.weight
