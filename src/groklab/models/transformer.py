"""Decoder-only transformer over token sequences (`a op b =` for the binary-operation tables): the plain reference.

The architecture is set by ModelConfig, not by a model name:

* ``norm``: ``post`` (Power et al.: x = LN(x + attn(x)); x = LN(x + mlp(x))), ``pre`` (x = x + attn(LN(x));
  x = x + mlp(LN(x)), then a final LayerNorm before the unembedding, as in GPT-2) or ``none`` (Nanda et al.);
* ``mlp_bias``: biases in the MLP block (Nanda's model has them; attention and unembedding never do);
* ``init``: PyTorch's default, or ``normal`` (Nanda et al.: every weight matrix and embedding drawn from
  N(0, 1/d_model), every bias zero, LayerNorm gains left at 1).

This file computes every block at every position, so that it is easy to read and to check. Training runs
`models/fast.py`, which computes the same answer logits with less work from the same parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.config import ModelConfig
from groklab.models.activations import ACTIVATIONS
from groklab.models.linear import Linear

Tensor = torch.Tensor


class Block(nn.Module):
    """Causal self-attention, then an MLP, each added to the residual stream, with the LayerNorm placement of `cfg.norm`."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.pre_norm = cfg.norm == "pre"
        self.qkv = Linear(d, 3 * d, bias=False)
        self.proj = Linear(d, d, bias=False)
        self.fc_in = Linear(d, cfg.d_mlp, bias=cfg.mlp_bias)
        self.fc_out = Linear(cfg.d_mlp, d, bias=cfg.mlp_bias)
        self.act = ACTIVATIONS[cfg.activation]
        self.drop = nn.Dropout(cfg.dropout)
        self.ln_attn = nn.Identity() if cfg.norm == "none" else nn.LayerNorm(d)
        self.ln_mlp = nn.Identity() if cfg.norm == "none" else nn.LayerNorm(d)

    def forward(self, x: Tensor, first: Tensor | None = None) -> Tensor:
        """x (batch, seq, d_model) -> (batch, seq, d_model); `first` as in `attend`."""
        return self.add_mlp(self.add_attention(x, self.attend(*self.project(x), first=first)))

    def attention_input(self, x: Tensor) -> Tensor:
        """The stream the query/key/value projections read: normalized first under pre-LN."""
        return self.ln_attn(x) if self.pre_norm else x

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (batch, seq, d_model) -> queries, keys, values, each (batch, seq, d_model) (heads side by side)."""
        return self.qkv(self.attention_input(x)).chunk(3, dim=-1)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, first: Tensor | None = None) -> Tensor:
        """Causal multi-head attention: q, k, v (batch, seq, d_model) -> the heads' outputs side by side (batch, seq, d_model).

        first (batch,) long, optional: attention restricted to the span starting there (tree projections): a position
        i >= first sees positions first..i only; earlier positions keep their causal view (they are never read)."""
        (batch, seq, d), h = q.shape, self.n_heads
        q, k, v = (t.reshape(batch, seq, h, d // h).transpose(1, 2) for t in (q, k, v))  # (batch, heads, seq, d_head)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // h)  # (batch, heads, seq, seq)
        # position i sees positions <= i only: what a language model may use to predict token i + 1
        hidden = torch.ones(seq, seq, dtype=torch.bool, device=q.device).triu(1)
        if first is not None:
            pos = torch.arange(seq, device=q.device)
            before = (pos[None, :] < first[:, None])[:, None, :] & (pos[None, :] >= first[:, None])[:, :, None]  # (batch, query, key)
            hidden = (hidden | before)[:, None]  # (batch, 1, seq, seq)
        weights = F.softmax(scores.masked_fill(hidden, float("-inf")), dim=-1)
        return (weights @ v).transpose(1, 2).reshape(batch, seq, d)

    def add_attention(self, x: Tensor, attended: Tensor) -> Tensor:
        """The residual stream x plus the attention output `attended` projected back (both (rows, s, d_model))."""
        x = x + self.drop(self.proj(attended))
        return x if self.pre_norm else self.ln_attn(x)

    def neurons(self, x: Tensor) -> Tensor:
        """The MLP's hidden activations: x (rows, s, d_model) -> (rows, s, d_mlp)."""
        return self.act(self.fc_in(self.ln_mlp(x) if self.pre_norm else x))

    def add_mlp(self, x: Tensor) -> Tensor:
        """The residual stream x (rows, s, d_model) plus the MLP's output."""
        x = x + self.drop(self.fc_out(self.neurons(x)))
        return x if self.pre_norm else self.ln_mlp(x)


