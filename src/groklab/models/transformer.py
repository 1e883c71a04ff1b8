"""Decoder-only transformers for `a op b =` sequences: the Power et al. model and the Nanda et al. model.

* ``power``: post-LayerNorm blocks (x = LN(x + attn(x)); x = LN(x + mlp(x))), bias-free linears, learned
  token and position embeddings, PyTorch's default initialization (as in Power et al. and its common
  re-implementation).
* ``nanda``: one block, no LayerNorm (x = x + attn(x); x = x + mlp(x)), MLP with biases, N(0, 1/√d) init.

``forward(x, full=True)`` is the plain full-sequence reference. The default fast path computes the same logits
with less work, and the tests compare the two:

* **last position**: the last block computes its output for the answer position only (keys and values still
  come from every position);
* **token tables**: the first block's input at a position is a token's embedding plus that position's, so its
  query/key/value projections are computed once per (token, position) and gathered per sample;
* **shared prefix**: a causal model's state at the positions before the last operand (`a op` in `a op b =`)
  depends on those tokens alone, so every block below the last runs them once per distinct prefix in the batch,
  and the samples attend to the gathered keys and values (a key/value cache shared across samples).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from groklab.config import ModelConfig
from groklab.models.activations import ACTIVATIONS
from groklab.models.gather import gather

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

    def project(self, x: Tensor, last_only: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """x: (rows, s, d_model) -> queries (rows, s, d_model), or (rows, 1, d_model) when last_only; keys, values (rows, s, d_model)."""
        w_q, w_k, w_v = self.qkv.weight.chunk(3)
        return F.linear(last(x) if last_only else x, w_q), F.linear(x, w_k), F.linear(x, w_v)

    def forward(self, x: Tensor, qkv: tuple[Tensor, Tensor, Tensor] | None = None, last_only: bool = False) -> Tensor:
        """x: (rows, s, d_model) the residual stream at the last s positions -> (rows, s, d_model), or (rows, 1, d_model)
        for the last position alone when last_only.

        qkv: the queries (rows, s or 1, d_model) of the positions computed here and the keys and values (rows, n,
        d_model) of every position up to the last (n ≥ s: the earlier ones computed elsewhere); default project(x).
        """
        q, k, v = self.project(x, last_only) if qkv is None else qkv
        if last_only:
            x, q = last(x), last(q)
        x = self.ln_attn(x + self.drop(self.proj(self.attend(q, k, v))))
        return self.ln_mlp(x + self.drop(self.fc_out(self.act(self.fc_in(x)))))

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Causal attention of the last s of n positions: q (rows, s, d_model), k and v (rows, n, d_model) -> (rows, s, d_model).

        Sequences here are a few tokens long, so scores and mixing are elementwise multiply-and-sum over a
        (rows, s, n, heads, dh) broadcast: no head transposes or copies, and no batched s×dh by dh×n matmuls,
        which cost more than their FLOPs at these sizes (measured: 29.4 vs 31.6 ms per Power step).
        """
        (rows, s, d), n, h = q.shape, k.shape[1], self.n_heads
        dh = d // h
        scores = (q.reshape(rows, s, 1, h, dh) * k.reshape(rows, 1, n, h, dh)).sum(-1) / math.sqrt(dh)  # (rows, s, n, heads)
        if s > 1:  # query i sits at position n - s + i and sees the positions up to it
            causal = torch.ones(s, n, dtype=torch.bool, device=q.device).triu(n - s + 1)
            scores = scores.masked_fill(causal[:, :, None], float("-inf"))
        weights = F.softmax(scores, dim=2)
        return (weights.unsqueeze(-1) * v.reshape(rows, 1, n, h, dh)).sum(2).reshape(rows, s, d)


