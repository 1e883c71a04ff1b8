"""Models: output shapes, parameter counts from the architecture formulas, init, the fast paths against the reference,
loading a run's model (also one written before model.name became `transformer`)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from groklab.config import ModelConfig, TaskConfig, apply_overrides
from groklab.data import build_task
from groklab.models import build_model, load_model, n_params
from groklab.models.activations import ACTIVATIONS
from groklab.models.fast import FastMLP, FastTransformer
from groklab.models.mlp import MLP
from groklab.models.transformer import Transformer
from groklab.presets import NANDA_MODEL as NANDA
from groklab.presets import POWER_MODEL as POWER
from groklab.presets import get_preset
from groklab.runio import RunDir, load_run

PRE = ModelConfig(name="transformer", d_model=128, n_layers=2, n_heads=4, d_mlp=512, norm="pre")
ARCHITECTURES = {"power": POWER, "nanda": NANDA, "pre": PRE}
"""The transformer's LayerNorm / bias / init combinations: Power et al.'s, Nanda et al.'s, and pre-LN."""


def small(arch: str) -> ModelConfig:
    """A test-sized model: one of ARCHITECTURES, or `mlp` (two hidden layers)."""
    if arch == "mlp":
        return ModelConfig(name="mlp", d_model=16, width=32, depth=2)
    return dataclasses.replace(ARCHITECTURES[arch], d_model=32, d_mlp=48)


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
    assert model.sequence_logits(x).shape == (10, 4, 97)


def test_nanda_transformer_shapes_and_param_count() -> None:
    ds = build_task(TaskConfig(op="x+y", p=113, train_frac=0.3, val_frac=0.35), split_seed=0)
    model = build_model(NANDA, ds, seed=0)
    assert n_params(model) == nanda_param_count(vocab=115, seq=4, n_classes=113, d=128, d_mlp=512)
    assert len(model.blocks) == 1
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert model(ds.x[:7]).shape == (7, 113)
    # N(0, 1/√d) init: the embedding's empirical std is close to 1/√128.
    assert abs(float(model.embed.weight.detach().std()) - 1 / math.sqrt(128)) < 0.01


def test_pre_layernorm_transformer_param_count() -> None:
    """Power's count plus the final LayerNorm before the unembedding; the blocks' two LayerNorms move, not multiply."""
    ds = build_task(TaskConfig(op="x/y", p=97), split_seed=0)
    model = build_model(PRE, ds, seed=0)
    assert n_params(model) == power_param_count(vocab=99, seq=4, n_classes=97, d=128, d_mlp=512, n_layers=2) + 2 * 128


def test_normal_init_leaves_layernorm_gains_at_one() -> None:
    """Nanda's init on a model with LayerNorms: weight matrices and embeddings N(0, 1/d), LayerNorms as PyTorch makes them."""
    ds = build_task(TaskConfig(op="x+y", p=97), split_seed=0)
    model = build_model(dataclasses.replace(POWER, init="normal"), ds, seed=0)
    for name, param in model.named_parameters():
        if ".ln_" in name:
            assert torch.equal(param, torch.ones_like(param) if name.endswith("weight") else torch.zeros_like(param)), name
        else:
            assert abs(float(param.detach().std()) - 1 / math.sqrt(128)) < 0.01, name


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


@pytest.mark.parametrize("cfg", [POWER, NANDA, PRE, ModelConfig(name="mlp", width=64)], ids=["power", "nanda", "pre", "mlp"])
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
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_last_position_fast_path_is_exact(arch: str, n_layers: int) -> None:
    ds = build_task(TaskConfig(op="x*y", p=23), split_seed=0)
    cfg = dataclasses.replace(ARCHITECTURES[arch], d_model=64, n_layers=n_layers, n_heads=4, d_mlp=128)
    model = build_model(cfg, ds, seed=0)
    assert isinstance(model, FastTransformer)
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
            full = model.sequence_logits(x)[:, -1]
            torch.testing.assert_close(model.plain(x), full, atol=1e-5, rtol=1e-5)  # the last-position shortcut alone
            for shared in range(4):
                model.shared_prefix = shared
                fast = model(x)
                assert fast.shape == (len(x), 23)
                torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_fast_path_gradients_match_reference(arch: str) -> None:
    ds = build_task(TaskConfig(op="x-y", p=17), split_seed=0)
    cfg = dataclasses.replace(ARCHITECTURES[arch], d_model=32, n_layers=2, n_heads=4, d_mlp=64)
    fast, reference = build_model(cfg, ds, seed=3), build_model(cfg, ds, seed=3, fast=False)
    grads = []
    for model in (fast, reference):
        F.cross_entropy(model(ds.x), ds.y).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


