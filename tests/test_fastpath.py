"""The fast path (last block at the answer position only, token tables, batches by index) against a plain reference.

The references below are written from the architectures' description, independently of models/: for the
transformers causal attention over every position of every layer (LayerNorm after each residual addition, before
each sublayer and the unembedding, or none), logits at every position, and the answer read at the last; for the MLP
the operands' embeddings concatenated and multiplied layer by layer.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny

from groklab.compiled import compiled_update
from groklab.config import Config, apply_overrides, to_dict
from groklab.data import build_task
from groklab.losses import make_loss
from groklab.models import build_model
from groklab.models.fast import gather
from groklab.optim import adam_rule, adam_scalars, adam_state, build_optimizer
from groklab.steppers import BatchSampler, Single, compiled_arguments, compiled_forward, optimizer_step

Tensor = torch.Tensor
# The fast path must be exact on every device this machine has (CUDA kernels for attention and AdamW differ from CPU's).
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


def reference_logits(model: torch.nn.Module, x: Tensor, placement: str) -> Tensor:
    """Full-sequence forward with the model's weights and LayerNorm `placement` (post, pre, none): x (batch, seq) ->
    logits (batch, seq, n_classes)."""
    b, s = x.shape
    h = model.embed.weight[x] + model.pos.weight[:s]  # (batch, seq, d_model)
    d = h.shape[-1]
    future = torch.ones(s, s, dtype=torch.bool, device=x.device).triu(1)  # position i sees positions <= i
    pre = placement == "pre"
    for block in model.blocks:
        n_heads = block.n_heads
        dh = d // n_heads
        a = norm(block.ln_attn, h) if pre else h
        q, k, v = (a @ block.qkv.weight.T).split(d, dim=-1)  # each (batch, seq, d_model)
        q, k, v = (t.reshape(b, s, n_heads, dh).transpose(1, 2) for t in (q, k, v))  # (batch, heads, seq, dh)
        weights = torch.softmax((q @ k.transpose(-1, -2) / math.sqrt(dh)).masked_fill(future, float("-inf")), dim=-1)
        attn = (weights @ v).transpose(1, 2).reshape(b, s, d) @ block.proj.weight.T
        h = h + attn if pre else norm(block.ln_attn, h + attn)
        m = norm(block.ln_mlp, h) if pre else h
        mlp = F.linear(torch.relu(F.linear(m, block.fc_in.weight, block.fc_in.bias)), block.fc_out.weight, block.fc_out.bias)
        h = h + mlp if pre else norm(block.ln_mlp, h + mlp)
    if placement == "pre":
        h = norm(model.ln_final, h)
    return h @ model.unembed.weight.T


def reference_answer_logits(model: torch.nn.Module, x: Tensor, operand_positions: tuple[int, ...], placement: str) -> Tensor:
    """Logits at the answer, (batch, n_classes): the transformer's full-sequence forward read at the last position,
    or the MLP on its operands' embeddings side by side."""
    if hasattr(model, "blocks"):
        return reference_logits(model, x, placement)[:, -1]
    h = torch.cat([model.embed.weight[x[:, pos]] for pos in operand_positions], dim=1)  # (batch, operands · d_model)
    for layer in model.hidden:
        h = torch.relu(h @ layer.weight.T + layer.bias)
    return h @ model.out.weight.T + model.out.bias


def norm(layer: torch.nn.Module, h: Tensor) -> Tensor:
    """LayerNorm with the layer's own affine weights, or nothing for a LayerNorm-free (Nanda) model."""
    if isinstance(layer, torch.nn.LayerNorm):
        return F.layer_norm(h, layer.normalized_shape, layer.weight, layer.bias, layer.eps)
    return h


MODELS: dict[str, dict[str, object]] = {
    "power": {"model.name": "transformer", "model.norm": "post"},
    "nanda": {"model.name": "transformer", "model.norm": "none", "model.mlp_bias": True, "model.init": "normal", "model.n_layers": 1},
    "pre": {"model.name": "transformer", "model.norm": "pre"},
    "mlp": {"model.name": "mlp"},
}
"""The models under test: Power et al.'s and Nanda et al.'s transformers, a pre-LN one, the MLP."""


