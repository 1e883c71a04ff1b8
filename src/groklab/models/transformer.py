"""Decoder-only transformers for `a op b =` sequences: the Power et al. model and the Nanda et al. model.

* ``power``: post-LayerNorm blocks (x = LN(x + attn(x)); x = LN(x + mlp(x))), bias-free linears, learned
  token and position embeddings, PyTorch's default initialization (as in Power et al. and its common
  re-implementation).
* ``nanda``: one block, no LayerNorm (x = x + attn(x); x = x + mlp(x)), MLP with biases, N(0, 1/√d) init.

The fast path computes the last block for the answer position only ("last position"): keys and values
still come from every position, so the result is exact; ``forward(x, full=True)`` is the plain
full-sequence reference that the tests compare against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.config import ModelConfig
from groklab.models.activations import ACTIVATIONS

Tensor = torch.Tensor


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layernorm: bool, mlp_bias: bool) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)
        self.fc_in = nn.Linear(d, cfg.d_mlp, bias=mlp_bias)
        self.fc_out = nn.Linear(cfg.d_mlp, d, bias=mlp_bias)
        self.act = ACTIVATIONS[cfg.activation]
        self.drop = nn.Dropout(cfg.dropout)
        self.ln_attn = nn.LayerNorm(d) if layernorm else nn.Identity()
        self.ln_mlp = nn.LayerNorm(d) if layernorm else nn.Identity()

    def forward(self, x: Tensor, last_only: bool) -> Tensor:
        # x: (batch, seq, d_model) -> (batch, seq, d_model), or (batch, 1, d_model) when last_only.
        b, s, d = x.shape
        h, dh = self.n_heads, d // self.n_heads
        if last_only:
            x, attn = x[:, -1:], self.last_position_attention(x)
        else:
            q, k, v = self.qkv(x).view(b, s, 3, h, dh).permute(2, 0, 3, 1, 4)  # each (batch, heads, seq, dh)
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)
            scores = (q @ k.transpose(-1, -2) / math.sqrt(dh)).masked_fill(causal, float("-inf"))
            attn = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, s, d)
        x = self.ln_attn(x + self.drop(self.proj(attn)))
        return self.ln_mlp(x + self.drop(self.fc_out(self.act(self.fc_in(x)))))

    def last_position_attention(self, x: Tensor) -> Tensor:
        """x: (batch, seq, d_model) -> the answer position's attention output (batch, 1, d_model), before proj.

        Keys and values come from every position, the query from the answer position alone (a third of qkv's
        weight rows on one position in seq); that position attends to every position, so no mask. With a single
        query per head the products are elementwise multiply-and-sum in the (batch, seq, heads, dh) layout: no
        head transposes, no copies, and no batched matmuls of 1×dh by dh×seq, which cost more than their FLOPs.
        """
        b, s, d = x.shape
        h, dh = self.n_heads, d // self.n_heads
        w = self.qkv.weight  # rows: query, key, value
        q = F.linear(x[:, -1:], w[:d])  # (batch, 1, d_model)
        k, v = F.linear(x, w[d : 2 * d]), F.linear(x, w[2 * d :])  # each (batch, seq, d_model)
        scores = (q * k).view(b, s, h, dh).sum(-1) / math.sqrt(dh)  # (batch, seq, heads)
        weights = F.softmax(scores, dim=1)  # over the positions attended to
        return (weights.unsqueeze(-1) * v.view(b, s, h, dh)).sum(1).view(b, 1, d)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, n_classes: int, seq_len: int) -> None:
        super().__init__()
        nanda = cfg.name == "nanda"
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(seq_len, cfg.d_model)
        n_layers = 1 if nanda else cfg.n_layers
        self.blocks = nn.ModuleList(Block(cfg, layernorm=not nanda, mlp_bias=nanda) for _ in range(n_layers))
        self.unembed = nn.Linear(cfg.d_model, n_classes, bias=False)
        if nanda:
            for name, param in self.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(param)
                else:
                    nn.init.normal_(param, std=1 / math.sqrt(cfg.d_model))

    def forward(self, x: Tensor, full: bool = False) -> Tensor:
        """x: (batch, seq) tokens -> logits (batch, n_classes) at the last position, or (batch, seq, n_classes) if full."""
        h = self.embed(x) + self.pos.weight[: x.shape[1]]  # (batch, seq, d_model)
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=not full and i == len(self.blocks) - 1)
        logits = self.unembed(h)
        return logits if full else logits[:, -1]
