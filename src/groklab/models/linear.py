"""Linear layers whose float32 matmuls on the CPU run on oneDNN (bundled with torch) rather than on the BLAS that
ATen's `mm` calls, where that BLAS keeps to narrower vector instructions than the CPU has (`onednn_preferred`: MKL on
AMD's AVX-512 CPUs): there oneDNN's kernels are far faster at these models' shapes; on Intel's, MKL's own AVX-512
kernels were measured faster (docs/performance.md). Compiled steps get the same kernels from compiled.py, which
rewrites their traced matmuls on the same condition.

`Linear` is `nn.Linear` with the same parameters and state dict; `linear` is `F.linear`. Both take the ordinary path
wherever oneDNN's would not serve: another device or dtype, autocast, a torch.compile trace, vmap and the other
torch.func transforms, and any dispatch mode (a FLOP counter, fake tensors) that must see ATen's own ops.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

Tensor = torch.Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x (..., in) · weight (out, in)ᵀ + bias (out,): F.linear, on oneDNN where it serves (see the module)."""
    if on_onednn(x, weight):
        return OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


def on_onednn(x: Tensor, weight: Tensor) -> bool:
    return (
        x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and x.dim() >= 2
        and dense(x.shape, x.stride()) and dense(weight.shape, weight.stride())
        and torch.backends.mkldnn.enabled and onednn_preferred()
        and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
        and not torch._C._are_functorch_transforms_active() and _get_current_dispatch_mode() is None
    )  # fmt: skip


@functools.cache
def onednn_preferred() -> bool:
    """Whether this machine's float32 matmuls run faster on oneDNN than on ATen's BLAS (`prefers_onednn`)."""
    return torch.backends.mkldnn.is_available() and prefers_onednn(cpu_info(), torch.backends.mkl.is_available())


def prefers_onednn(cpuinfo: str, mkl: bool) -> bool:
    """oneDNN for a CPU (its /proc/cpuinfo) that has AVX-512 where ATen's BLAS is MKL and the CPU is not Intel's: MKL
    then keeps to its AVX2 kernels, and oneDNN, which picks its kernels by the instruction sets the CPU reports, ran the
    Power step's matmuls about twice as fast. On Intel's CPUs MKL's AVX-512 kernels were faster than oneDNN's, and
    without AVX-512 (or with another BLAS) nothing was measured: ATen's BLAS stays."""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in cpuinfo.splitlines())}
    vendor, flags = fields.get("vendor_id", ""), fields.get("flags", "").split()
    return mkl and "avx512f" in flags and vendor not in ("", "GenuineIntel")


def cpu_info() -> str:
    """The first CPU's entry in /proc/cpuinfo ("" where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return ""


def dense(shape: Sequence[Any], stride: Sequence[Any]) -> bool:
    """Whether a tensor of this shape and stride is contiguous, or a matrix's transpose of a contiguous one: the
    layouts oneDNN's kernels read at speed (it reads a slice of wider rows far slower than a contiguous copy:
    docs/performance.md)."""
    contiguous = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        contiguous[i] = contiguous[i + 1] * shape[i + 1]
    size_one = [n == 1 for n in shape]  # a dimension of size 1 may have any stride
    if all(one or s == c for one, s, c in zip(size_one, stride, contiguous, strict=True)):
        return True
    return len(shape) == 2 and tuple(stride) == (1, shape[0])


class OneDNNLinear(torch.autograd.Function):
    """oneDNN's linear forward; a backward of linears again (dx = g·W, dW = gᵀ·x), so it is differentiable in turn
    (Hessian-vector products, analysis/sharpness.py)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        rows, x_rows = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        dx = linear(grad, weight.t()) if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[1]:  # gᵀ·x; oneDNN copies its input's transpose, and autograd a transposed gradient:
            (n, out), d = rows.shape, x_rows.shape[1]  # so (xᵀ·g)ᵀ where that copies less
            dw = linear(x_rows.t(), rows.t()).t() if n * d + out * d < n * out else linear(rows.t(), x_rows.t())
        db = rows.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


class Linear(nn.Linear):
    """nn.Linear (same parameters, initialisation and state dict) whose forward is `linear`."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