def small(model: str) -> Config:
    overrides = {
        "task.p": 23,
        **MODELS[model],
        "model.d_model": 32,
        "model.n_heads": 4,
        "model.d_mlp": 64,
        "optim.batch_size": 64,
        "optim.lr": 5e-3,
    }
    return tiny(Config(), overrides)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_fast_logits_match_the_full_sequence_reference(model_name: str, device: str) -> None:
    config = small(model_name)
    data = build_task(config.task, config.split_seed).to(torch.device(device))
    model = build_model(config.model, data, seed=1).to(device)
    with torch.no_grad():
        fast = model(data.x)  # (N, n_classes): the fast path, as training uses it
        ref = reference_answer_logits(model, data.x, data.operand_positions, config.model.norm)
    assert fast.shape == ref.shape == (len(data.x), data.n_classes)
    assert (fast - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_first_100_training_steps_match_the_reference(model_name: str, device: str) -> None:
    """Along 100 steps of train.py's step on the fast path, the loss and every gradient on each step's parameters and
    batch match the plain reference's. (Two trajectories trained apart are not compared: from step ~80 on this
    setting amplifies float rounding, and the two drifted 4e-3 apart on one CPU and 5e-7 on another.)"""
    config = small(model_name)
    data = build_task(config.task, config.split_seed).to(torch.device(device))
    loss_fn = make_loss(config.loss, config.loss_dtype)
    model = build_model(config.model, data, config.seed).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, schedule = build_optimizer(config.optim, model)
    sampler = BatchSampler(data.train, config.optim.batch_size, config.seed)
    losses, loss_gaps, grad_gaps = [], [], []
    for _ in range(100):
        idx = sampler.next()
        fast = loss_fn(model(data.x[idx]), data.y[idx])
        ref = F.cross_entropy(reference_answer_logits(model, data.x[idx], data.operand_positions, config.model.norm), data.y[idx])
        fast_grads, ref_grads = torch.autograd.grad(fast, params), torch.autograd.grad(ref, params)
        losses.append(ref.item())
        loss_gaps.append(abs(fast.item() - ref.item()))
        grad_gaps.append(
            max(float((f - r).abs().max() / r.abs().max().clamp_min(1e-12)) for f, r in zip(fast_grads, ref_grads, strict=True))
        )
        assert optimizer_step(params, model, optimizer, schedule, loss_fn, data, idx)  # the very step training takes

    assert losses[0] > 2.0  # untrained: near log(23); the comparison is not between two constants
    assert losses[-1] < losses[0] - 0.3  # and it learns, so the later steps compare trained parameters
    assert max(loss_gaps) < 1e-5, f"largest loss gap {max(loss_gaps):.2e} at step {loss_gaps.index(max(loss_gaps))}"
    assert max(grad_gaps) < 1e-4, f"largest relative gradient gap {max(grad_gaps):.2e} at step {grad_gaps.index(max(grad_gaps))}"


def test_compile_failure_falls_back_to_eager_with_one_warning_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache of compiled steps would be a folder")
    monkeypatch.setenv("GROKLAB_CACHE_DIR", str(blocked))
    config = small("mlp")
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, 0)
    forward = compiled_forward(model, model, make_loss("cross_entropy", "float32"), data, [8])
    assert forward is model
    assert all(p.grad is None for p in model.parameters())
    stepper = Single(dataclasses.replace(config, compile=True), data, torch.device("cpu"))  # the update compiled in too
    assert stepper.updates(data.train[:8]) is None and stepper.forward is stepper.model
    assert stepper.step() == [True]
    assert blocked.read_text().startswith("a file")
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and err.count("--compile") == 2 and err.count("Not a directory") == 2