class Transformer(nn.Module):
    """Learned token and position embeddings, `cfg.n_layers` blocks, a bias-free unembedding to `n_out` classes."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, n_out: int, seq_len: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        # pre-LN leaves the residual stream unnormalized after the last block: normalize it once before reading it out
        self.ln_final = nn.LayerNorm(cfg.d_model) if cfg.norm == "pre" else nn.Identity()
        self.unembed = Linear(cfg.d_model, n_out, bias=False)
        if cfg.init == "normal":
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    nn.init.normal_(module.weight, std=1 / math.sqrt(cfg.d_model))
                    if getattr(module, "bias", None) is not None:
                        nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (batch, seq) tokens -> logits at the last (answer) position (batch, n_out)."""
        return self.sequence_logits(x)[:, -1]

    def sequence_logits(self, x: Tensor) -> Tensor:
        """x (batch, seq) tokens -> logits at every position (batch, seq, n_out); position i sees tokens 0..i only."""
        return self.unembed(self.ln_final(self.residual(x)))

    def residual(self, x: Tensor, n_blocks: int | None = None, first: Tensor | None = None) -> Tensor:
        """x (batch, seq) tokens -> the residual stream after the first n_blocks blocks (default all): (batch, seq, d_model).
        first (batch,): every block's attention restricted to the span starting there (see Block.attend)."""
        h = self.embed(x) + self.pos.weight[: x.shape[1]]  # (batch, seq, d_model)
        for block in self.blocks[:n_blocks]:
            h = block(h, first)
        return h

    def neuron_layers(self) -> tuple[nn.Linear, nn.Linear]:
        """(the layer producing the neurons that feed the logits, the layer reading them): the last block's MLP."""
        return self.blocks[-1].fc_in, self.blocks[-1].fc_out

    def readout(self) -> nn.Linear:
        """The layer that produces the logits (the unembedding)."""
        return self.unembed

    def embedding(self) -> Tensor:
        """The token embedding (vocab, d_model): rows 0..p−1 are the operands of the binary-operation tables."""
        return self.embed.weight

    def neurons(self, x: Tensor) -> Tensor:
        """x (batch, seq) tokens -> the last block's MLP activations at the answer position (batch, d_mlp): the
        neurons that feed the logits (Nanda et al.)."""
        h = self.residual(x, n_blocks=len(self.blocks) - 1)
        last = self.blocks[-1]
        return last.neurons(last.add_attention(h, last.attend(*last.project(h))))[:, -1]


class LanguageModel(Transformer):
    """The transformer read out at every position, for sequence tasks (targets at many positions under a mask):
    model.name `lm`. With cfg.tie_embeddings the unembedding is the token embedding itself (one parameter)."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, n_out: int, seq_len: int) -> None:
        super().__init__(cfg, vocab_size, n_out, seq_len)
        if cfg.tie_embeddings:
            self.unembed.weight = self.embed.weight  # (vocab, d_model) both ways: n_out is the vocabulary

    def forward(self, x: Tensor) -> Tensor:
        """x (batch, seq) tokens -> logits at every position (batch, seq, n_out)."""
        return self.sequence_logits(x)
