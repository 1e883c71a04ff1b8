"""Models: output shapes, parameter counts from the architecture formulas, init scale, the last-position fast path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from groklab.config import ModelConfig, TaskConfig
from groklab.data import build_task
from groklab.models import build_model, n_params
from groklab.models.activations import ACTIVATIONS
from groklab.models.transformer import Transformer

POWER = ModelConfig(name="power", d_model=128, n_layers=2, n_heads=4, d_mlp=512)
NANDA = ModelConfig(name="nanda", d_model=128, n_heads=4, d_mlp=512)


def power_param_count(vocab: int, seq: int, n_classes: int, d: int, d_mlp: int, n_layers: int) -> int:
    """Embeddings + per block (qkv, out proj, two bias-free MLP matrices, two LayerNorms) + bias-free unembed."""
    block = 3 * d * d + d * d + 2 * d * d_mlp + 2 * (2 * d)
    return vocab * d + seq * d + n_layers * block + d * n_classes


def nanda_param_count(vocab: int, seq: int, n_classes: int, d: int, d_mlp: int) -> int:
    """One block without LayerNorm; the MLP has biases."""
    block = 3 * d * d + d * d + (d * d_mlp + d_mlp) + (d_mlp * d + d)
    return vocab * d + seq * d + block + d * n_classes


def mlp_param_count(n_in: int, width: int, depth: int, n_classes: int, embed: int = 0) -> int:
    return embed + (n_in * width + width) + (depth - 1) * (width * width + width) + (width * n_classes + n_classes)


def test_power_transformer_shapes_and_param_count() -> None:
    ds = build_task(TaskConfig(op="x/y", p=97), split_seed=0)
    model = build_model(POWER, ds, seed=0)
    expected = power_param_count(vocab=99, seq=4, n_classes=97, d=128, d_mlp=512, n_layers=2)
    assert n_params(model) == expected
    assert 3.8e5 < expected < 4.4e5  # "about 4·10⁵ parameters" (Power et al.)
    x = ds.x[:10]
    assert model(x).shape == (10, 97)
    assert model(x, full=True).shape == (10, 4, 97)


def test_nanda_transformer_shapes_and_param_count() -> None:
    ds = build_task(TaskConfig(op="x+y", p=113, train_frac=0.3, val_frac=0.35), split_seed=0)
    model = build_model(NANDA, ds, seed=0)
    assert n_params(model) == nanda_param_count(vocab=115, seq=4, n_classes=113, d=128, d_mlp=512)
    assert len(model.blocks) == 1
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert model(ds.x[:7]).shape == (7, 113)
    # N(0, 1/√d) init: the embedding's empirical std is close to 1/√128.
    assert abs(float(model.embed.weight.detach().std()) - 1 / math.sqrt(128)) < 0.01


@pytest.mark.parametrize(("width", "depth"), [(256, 1), (64, 3)])
def test_mlp_on_tokens(width: int, depth: int) -> None:
    ds = build_task(TaskConfig(op="x+y", p=97), split_seed=0)
    model = build_model(ModelConfig(name="mlp", d_model=32, width=width, depth=depth), ds, seed=0)
    assert n_params(model) == mlp_param_count(2 * 32, width, depth, 97, embed=99 * 32)
    assert model(ds.x[:5]).shape == (5, 97)


def test_mlp_embeds_only_the_operands() -> None:
    ds = build_task(TaskConfig(op="x+y", p=13), split_seed=0)
    model = build_model(ModelConfig(name="mlp", d_model=8, width=16, depth=1), ds, seed=0)
    x = ds.x[:20].clone()
    same_operands = x.clone()
    same_operands[:, 1] = 0  # op and `=` tokens carry no information for the MLP
    same_operands[:, 3] = 5
    assert torch.equal(model(x), model(same_operands))
    swapped = x[:, [2, 1, 0, 3]]
    assert not torch.allclose(model(x), model(swapped))  # operand order matters (concatenation, not a sum)


@pytest.mark.parametrize("depth", [1, 2])
def test_mlp_token_tables_match_the_plain_computation(depth: int) -> None:
    """Batches larger than the vocabulary take the first layer from per-(operand, token) tables: same logits and
    gradients as embedding, concatenating and multiplying; smaller batches run the plain path itself."""
    ds = build_task(TaskConfig(op="x-y", p=17), split_seed=0)  # vocab 19 < batch 289
    model = build_model(ModelConfig(name="mlp", d_model=16, width=32, depth=depth), ds, seed=2)
    grads = []
    for forward in (model, model.plain):
        model.zero_grad()
        logits = forward(ds.x)
        F.cross_entropy(logits, ds.y).backward()
        grads.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (fast, fast_grads), (plain, plain_grads) = grads
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    for name in plain_grads:
        torch.testing.assert_close(fast_grads[name], plain_grads[name], atol=1e-6, rtol=1e-4, msg=name)
    assert not torch.equal(fast, plain)  # a different computation (sums in another order), not the same one
    assert torch.equal(model(ds.x[:10]), model.plain(ds.x[:10]))  # 10 samples < 19 tokens: the plain path


@pytest.mark.parametrize(
    ("task", "n_in", "n_classes"),
    [(TaskConfig(name="parity", n_bits=20, k_bits=3, n_samples=100), 20, 2), (TaskConfig(name="digits"), 64, 10)],
)
def test_mlp_on_features(task: TaskConfig, n_in: int, n_classes: int) -> None:
    ds = build_task(task, split_seed=0)
    model = build_model(ModelConfig(name="mlp", width=50, depth=2), ds, seed=0)
    assert model.embed is None
    assert n_params(model) == mlp_param_count(n_in, 50, 2, n_classes)
    assert model(ds.x[:9]).shape == (9, n_classes)


@pytest.mark.parametrize("cfg", [POWER, NANDA, ModelConfig(name="mlp", width=64)], ids=["power", "nanda", "mlp"])
def test_init_scale_multiplies_every_weight(cfg: ModelConfig) -> None:
    ds = build_task(TaskConfig(op="x+y", p=11), split_seed=0)
    base = dict(build_model(cfg, ds, seed=4).named_parameters())
    scaled = dict(build_model(dataclasses.replace(cfg, init_scale=3.5), ds, seed=4).named_parameters())
    assert base.keys() == scaled.keys()
    for name in base:
        torch.testing.assert_close(scaled[name], 3.5 * base[name], msg=name)


def test_same_seed_same_weights_other_seed_differs() -> None:
    ds = build_task(TaskConfig(op="x+y", p=11), split_seed=0)
    a, b, c = (build_model(POWER, ds, seed=s).state_dict() for s in (1, 1, 2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["embed.weight"], c["embed.weight"])


@pytest.mark.parametrize("n_layers", [1, 2, 3])
@pytest.mark.parametrize("name", ["power", "nanda"])
def test_last_position_fast_path_is_exact(name: str, n_layers: int) -> None:
    ds = build_task(TaskConfig(op="x*y", p=23), split_seed=0)
    cfg = ModelConfig(name=name, d_model=64, n_layers=n_layers, n_heads=4, d_mlp=128)
    model = build_model(cfg, ds, seed=0)
    # Train a few steps so the weights are not at their (symmetric) init.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(ds.x[:128]), ds.y[:128]).backward()
        opt.step()
    # Every (token, position) table, any shared-prefix length, on the task's sequences and on arbitrary token strings.
    arbitrary = torch.randint(ds.vocab_size, (300, 4), generator=torch.Generator().manual_seed(0))
    for x in (ds.x, arbitrary):
        with torch.no_grad():
            full = model(x, full=True)[:, -1]
            for shared in range(4):
                model.shared_prefix = shared
                fast = model(x)
                assert fast.shape == (len(x), 23)
                torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


def test_fast_path_gradients_match_reference() -> None:
    ds = build_task(TaskConfig(op="x-y", p=17), split_seed=0)
    model = build_model(ModelConfig(name="power", d_model=32, n_layers=2, n_heads=4, d_mlp=64), ds, seed=3)
    grads = []
    for full in (False, True):
        model.zero_grad()
        logits = model(ds.x, full=full)
        F.cross_entropy(logits if not full else logits[:, -1], ds.y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_full_forward_is_causal() -> None:
    ds = build_task(TaskConfig(op="x+y", p=11), split_seed=0)
    model = Transformer(ModelConfig(name="power", d_model=32, n_heads=2, d_mlp=64), ds.vocab_size, ds.n_classes, seq_len=4)
    x = ds.x[:6].clone()
    changed = x.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 11
    with torch.no_grad():
        before, after = model(x, full=True), model(changed, full=True)
    torch.testing.assert_close(before[:, :2], after[:, :2])  # earlier positions cannot see token 2
    assert not torch.allclose(before[:, 2:], after[:, 2:])


def test_relu_matches_torch_relu() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 3.0], requires_grad=True)
    ACTIVATIONS["relu"](x).sum().backward()
    assert torch.equal(ACTIVATIONS["relu"](x.detach()), F.relu(x.detach()))
    assert x.grad is not None and x.grad.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]  # eager: torch's ReLU itself
    assert torch.equal(ACTIVATIONS["quadratic"](x.detach()), x.detach() ** 2)


@pytest.mark.slow
def test_compiled_relu_is_the_abs_form() -> None:
    """Under torch.compile the activation is (x + |x|) / 2: ReLU's values, gradient 1/2 at exactly 0 (the tell)."""
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 3.0], requires_grad=True)
    torch.compile(ACTIVATIONS["relu"])(x).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_dropout_training_draws_masks_per_sample_not_per_shared_prefix() -> None:
    """Prefix rows shared by many samples would share their dropout masks: while training with dropout the fast
    path computes every sample's prefix itself (the same draws as with sharing turned off)."""
    ds = build_task(TaskConfig(op="x+y", p=13), split_seed=0)
    model = build_model(ModelConfig(name="power", d_model=32, n_layers=2, n_heads=4, d_mlp=64, dropout=0.3), ds, seed=0)
    assert model.shared_prefix == 2
    outputs = []
    for shared in (2, 0):
        model.shared_prefix = shared
        torch.manual_seed(1)
        outputs.append(model(ds.x[:64]))
    torch.testing.assert_close(outputs[0], outputs[1])
    model.eval()  # no dropout: sharing is back on, and exact
    torch.testing.assert_close(model(ds.x[:64]), model(ds.x[:64], full=True)[:, -1], atol=1e-5, rtol=1e-5)