def test_full_forward_is_causal() -> None:
    ds = build_task(TaskConfig(op="x+y", p=11), split_seed=0)
    model = Transformer(ModelConfig(name="transformer", d_model=32, n_heads=2, d_mlp=64), ds.vocab_size, ds.n_classes, seq_len=4)
    x = ds.x[:6].clone()
    changed = x.clone()
    changed[:, 2] = (changed[:, 2] + 1) % 11
    with torch.no_grad():
        before, after = model.sequence_logits(x), model.sequence_logits(changed)
    torch.testing.assert_close(before[:, :2], after[:, :2])  # earlier positions cannot see token 2
    assert not torch.allclose(before[:, 2:], after[:, 2:])


def test_relu_is_max_with_zero_and_its_gradient_is_zero_at_zero() -> None:
    """The same in eager and compiled training (the compiled libraries trace this very function)."""
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 3.0], requires_grad=True)
    ACTIVATIONS["relu"](x).sum().backward()
    assert ACTIVATIONS["relu"](x.detach()).tolist() == [0.0, 0.0, 0.0, 0.25, 3.0]
    assert x.grad is not None and x.grad.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert torch.equal(ACTIVATIONS["quadratic"](x.detach()), x.detach() ** 2)


@pytest.mark.parametrize("name", ["transformer", "mlp", "lm"])
def test_dropout_acts_while_training_only(name: str) -> None:
    """model.dropout reaches the network: in training mode it changes the outputs (and two draws differ), in eval mode
    it is off; with dropout 0 the two modes agree."""
    dyck = TaskConfig(name="dyck", n_brackets=2, max_depth=3, max_len=16, train_size=32, eval_size=8, gen_size=8)
    ds = build_task(dyck if name == "lm" else TaskConfig(op="x+y", p=13), split_seed=0)
    x = ds.x[:32]
    for p in (0.3, 0.0):
        model = build_model(ModelConfig(name=name, d_model=32, n_layers=2, n_heads=4, d_mlp=64, width=64, dropout=p), ds, seed=0)
        torch.manual_seed(1)
        first, second = model.train()(x), model(x)
        plain = model.eval()(x)
        if p:
            assert not torch.allclose(first, plain) and not torch.allclose(first, second)
        else:
            torch.testing.assert_close(first, plain)
            torch.testing.assert_close(second, plain)


