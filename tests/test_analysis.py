"""Analysis on planted structure: known frequencies, parallelograms, quadratics, synthetic phase curves."""

from __future__ import annotations

import json
import math

import pytest
import torch

from groklab.analysis import analyze_run, fourier, norms, parse_analysis, phases, rqi, sharpness
from groklab.analysis import embeddings as emb
from groklab.cli import main
from groklab.config import Config, UserError, apply_overrides
from groklab.runio import load_run
from groklab.train import check, train

P = 97


def planted_embedding(freqs: list[int], p: int = P, d: int = 32, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(p, d): each planted frequency's cos and sin written along random directions, plus Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    k = torch.arange(p, dtype=torch.float64)
    out = noise * torch.randn(p, d, generator=gen, dtype=torch.float64)
    for f in freqs:
        u, v = torch.randn(2, d, generator=gen, dtype=torch.float64)
        out += torch.cos(2 * math.pi * f * k / p)[:, None] * u + torch.sin(2 * math.pi * f * k / p)[:, None] * v
    return out


def test_fourier_basis_is_orthonormal() -> None:
    for p in (7, 8, 97):
        basis, freqs = fourier.fourier_basis(p)
        assert torch.allclose(basis @ basis.T, torch.eye(p, dtype=torch.float64), atol=1e-10)
        assert int(freqs.max()) == p // 2


@pytest.mark.parametrize("freqs", [[1], [3, 17, 40], [5, 14, 23, 41, 48]])
def test_planted_frequencies_are_recovered_exactly(freqs: list[int]) -> None:
    e = planted_embedding(freqs, noise=0.01)
    power = fourier.spectrum(e)
    assert power.shape == (P // 2 + 1,)
    assert math.isclose(float(power.sum()), float(e.pow(2).sum()), rel_tol=1e-9)  # Parseval
    assert fourier.key_frequencies(power) == freqs


def test_random_embedding_has_no_key_frequencies_and_low_gini() -> None:
    e = torch.randn(P, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    power = fourier.spectrum(e)
    assert fourier.key_frequencies(power) == []
    assert fourier.spectrum_gini(power) < 0.1
    assert fourier.spectrum_gini(fourier.spectrum(planted_embedding([3, 17]))) > 0.9


def test_gini_extremes() -> None:
    assert fourier.gini(torch.ones(10)) == pytest.approx(0.0, abs=1e-12)
    one_hot = torch.zeros(10)
    one_hot[3] = 5.0
    assert fourier.gini(one_hot) == pytest.approx(0.9)  # (n − 1) / n: the maximum for n values


def trig_logits(freqs: list[int], p: int, sign: int = 1) -> torch.Tensor:
    """(p, p, p) logits Σ_f cos(w_f(a + sign·b − c)): the ideal Fourier circuit."""
    a = torch.arange(p, dtype=torch.float64)
    angle = a[:, None, None] + sign * a[None, :, None] - a[None, None, :]
    return sum(torch.cos(2 * math.pi * f * angle / p) for f in freqs)


@pytest.mark.parametrize("sign", [1, -1])
def test_restricted_and_excluded_logits_split_the_circuit_from_the_rest(sign: int) -> None:
    p = 31
    circuit = 4 * trig_logits([2, 9], p, sign)
    other = 4 * trig_logits([5], p, 1) * torch.linspace(-1, 1, p)[None, :, None]  # not a function of a ± b alone
    restricted, excluded = fourier.restricted_excluded_logits(circuit + other, [2, 9], sign)
    centered = lambda t: t - t.mean(-1, keepdim=True)  # noqa: E731  softmax ignores per-pair shifts
    assert torch.allclose(centered(restricted), centered(circuit), atol=1e-9)
    assert torch.allclose(centered(excluded), centered(other), atol=1e-9)
    assert fourier.logit_variance_explained(circuit, [2, 9], sign) == pytest.approx(1.0)
    assert fourier.logit_variance_explained(circuit, [3], sign) == pytest.approx(0.0, abs=1e-12)
    # Restricted to the circuit, the logits still classify (a ± b) mod p; excluded, they do not.
    labels = ((torch.arange(p)[:, None] + sign * torch.arange(p)[None, :]) % p).flatten()
    idx = torch.arange(p * p)
    assert fourier.cross_entropy_on(restricted, labels, idx) < 0.5 * fourier.cross_entropy_on(excluded, labels, idx)


def test_neuron_spectrum_finds_the_frequency_a_neuron_reads() -> None:
    p = 23
    a = torch.arange(p, dtype=torch.float64)
    acts = torch.cos(2 * math.pi * 7 * (a[:, None] + a[None, :]) / p)[..., None]  # (p, p, 1)
    power = fourier.neuron_spectrum(acts)
    assert int(power.argmax()) == 7 and float(power[7]) / float(power.sum()) > 0.999


def test_rqi_perfect_parallelograms_and_random() -> None:
    gen = torch.Generator().manual_seed(0)
    direction, offset = torch.randn(2, 16, generator=gen)
    line = torch.arange(30, dtype=torch.float32)[:, None] * direction + offset  # E_k = k·v + c
    assert rqi.rqi(line) == pytest.approx(1.0)
    assert rqi.rqi(100 * line) == pytest.approx(1.0)  # scale-free
    assert rqi.rqi(torch.randn(30, 16, generator=gen)) < 0.01
    # A modular line (a circle of one frequency is not one) satisfies only the modular parallelograms.
    circle = planted_embedding([1], p=30, d=16)
    assert rqi.rqi(circle) < 0.2


def test_top_hessian_eigenvalue_of_a_known_quadratic() -> None:
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(40, 40, generator=gen, dtype=torch.float64))
    eigs = torch.linspace(0.1, 7.0, 40, dtype=torch.float64)
    eigs[-1] = 7.5  # close to the next one: slow for plain power iteration
    a = q @ torch.diag(eigs) @ q.T
    x = torch.randn(40, generator=gen, dtype=torch.float64, requires_grad=True)
    loss = lambda: 0.5 * x @ a @ x  # noqa: E731
    assert sharpness.top_hessian_eigenvalue(loss, [x], iters=40) == pytest.approx(7.5, rel=1e-6)


def test_eps_sharpness_grows_with_curvature_and_restores_parameters() -> None:
    x = torch.full((10,), 0.5, dtype=torch.float64, requires_grad=True)
    before = x.detach().clone()
    flat = sharpness.eps_sharpness(lambda: (x * x).sum(), [x], eps=1e-2)
    sharp = sharpness.eps_sharpness(lambda: 50 * (x * x).sum(), [x], eps=1e-2)
    assert 0 < flat < sharp
    assert torch.equal(x.detach(), before)


def test_neuron_norms() -> None:
    w_in = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    w_out = torch.tensor([[4.0, 0.0], [0.0, 1.0]])
    assert norms.neuron_norms(w_in, w_out, torch.tensor([0.0, 0.0])).tolist() == pytest.approx([5.0, 1.0])


def test_circularity() -> None:
    k = torch.arange(P, dtype=torch.float64)
    angle = 2 * math.pi * 5 * k / P + 0.3
    circle = 3 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    assert emb.circularity(circle) == pytest.approx(1.0)
    assert emb.circularity(torch.randn(P, 2, generator=torch.Generator().manual_seed(0))) < 0.35
    # PCA of a planted single-frequency embedding is that circle.
    assert emb.circularity(emb.pca(planted_embedding([11]), 2)) > 0.99


def curves(fit_at: int | None, gen_at: int | None, n: int = 200, every: int = 10) -> dict[str, list[float]]:
    """Synthetic train/val accuracy and val loss: step functions at `fit_at` and `gen_at` (None: never)."""
    steps = [i * every for i in range(n)]
    train_acc = [1.0 if fit_at is not None and s >= fit_at else 0.3 for s in steps]
    val_acc = [1.0 if gen_at is not None and s >= gen_at else 0.01 for s in steps]
    # Val loss rises while the net memorizes, then falls smoothly over 300 steps once the circuit forms.
    val_loss = [5.0 if gen_at is None or s < gen_at - 300 else 5.0 * math.exp(-12 * min(1.0, (s - gen_at + 300) / 300)) for s in steps]
    return {"steps": steps, "train_acc": train_acc, "val_acc": val_acc, "val_loss": val_loss}


def test_phase_boundaries_on_a_synthetic_grokking_curve() -> None:
    c = curves(100, 1500)
    b = phases.phase_boundaries(c["steps"], c["train_acc"], c["val_acc"], c["val_loss"])
    assert b is not None
    assert b["memorization_end"] == 100
    assert 1200 <= b["circuit_formation_end"] <= 1250  # 10% of the log-loss drop: early in the 1200–1500 fall
    assert 1450 <= b["cleanup_end"] <= 1500 and b["cleanup_from"] == "val/loss"
    # With a logged Gini that keeps rising after val loss settles, cleanup ends with the sparsity.
    gini = [min(0.9, 0.1 + s / 3000) for s in c["steps"]]
    g = phases.phase_boundaries(c["steps"], c["train_acc"], c["val_acc"], c["val_loss"], gini)
    assert g is not None and g["cleanup_from"] == "fourier/gini" and g["cleanup_end"] > b["cleanup_end"]
    m = curves(100, None)
    assert phases.phase_boundaries(m["steps"], m["train_acc"], m["val_acc"], m["val_loss"]) is None


def test_parse_analysis_and_config_validation() -> None:
    assert parse_analysis("fourier, norms") == ["fourier", "norms"]
    with pytest.raises(UserError, match="analysis='fourier,bogus' is not valid"):
        parse_analysis("fourier,bogus")
    with pytest.raises(UserError, match="analysis="):
        check(apply_overrides(Config(), {"analysis": "norms,curvature"}))


def test_training_logs_analysis_keys_and_analyze_run_is_json(small_config, tmp_path, capsys) -> None:
    config = apply_overrides(small_config, {"analysis": "fourier,norms,rqi,sharpness", "analysis_every": 2})
    train(config, tmp_path / "run", progress=False)
    rows = load_run(tmp_path / "run").metrics
    assert [("fourier/gini" in r) for r in rows] == [True, False, True]  # every 2nd evaluation: steps 0, 6
    logged = rows[0]
    for key in ("fourier/n_key", "fourier/restricted_loss", "fourier/excluded_loss", "norm/last_layer", "rqi", "sharpness/top_eig"):
        assert math.isfinite(logged[key])
    assert "norm/layer/embed.weight" in logged

    run = load_run(tmp_path / "run")
    result = analyze_run(run)
    assert result["step"] == 6
    json.dumps(result, allow_nan=False)
    assert len(result["fourier"]["spectrum"]) == 7 // 2 + 1
    assert len(result["embeddings"]["pca"]) == 7
    assert result["norms"]["per_neuron"] and result["sharpness"]["top_eigenvalue"] is not None
    # What training logged at step 0 is what analyze measures on step 0's checkpoint.
    at_zero = analyze_run(run, step=0, sharpness=False)
    assert at_zero["sharpness"] is None
    measured = {
        "fourier/gini": at_zero["fourier"]["gini"], "fourier/n_key": len(at_zero["fourier"]["key_frequencies"]),
        "fourier/restricted_loss": at_zero["fourier"]["restricted_loss"], "fourier/excluded_loss": at_zero["fourier"]["excluded_loss"],
        "norm/last_layer": at_zero["norms"]["last_layer"], "rqi": at_zero["rqi"],
    }  # fmt: skip
    assert {key: logged[key] for key in measured} == pytest.approx(measured, rel=1e-5)

    assert main(["analyze", str(tmp_path / "run"), "--json", "--no-sharpness", "--step", "4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 4
    assert main(["analyze", str(tmp_path / "run"), "--step", "3"]) == 2
    assert "step=3 has no checkpoint" in capsys.readouterr().err
    assert main(["analyze", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_analyze_run_of_a_task_that_is_not_modular(tmp_path) -> None:
    from conftest import tiny

    from groklab.presets import get_preset

    config = tiny(get_preset("parity"), {"task.n_bits": 8, "task.n_samples": 100, "model.width": 16})
    train(config, tmp_path / "run", progress=False)
    result = analyze_run(load_run(tmp_path / "run"), sharpness=False)
    assert result["fourier"] is None and result["embeddings"] is None and result["rqi"] is None
    assert len(result["norms"]["per_neuron"]) == 16


def test_tsne_keeps_a_planted_circle_s_neighbourhoods_and_is_repeatable() -> None:
    from sklearn.manifold import trustworthiness

    e = planted_embedding([5], noise=0.05)  # 97 tokens on a circle at frequency 5, in 32 dimensions
    points = emb.tsne(e)
    assert points.shape == (P, 2) and torch.equal(points, emb.tsne(e))  # fixed seed: the same map every time
    assert trustworthiness(e.numpy(), points.numpy(), n_neighbors=5) > 0.95
    random_map = torch.randn(P, 2, generator=torch.Generator().manual_seed(0))
    assert trustworthiness(e.numpy(), random_map.numpy(), n_neighbors=5) < 0.8  # the measure can fail


def test_neuron_activations_are_the_last_hidden_layer_over_every_pair(small_config) -> None:
    import torch.nn.functional as F

    from groklab.analysis import neuron_activations
    from groklab.data import build_task
    from groklab.models import build_model

    config = apply_overrides(small_config, {"model.depth": 2, "model.activation": "gelu"})
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, config.seed).eval()
    acts = neuron_activations(model, data, 7)
    with torch.no_grad():  # the MLP's forward written out: embed both operands, two GELU layers
        x = model.embed(data.x[:, model.positions]).flatten(1)
        expected = F.gelu(model.hidden[1](F.gelu(model.hidden[0](x))))
    assert acts.shape == (7, 7, config.model.width)
    assert torch.allclose(acts.reshape(49, -1), expected)
    a, b = data.x[8, model.positions].tolist()  # row-major (a, b): pair 8 of p = 7 is (1, 1)
    assert (a, b) == (1, 1) and torch.equal(acts[1, 1], acts.reshape(49, -1)[8])


def test_transformer_neurons_match_the_full_forward_and_their_spectrum_keeps_their_energy() -> None:
    from conftest import tiny

    from groklab.analysis import neuron_activations, neuron_fourier
    from groklab.data import build_task
    from groklab.models import build_model
    from groklab.presets import get_preset

    config = tiny(get_preset("nanda"), {"task.p": 11, "model.d_model": 16, "model.d_mlp": 24, "model.n_heads": 2})
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, config.seed).eval()
    acts = neuron_activations(model, data, 11)
    block, captured = model.blocks[-1], []
    handle = block.fc_in.register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        model.sequence_logits(data.x)  # every position through plain causal attention
    handle.remove()
    assert acts.shape == (11, 11, 24)
    assert torch.allclose(acts.reshape(121, -1), block.act(captured[0][:, -1]), atol=1e-5)
    result = neuron_fourier(model, data, 11)
    assert len(result["spectrum"]) == 11 // 2 + 1  # Parseval: the frequencies share out the activations' energy
    assert sum(result["spectrum"]) == pytest.approx(float(acts.double().pow(2).sum()), rel=1e-9)


def test_analyze_run_reports_tsne_and_the_neuron_spectrum(small_config, tmp_path) -> None:
    train(small_config, tmp_path / "add", progress=False)
    result = analyze_run(load_run(tmp_path / "add"), sharpness=False)
    json.dumps(result, allow_nan=False)
    assert len(result["embeddings"]["tsne"]) == 7 and len(result["embeddings"]["pca"]) == 7
    neurons = result["neuron_fourier"]
    assert len(neurons["spectrum"]) == 7 // 2 + 1 and 0 <= neurons["gini"] <= 1
    # The reported keys are the rule's on the reported spectrum; six steps from a random init there are none yet
    # (the rule itself is pinned on constructed spectra in tests/test_key_frequencies.py).
    assert neurons["key_frequencies"] == fourier.key_frequencies(torch.tensor(neurons["spectrum"], dtype=torch.float64)) == []
    # x/y has no pairs with y = 0: no full (a, b) grid, so no neuron spectrum (the embedding analyses still run).
    train(apply_overrides(small_config, {"task.op": "x/y"}), tmp_path / "div", progress=False)
    div = analyze_run(load_run(tmp_path / "div"), sharpness=False)
    assert div["neuron_fourier"] is None and len(div["embeddings"]["tsne"]) == 7
