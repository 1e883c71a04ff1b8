"""Fast paths: the same answer logits as the reference models, from the same parameters, with less work.

The classes here subclass the reference models without adding parameters and override only `forward`, so a
checkpoint of either loads into the other, and every reference method (sequence logits, neurons, embedding) stays
exact on a fast model. Training uses them; tests/test_fastpath.py compares them with an independent reference.

Transformer:

* **last position**: only the answer position needs logits, so the last block computes its output there alone (keys
  and values still come from every position);
* **token tables**: the first block's input at a position is a token's embedding plus that position's, so its
  query/key/value projections are computed once per (token, position) and gathered per sample;
* **shared prefix**: a causal model's state at the positions before the last operand (`a op` in `a op b =`) depends
  on those tokens alone, so every block below the last runs them once per distinct prefix in the batch, and the
  samples attend to the gathered keys and values (a key/value cache shared across samples).

MLP on tokens: the first layer's input is the operands' embeddings side by side, so its pre-activation is a sum over
operands of (that operand's slice of the weight) · (its token's embedding): computed once per (operand, token) and
gathered per sample when the batch is larger than the vocabulary.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from groklab.config import ModelConfig
from groklab.models.linear import linear
from groklab.models.mlp import MLP
from groklab.models.transformer import Block, Transformer

Tensor = torch.Tensor


class FastTransformer(Transformer):
    def __init__(self, cfg: ModelConfig, vocab_size: int, n_out: int, seq_len: int, shared_prefix: int = 0) -> None:
        super().__init__(cfg, vocab_size, n_out, seq_len)
        self.shared_prefix = shared_prefix
        """Leading positions that blocks below the last run once per distinct prefix in a batch (0: none; the result is
        the same)."""

    def forward(self, x: Tensor, prefixes: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (batch, seq) tokens -> logits at the last position (batch, n_out), as the reference's forward.

        prefixes: `self.prefixes(x)` computed by the caller (an ensemble computes it once, outside vmap, for every
        member's batch); default: computed here.
        """
        return self.unembed(self.ln_final(self.answer_state(x, prefixes)))[:, 0]

    def plain(self, x: Tensor) -> Tensor:
        """x (batch, seq) tokens -> logits at the last position (batch, n_out) with the last-position shortcut alone (no
        tables, no shared prefix): the work a fast step stands for (`groklab bench` counts it)."""
        h = self.embed(x) + self.pos.weight[: x.shape[1]]  # (batch, seq, d_model)
        for i, block in enumerate(self.blocks):
            is_last = i == len(self.blocks) - 1
            h = run_block(block, h, project(block, h, last_only=is_last), last_only=is_last)
        return self.unembed(self.ln_final(h))[:, 0]

    def shares_prefix(self) -> int:
        """How many leading positions the fast path shares (0: none): never with one block (the token tables already
        give every key and value), nor while training with dropout (each sample draws its own masks, which rows
        shared by many samples would not)."""
        dropout = self.training and self.blocks[0].drop.p > 0
        return self.shared_prefix if len(self.blocks) > 1 and not dropout else 0

    def prefixes(self, x: Tensor, rows: int = 0) -> tuple[Tensor, Tensor] | None:
        """x: (..., seq) tokens -> the distinct shared prefixes (u, c) and each sample's index among them (...), or
        None when no prefix is shared. Outside any vmap: the number of distinct prefixes is data-dependent.

        rows: at least the number of distinct prefixes; they are padded to that many (copies of the first, which no
        sample reads), so that a compiled forward sees one shape in every batch."""
        c = self.shares_prefix()
        if not c:
            return None
        vocab = self.embed.num_embeddings
        place = vocab ** torch.arange(c, device=x.device)
        # distinct prefixes by one integer code each (a 1-d unique sorts; unique over rows compares rows one by one)
        distinct, inverse = torch.unique((x[..., :c] * place).sum(-1), return_inverse=True)  # (u,), (...)
        if rows > len(distinct):
            distinct = torch.cat([distinct, distinct[:1].expand(rows - len(distinct))])
        return distinct[:, None] // place % vocab, inverse

    def answer_state(self, x: Tensor, prefixes: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x: (batch, seq) tokens -> the last block's output at the answer position (batch, 1, d_model)."""
        (batch, seq), n_blocks = x.shape, len(self.blocks)
        c = self.shares_prefix()
        start = c if n_blocks > 1 else seq - 1  # the positions each sample computes itself
        table = (self.embed.weight[:, None] + self.pos.weight[None, :seq]).flatten(0, 1)  # (vocab·seq, d): every token everywhere
        tables = (table, *project(self.blocks[0], table))  # the first block's input and projections, once per (token, position)
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
                q, k, v = project(block, h, last_only=is_last)
                if c:  # the prefix's keys and values at this block, gathered for every sample
                    p_qkv = project(block, p)
                    k_p, v_p = (gather(inverse, t.flatten(1)).view(batch, c, -1) for t in p_qkv[1:])  # (batch, c, d)
                    k, v = torch.cat([k_p, k], 1), torch.cat([v_p, v], 1)
            if c and not is_last:
                p = run_block(block, p, p_qkv)
            h = run_block(block, h, (q, k, v), last_only=is_last)
        return h


def project(block: Block, x: Tensor, last_only: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """x: (rows, s, d_model) -> queries (rows, s, d_model), or (rows, 1, d_model) when last_only; keys, values (rows, s, d_model).

    One matmul for the projections computed at the same positions (all three, or keys and values): fewer, wider
    products run faster than three narrow ones."""
    w, d = block.qkv.weight, block.qkv.in_features  # (3·d, d): queries', keys', values' rows
    x = block.attention_input(x)
    if not last_only:
        q, k, v = linear(x, w).chunk(3, dim=-1)
        return q, k, v
    k, v = linear(x, w[d:]).chunk(2, dim=-1)
    return linear(last(x), w[:d]), k, v


def run_block(block: Block, x: Tensor, qkv: tuple[Tensor, Tensor, Tensor], last_only: bool = False) -> Tensor:
    """`block` at the last s positions: x (rows, s, d_model) the residual stream there -> (rows, s, d_model), or
    (rows, 1, d_model) for the last position alone when last_only.

    qkv: the queries (rows, s or 1, d_model) of the positions computed here and the keys and values (rows, n,
    d_model) of every position up to the last (n ≥ s: the earlier ones computed elsewhere).
    """
    q, k, v = qkv
    if last_only:
        x, q = last(x), last(q)
    return block.add_mlp(block.add_attention(x, attend(q, k, v, block.n_heads)))


def attend(q: Tensor, k: Tensor, v: Tensor, n_heads: int) -> Tensor:
    """Causal attention of the last s of n positions: q (rows, s, d_model), k and v (rows, n, d_model) -> (rows, s, d_model).

    Sequences here are a few tokens long, so scores and mixing are elementwise multiply-and-sum over a
    (rows, s, n, heads, dh) broadcast: no head transposes or copies, and no batched s×dh by dh×n matmuls, which
    cost more than their FLOPs at these sizes (see docs/performance-history.md).
    """
    (rows, s, d), n, h = q.shape, k.shape[1], n_heads
    dh = d // h
    scores = (q.reshape(rows, s, 1, h, dh) * k.reshape(rows, 1, n, h, dh)).sum(-1) / math.sqrt(dh)  # (rows, s, n, heads)
    if s > 1:  # query i sits at position n - s + i and sees the positions up to it
        causal = torch.ones(s, n, dtype=torch.bool, device=q.device).triu(n - s + 1)
        scores = scores.masked_fill(causal[:, :, None], float("-inf"))
    weights = F.softmax(scores, dim=2)
    return (weights.unsqueeze(-1) * v.reshape(rows, 1, n, h, dh)).sum(2).reshape(rows, s, d)


def last(t: Tensor) -> Tensor:
    """(rows, s, ·) -> (rows, 1, ·): the last position (no slice, whose backward copies, when there is one position).

    Contiguous: under vmap (ensembles), a linear layer on the strided slice expands its weight for every sample, which
    is far slower."""
    return t if t.shape[1] == 1 else t[:, -1:].contiguous()


def gather(idx: Tensor, table: Tensor) -> Tensor:
    """idx (...) integer, table (n, d) -> (..., d): table[idx], the token tables' lookup.

    Eagerly `F.embedding`, whose dense index-add backward is the faster one there. Traced by torch.compile,
    `torch.gather` along the rows: Inductor fuses its forward into the kernels that read it, and on more than one
    thread runs its backward as ATen's scatter-add kernel, where F.embedding's it would lower to a scatter with atomic
    adds (see docs/performance.md).
    """
    if not torch.compiler.is_compiling():
        return F.embedding(idx, table)
    d = table.shape[-1]
    rows = idx.reshape(-1).contiguous()  # ATen's scatter-add is fast only for a contiguous (expanded) index
    return torch.gather(table, 0, rows[:, None].expand(-1, d)).view(*idx.shape, d)


class FastMLP(MLP):
    def forward(self, x: Tensor) -> Tensor:
        """x: (batch, seq) tokens or (batch, features) floats -> logits (batch, n_out), as the reference's forward."""
        if self.embed is None or self.embed.num_embeddings >= x.shape[0]:
            return self.plain(x)  # no fewer multiplications to gain
        first = self.hidden[0]
        # operand j's slice of the first weight, (width, d_model) each, applied to every token's embedding: (vocab, width)
        tables = [linear(self.embed.weight, w) for w in first.weight.view(first.out_features, len(self.positions), -1).unbind(1)]
        h = sum((gather(x[:, pos], table) for pos, table in zip(self.positions, tables, strict=True)), first.bias)  # (batch, width)
        return self.out(self.drop(self.activations(h)))

    def plain(self, x: Tensor) -> Tensor:
        """The reference forward, without tables: the work a fast step stands for (`groklab bench` counts it)."""
        return super().forward(x)