def last(t: Tensor) -> Tensor:
    """(rows, s, ·) -> (rows, 1, ·): the last position (no slice, whose backward copies, when there is one position).

    Contiguous: under vmap (ensembles), a linear layer on the strided slice expands its weight for every sample
    (measured 550 vs 4 ms for 8 × 512 rows)."""
    return t if t.shape[1] == 1 else t[:, -1:].contiguous()


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int, n_classes: int, seq_len: int, shared_prefix: int = 0) -> None:
        super().__init__()
        nanda = cfg.name == "nanda"
        self.embed = nn.Embedding(vocab_size, cfg.d_model)
        self.pos = nn.Embedding(seq_len, cfg.d_model)
        n_layers = 1 if nanda else cfg.n_layers
        self.blocks = nn.ModuleList(Block(cfg, layernorm=not nanda, mlp_bias=nanda) for _ in range(n_layers))
        self.unembed = nn.Linear(cfg.d_model, n_classes, bias=False)
        self.shared_prefix = shared_prefix
        """Leading positions that blocks below the last run once per distinct prefix in a batch (0: none; the result is
        the same)."""
        if nanda:
            for name, param in self.named_parameters():
                if name.endswith("bias"):
                    nn.init.zeros_(param)
                else:
                    nn.init.normal_(param, std=1 / math.sqrt(cfg.d_model))

    def forward(self, x: Tensor, full: bool = False, prefixes: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: (batch, seq) tokens -> logits (batch, n_classes) at the last position, or (batch, seq, n_classes) if full.

        prefixes: `self.prefixes(x)` computed by the caller (an ensemble computes it once, outside vmap, for every
        member's batch); default: computed here.
        """
        if not full:
            return self.unembed(self.answer_state(x, prefixes))[:, 0]
        return self.unembed(self.plain(x))

    def plain(self, x: Tensor, last_only: bool = False) -> Tensor:
        """The plain computation, without tables or shared prefix: x (batch, seq) -> every block at every position
        from the embeddings (batch, seq, d_model), or with the last block at the answer position alone
        (batch, 1, d_model) when last_only (the work a fast-path step stands for; `groklab bench` counts it)."""
        h = self.embed(x) + self.pos.weight[: x.shape[1]]  # (batch, seq, d_model)
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=last_only and i == len(self.blocks) - 1)
        return h

    def shares_prefix(self) -> int:
        """How many leading positions the fast path shares (0: none): never with one block (the token tables already
        give every key and value), nor while training with dropout (each sample draws its own masks, which rows
        shared by many samples would not)."""
        dropout = self.training and self.blocks[0].drop.p > 0
        return self.shared_prefix if len(self.blocks) > 1 and not dropout else 0

    def prefixes(self, x: Tensor) -> tuple[Tensor, Tensor] | None:
        """x: (..., seq) tokens -> the distinct shared prefixes (u, c) and each sample's index among them (...), or
        None when no prefix is shared. Outside any vmap: the number of distinct prefixes is data-dependent."""
        c = self.shares_prefix()
        if not c:
            return None
        vocab = self.embed.num_embeddings
        place = vocab ** torch.arange(c, device=x.device)
        # distinct prefixes by one integer code each (a 1-d unique sorts; unique over rows compares rows one by one)
        distinct, inverse = torch.unique((x[..., :c] * place).sum(-1), return_inverse=True)  # (u,), (...)
        return distinct[:, None] // place % vocab, inverse

    def answer_state(self, x: Tensor, prefixes: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: (batch, seq) tokens -> the last block's output at the answer position (batch, 1, d_model)."""
        (batch, seq), n_blocks = x.shape, len(self.blocks)
        c = self.shares_prefix()
        start = c if n_blocks > 1 else seq - 1  # the positions each sample computes itself
        table = (self.embed.weight[:, None] + self.pos.weight[None, :seq]).flatten(0, 1)  # (vocab·seq, d): every token everywhere
        tables = (table, *self.blocks[0].project(table))  # the first block's input and projections, once per (token, position)
        rows = x * seq + torch.arange(seq, device=x.device)  # (batch, seq): each sample's rows of the tables
        h, q = gather(rows[:, start:], table), gather(rows[:, start:], tables[1])
        k, v = gather(rows, tables[2]), gather(rows, tables[3])  # (batch, seq, d)
        if c:
            tokens, inverse = self.prefixes(x) if prefixes is None else prefixes  # (u, c), (batch,)
            prefix_rows = tokens * seq + torch.arange(c, device=x.device)  # (u, c)
            p, p_qkv = gather(prefix_rows, table), tuple(gather(prefix_rows, t) for t in tables[1:])  # (u, c, d) each
        for i, block in enumerate(self.blocks):
            is_last = i == n_blocks - 1
            if i > 0:
                q, k, v = block.project(h, last_only=is_last)
                if c:  # the prefix's keys and values at this block, gathered for every sample
                    p_qkv = block.project(p)
                    k_p, v_p = (gather(inverse, t.flatten(1)).view(batch, c, -1) for t in p_qkv[1:])  # (batch, c, d)
                    k, v = torch.cat([k_p, k], 1), torch.cat([v_p, v], 1)
            if c and not is_last:
                p = block(p, p_qkv)
            h = block(h, (q, k, v), last_only=is_last)
        return h