def test_dropout_training_draws_masks_per_sample_not_per_shared_prefix() -> None:
    """Prefix rows shared by many samples would share their dropout masks: while training with dropout the fast
    path computes every sample's prefix itself (the same draws as with sharing turned off)."""
    ds = build_task(TaskConfig(op="x+y", p=13), split_seed=0)
    model = build_model(ModelConfig(name="transformer", d_model=32, n_layers=2, n_heads=4, d_mlp=64, dropout=0.3), ds, seed=0)
    assert model.shared_prefix == 2
    outputs = []
    for shared in (2, 0):
        model.shared_prefix = shared
        torch.manual_seed(1)
        outputs.append(model(ds.x[:64]))
    torch.testing.assert_close(outputs[0], outputs[1])
    model.eval()  # no dropout: sharing is back on, and exact
    torch.testing.assert_close(model(ds.x[:64]), model.sequence_logits(ds.x[:64])[:, -1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", [*ARCHITECTURES, "mlp"])
def test_fast_and_reference_models_share_parameters_and_logits(arch: str) -> None:
    """build_model(fast=False) is the plain reference: the same init (seed), state_dict keys and answer logits as the fast
    model, so a checkpoint of either loads into the other."""
    ds = build_task(TaskConfig(op="x-y", p=17), split_seed=0)
    fast, reference = build_model(small(arch), ds, seed=5), build_model(small(arch), ds, seed=5, fast=False)
    assert type(fast) is (FastMLP if arch == "mlp" else FastTransformer)
    assert type(reference) is (MLP if arch == "mlp" else Transformer)
    state = fast.state_dict()
    assert state.keys() == reference.state_dict().keys()
    assert all(torch.equal(state[k], reference.state_dict()[k]) for k in state)
    with torch.no_grad():
        for param in fast.parameters():  # away from the init, then into the reference
            param.add_(0.1 * torch.randn_like(param))
    reference.load_state_dict(fast.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fast(ds.x), reference(ds.x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_sequence_logits_read_at_the_last_position_are_the_answer_logits(arch: str) -> None:
    """Logits at every position, for sequence tasks: the last position's are forward's, and each position's depend on
    the tokens up to it alone (a sequence cut after position i has the same logits there)."""
    ds = build_task(TaskConfig(op="x*y", p=13), split_seed=0)
    model = build_model(small(arch), ds, seed=1, fast=False)
    with torch.no_grad():
        every = model.sequence_logits(ds.x)  # (N, 4, n_classes)
        assert every.shape == (len(ds.x), 4, 13)
        assert torch.equal(every[:, -1], model(ds.x))
        for i in range(1, 4):
            torch.testing.assert_close(model.sequence_logits(ds.x[:, : i + 1])[:, -1], every[:, i], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", [*ARCHITECTURES, "mlp"])
def test_neurons_are_the_activations_that_feed_the_logits(arch: str) -> None:
    """neurons(x): the last MLP's hidden activations at the answer position, as the forward computes them (caught by a
    hook on their input layer); the MLP's logits are its output layer applied to them."""
    ds = build_task(TaskConfig(op="x+y", p=11), split_seed=0)
    model = build_model(small(arch), ds, seed=2, fast=False).eval()
    layer = model.hidden[-1] if arch == "mlp" else model.blocks[-1].fc_in
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        logits = model(ds.x)
        handle.remove()
        neurons = model.neurons(ds.x)
    width = 32 if arch == "mlp" else 48
    assert neurons.shape == (len(ds.x), width)
    pre = captured[0] if arch == "mlp" else captured[0][:, -1]
    act = model.act if arch == "mlp" else model.blocks[-1].act
    torch.testing.assert_close(neurons, act(pre), atol=1e-6, rtol=1e-5)
    if arch == "mlp":
        assert torch.equal(model.out(neurons), logits)
    assert torch.equal(model.embedding(), model.embed.weight)


@pytest.mark.parametrize(("legacy", "n_blocks", "layernorm"), [("power", 2, True), ("nanda", 1, False)])
def test_load_model_reads_a_run_written_with_the_old_model_names(tmp_path, legacy: str, n_blocks: int, layernorm: bool) -> None:
    """A schema-1 config.json names the model `power` or `nanda` (which ignored n_layers): it loads as the same model."""
    config = apply_overrides(
        get_preset("nanda" if legacy == "nanda" else "power-fig1"), {"task.p": 11, "model.d_model": 16, "model.d_mlp": 32}
    )
    run = RunDir(tmp_path / "run")
    run.prepare(config)
    raw = json.loads(run.config_path.read_text())
    model_v1 = {k: v for k, v in raw["config"]["model"].items() if k not in ("norm", "mlp_bias", "init")}
    raw["config"]["model"] = {**model_v1, "name": legacy, "n_layers": 2}
    raw["schema_version"] = 1
    run.config_path.write_text(json.dumps(raw))
    data = build_task(config.task, config.split_seed)
    trained = build_model(config.model, data, seed=7)
    run.save_model(3, trained.state_dict())

    loaded = load_run(run.path)
    assert loaded.config == config
    model = load_model(loaded)
    assert type(model) is Transformer and len(model.blocks) == n_blocks
    assert any(isinstance(m, torch.nn.LayerNorm) for m in model.modules()) == layernorm
    with torch.no_grad():
        torch.testing.assert_close(model(data.x), trained(data.x), atol=1e-5, rtol=1e-5)
