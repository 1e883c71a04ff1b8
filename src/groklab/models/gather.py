"""Row gathers for the token tables, with the same backward eagerly and under torch.compile.

`gather(idx, table)` is `F.embedding`: rows of a (n, d) table by an integer index of any shape, whose backward is
a dense index-add (advanced indexing's is a slow index_put). Under torch.compile Inductor lowers that backward to
a scatter with atomic adds, which on the CPU was the compiled Power step's largest kernel; there the gather is an
autograd function whose forward is the plain lookup (which Inductor fuses into the kernels that read it) and whose
backward is a custom op running the eager kernel (see docs/performance-history.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def gather(idx: Tensor, table: Tensor) -> Tensor:
    """idx (...) integer, table (n, d) -> (..., d): table[idx]."""
    return CompiledGather.apply(idx, table) if torch.compiler.is_compiling() else F.embedding(idx, table)


class CompiledGather(torch.autograd.Function):
    """F.embedding whose backward is `gather_rows_backward`: the form torch.compile sees."""

    @staticmethod
    def forward(idx: Tensor, table: Tensor) -> Tensor:
        return F.embedding(idx, table)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, Tensor], output: Tensor) -> None:
        idx, table = inputs
        ctx.save_for_backward(idx)
        ctx.n_rows = table.shape[0]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
        (idx,) = ctx.saved_tensors
        return None, gather_rows_backward(grad, idx, ctx.n_rows)


@torch.library.custom_op("groklab::gather_rows_backward", mutates_args=())
def gather_rows_backward(grad: Tensor, idx: Tensor, n_rows: int) -> Tensor:
    """grad (..., d) -> (n_rows, d): each row's summed gradient (F.embedding's own backward kernel)."""
    return torch.ops.aten.embedding_dense_backward(grad.contiguous(), idx, n_rows, -1, False)


@gather_rows_backward.register_fake
def _(grad: Tensor, idx: Tensor, n_rows: int) -> Tensor:
    return grad.new_empty((n_rows, grad.shape[-1]))
