"""models/linear.py: oneDNN's linear gives F.linear's values and gradients (second order too), in the layouts it
takes; other layouts, dtypes and transforms keep to F.linear."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from groklab.models import linear as linear_module
from groklab.models.linear import Linear, dense, linear, on_onednn, prefers_onednn

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")


@pytest.fixture(autouse=True)
def on_any_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """oneDNN's path is tested on every CPU, also where ATen's BLAS is the faster one and training keeps to it."""
    monkeypatch.setattr(linear_module, "onednn_preferred", lambda: True)


def cpuinfo(vendor: str, *flags: str) -> str:
    return f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu sse2 avx2 fma {' '.join(flags)}\nbogomips\t: 4000"


def test_onednn_is_preferred_where_mkl_keeps_below_the_cpus_vector_width() -> None:
    assert prefers_onednn(cpuinfo("AuthenticAMD", "avx512f", "avx512bw"), mkl=True)  # MKL: AVX2 kernels on AMD
    assert not prefers_onednn(cpuinfo("GenuineIntel", "avx512f", "avx512bw"), mkl=True)  # MKL's own AVX-512
    assert not prefers_onednn(cpuinfo("AuthenticAMD"), mkl=True)  # AVX2 on both sides: not measured
    assert not prefers_onednn(cpuinfo("AuthenticAMD", "avx512f"), mkl=False)  # another BLAS: not measured
    assert not prefers_onednn("", mkl=True)


def test_where_onednn_is_not_preferred_linear_is_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_module, "onednn_preferred", lambda: False)
    x, weight = torch.randn(5, 6), torch.randn(4, 6, requires_grad=True)
    assert not on_onednn(x, weight) and linear(x, weight).grad_fn.name() != "OneDNNLinearBackward"


def test_dense_is_contiguous_or_a_transposed_matrix() -> None:
    x = torch.randn(4, 3, 6)
    row = torch.randn(6).as_strided((1, 6), (100, 1))
    assert dense(x.shape, x.stride()) and dense(row.shape, row.stride())  # a size-1 dimension: any stride
    m = torch.randn(6, 5)
    assert dense(m.t().shape, m.t().stride())
    assert not dense(x.transpose(1, 2).shape, x.transpose(1, 2).stride())
    assert not dense(m[:, :3].shape, m[:, :3].stride())  # a slice of wider rows: oneDNN's slow case


@pytest.mark.parametrize("out_features", [16, 4])  # the weight gradient's two forms (gᵀ·x, and (xᵀ·g)ᵀ where g is wide)
@pytest.mark.parametrize("layout", ["2d", "3d", "transposed", "sliced", "bias-free"])
def test_values_and_gradients_are_f_linear_s(layout: str, out_features: int) -> None:
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(out_features, 6, generator=gen, requires_grad=True)
    bias = torch.randn(out_features, generator=gen, requires_grad=True)
    x = {
        "2d": torch.randn(20, 6, generator=gen), "3d": torch.randn(4, 5, 6, generator=gen),
        "transposed": torch.randn(6, 20, generator=gen).t(), "sliced": torch.randn(20, 12, generator=gen)[:, ::2],
        "bias-free": torch.randn(20, 6, generator=gen),
    }[layout].requires_grad_(True)  # fmt: skip
    b = None if layout == "bias-free" else bias
    assert on_onednn(x, weight) == (layout != "sliced")
    out, ref = linear(x, weight, b), F.linear(x, weight, b)
    assert (out.grad_fn.name() == "OneDNNLinearBackward") == (layout != "sliced")
    grad = torch.randn(ref.shape, generator=gen)
    wrt = (x, weight) if b is None else (x, weight, b)
    torch.testing.assert_close(out, ref)
    for a, r in zip(torch.autograd.grad(out, wrt, grad), torch.autograd.grad(ref, wrt, grad), strict=True):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("out_features", [16, 4])
def test_hessian_vector_products_go_through_its_backward(out_features: int) -> None:
    """Sharpness (analysis/sharpness.py) differentiates the gradient again: the backward is made of linears too."""
    gen = torch.Generator().manual_seed(1)
    x, weight = torch.randn(20, 6, generator=gen), torch.randn(out_features, 6, generator=gen, requires_grad=True)
    v = torch.randn(out_features, 6, generator=gen)

    def hvp(fn: object) -> torch.Tensor:
        (g,) = torch.autograd.grad(fn(x, weight).tanh().pow(2).sum(), weight, create_graph=True)  # type: ignore[operator]
        return torch.autograd.grad((g * v).sum(), weight)[0]

    torch.testing.assert_close(hvp(linear), hvp(F.linear))


def test_other_dtypes_autocast_vmap_and_dispatch_modes_keep_to_f_linear() -> None:
    layer = Linear(6, 4)
    x = torch.randn(3, 6)
    assert on_onednn(x, layer.weight)
    assert not on_onednn(x.double(), layer.weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16  # autocast's F.linear, not a float32 oneDNN product
    seen: list[bool] = []
    torch.func.vmap(lambda row: seen.append(on_onednn(row[None], layer.weight)) or row)(x)
    assert seen == [False]
    with FlopCounterMode(display=False) as counter:  # the bench counts FLOPs on ATen's ops
        layer(x)
    assert counter.get_total_flops() == 2 * 3 * 6 * 4
    assert list(layer.state_dict()) == ["weight", "bias"]  # nn.Linear's parameters: checkpoints load either way