def test_gather_as_torch_compile_traces_it_is_f_embedding() -> None:
    """The gather torch.compile traces (torch.gather along rows) gives F.embedding's values and gradient, on a strided
    index as the MLP's operand columns are."""
    table = torch.randn(7, 5, requires_grad=True)
    x = torch.tensor([[0, 3, 6], [6, 0, 3], [3, 3, 1]])
    idx = x[:, ::2]  # (3, 2), not contiguous
    weights = torch.randn(3, 2, 5)
    traced = torch.compile(gather, backend="aot_eager", fullgraph=True)
    gathered = traced(idx, table)
    (gathered * weights).sum().backward()
    grad = table.grad.clone()
    table.grad = None
    (F.embedding(idx, table) * weights).sum().backward()
    assert torch.equal(gathered, F.embedding(idx, table))
    torch.testing.assert_close(grad, table.grad)
    assert grad[3].abs().sum() > 0 and grad[2].abs().sum() == 0  # row 3 gathered twice, row 2 never


@pytest.mark.slow
@pytest.mark.parametrize(("model_name", "optimizer"), [("power", "adamw"), ("mlp", "adamw"), ("power", "sgd")])
def test_compiled_training_matches_eager(model_name: str, optimizer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--compile changes speed, not results: over 20 steps of train()'s stepper the losses on a fixed batch agree
    with eager training's, while batches hold different numbers of distinct prefixes and each epoch ends in a smaller
    batch (a second compiled shape); with Adam(W) the compiled step applies the update itself, with SGD torch's
    optimizer steps after the compiled backward. The libraries are built once and a second model loads them."""
    monkeypatch.setenv("GROKLAB_CACHE_DIR", str(tmp_path))
    config = apply_overrides(small(model_name), {"optim.name": optimizer, "optim.last_batch": "keep", "optim.lr": 5e-3 if optimizer == "adamw" else 0.5})
    data = build_task(config.task, config.split_seed)
    loss_fn, probe = make_loss(config.loss, config.loss_dtype), data.train[:64]
    runs, prefix_counts, sizes, built = [], set(), set(), []
    for compile in (False, True, True):
        stepper = Single(dataclasses.replace(config, compile=compile), data, torch.device("cpu"))
        assert (stepper.updates(probe) is not None) == (compile and optimizer == "adamw")
        assert (stepper.forward is not stepper.model) == (compile and optimizer == "sgd")
        built.append(sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "compiled").glob("*/*.so")) if compile else [])
        drawn, draw = [], stepper.sampler.next
        stepper.sampler.next = lambda draw=draw, drawn=drawn: drawn.append(draw()) or drawn[-1]  # type: ignore[method-assign]
        losses = []
        for _ in range(20):
            with torch.no_grad():
                losses.append(float(loss_fn(stepper.model(data.x[probe]), data.y[probe])))
            assert stepper.step() == [True]
            sizes.add(len(drawn[-1]))
            prefixes = stepper.model.prefixes(data.x[drawn[-1]]) if model_name == "power" else None
            prefix_counts.add(0 if prefixes is None else len(prefixes[0]))
        runs.append(losses)
    assert runs[0][-1] < runs[0][0] - 0.05  # it learns: the later steps compare trained parameters
    assert max(abs(a - b) for a, b in zip(runs[0], runs[1], strict=True)) < 1e-4
    assert runs[2] == runs[1]  # the loaded libraries are the built ones
    assert built[1] == built[2] and [Path(p).name for p in built[1]] == ["backward.so", "forward.so"] * 2  # a pair per size, built once
    if model_name == "power":
        assert len(prefix_counts) > 1 and 0 not in prefix_counts  # the count the compiled shape must not depend on varied
    assert len(sizes) == 2  # full batches and each epoch's last, smaller one
    # a later run of this config finds the libraries and never imports the compiler (several seconds of start-up)
    script = (
        "import json, sys\n"
        "from groklab.config import from_dict\n"
        "from groklab.train import train\n"
        "train(from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)\n"
        "print(sorted(m for m in sys.modules if m.startswith(('torch._dynamo', 'torch._inductor'))))\n"
    )
    later = dataclasses.replace(config, compile=True, steps=3)
    argv = [sys.executable, "-c", script, json.dumps(to_dict(later)), str(tmp_path / "run")]
    out = subprocess.run(argv, env={**os.environ, "GROKLAB_CACHE_DIR": str(tmp_path)}, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]" and "warning" not in out.stderr, out.stderr


@pytest.mark.slow
def test_compiled_update_resumes_exactly_and_skips_what_is_not_finite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run whose compiled step applies the AdamW update itself keeps torch's optimizer state: resumed from a
    checkpoint at step 6 it continues bitwise as the run that never stopped (an eager run resumes it too); a step whose
    loss is not finite, or whose gradient is not though the loss is, changes no weight, moment or step count."""
    monkeypatch.setenv("GROKLAB_CACHE_DIR", str(tmp_path))
    config = apply_overrides(small("power"), {"compile": True, "optim.grad_clip": 0.5})
    data = build_task(config.task, config.split_seed)
    cpu = torch.device("cpu")
    whole, first = Single(config, data, cpu), Single(config, data, cpu)
    assert [whole.step() for _ in range(10)] == [[True]] * 10 and [first.step() for _ in range(6)] == [[True]] * 6
    buffer = io.BytesIO()
    torch.save(first.state(0), buffer)
    for resumed in (Single(config, data, cpu), Single(dataclasses.replace(config, compile=False), data, cpu)):
        buffer.seek(0)
        resumed.load(0, torch.load(buffer, weights_only=False))
        assert [resumed.step() for _ in range(4)] == [[True]] * 4
        for a, b in zip(resumed.params, whole.params, strict=True):
            if resumed.updates(data.train[:64]) is not None:
                assert torch.equal(a, b)
            else:
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert resumed.optimizer.state_dict()["state"][0]["step"] == 10

    def snapshot() -> list[Tensor]:
        return [t.detach().clone() for s in whole.optimizer.state.values() for t in s.values()] + [p.detach().clone() for p in whole.params]

    idx = data.train[:64]
    step = whole.updates(idx)
    assert step is not None
    before = snapshot()
    steps, exp_avgs, exp_avg_sqs = adam_state(whole.optimizer, whole.params)
    state = [*whole.params, *exp_avgs, *exp_avg_sqs, adam_scalars(whole.optimizer, 11, 0.5)]
    # a finite loss (0) whose gradient is not (0 · ∞): the library's own check skips the update
    norm = compiled_update(whole.model, compiled_arguments(whole.model, data, 64)(data.x[idx]), adam_rule(whole.optimizer))(
        compiled_arguments(whole.model, data, 64)(data.x[idx]), lambda out: (out - out.detach()).abs().sqrt().sum(), state
    )
    assert norm is not None and not torch.isfinite(norm)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(), strict=True))
    with torch.no_grad():
        whole.params[0][0, 0] = float("nan")  # the loss is not finite
    before, lr = snapshot(), whole.lr()
    assert whole.step() == [False]
    for a, b in zip(before, snapshot(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    assert whole.lr() == lr and int(steps[0]) == 10


PROBES = """
import subprocess, sys
from groklab.compiled import remember_isa_probes
remember_isa_probes()
started, run = [], subprocess.run
subprocess.run = lambda cmd, *args, **kwargs: (started.append(cmd), run(cmd, *args, **kwargs))[1]
from torch._inductor.cpu_vec_isa import pick_vec_isa
isa = pick_vec_isa()
print(sum(cmd[0] == sys.executable for cmd in started), isa)  # probes: Python processes (not compilers)
"""


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="Inductor probes vector ISAs on x86 only")
def test_vector_isa_probes_run_in_the_first_compiling_process_only(tmp_path: Path) -> None:
    """Two processes sharing one Inductor cache: the first starts Inductor's load probes, the second starts none and
    picks the same vector ISA."""
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path)}
    first, second = (subprocess.run([sys.executable, "-c", PROBES], env=env, capture_output=True, text=True, check=True).stdout.split(maxsplit=1) for _ in range(2))
    assert int(first[0]) > 0 and int(second[0]) == 0, (first, second)
    assert first[1] == second[1]
