"""Spike detection (slingshot), the sparse-parity circuit norms, and their `--analysis` logging."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from groklab.analysis.circuits import circuit_norms, relevant_fraction, subnetwork_size
from groklab.analysis.spikes import norm_breaks
from groklab.config import Config, apply_overrides
from groklab.data import build_task
from groklab.models import load_model
from groklab.presets import get_preset
from groklab.runio import load_run
from groklab.train import train


def test_norm_breaks_finds_jumps_and_stalls_but_not_steady_or_smoothly_slowing_growth() -> None:
    rng = np.random.default_rng(0)
    growth = 1 + 0.003 + 0.0002 * rng.standard_normal(200)  # steady growth with noise
    growth[80] = 1.05  # a jump of 5%
    growth[150:] = 1.0002  # a stall: the norm stops growing (what the MLP shows after a loss spike)
    norm = 10 * np.cumprod(growth)
    assert norm_breaks(norm) == [80, 150]
    slowing = 10 * np.cumprod(1 + 0.05 * np.exp(-np.arange(200) / 40))  # the smooth early deceleration
    assert norm_breaks(slowing) == []


def test_circuit_norms_separate_sparse_from_dense_neurons() -> None:
    n, k = 20, 3
    w_in = 0.01 * torch.ones(6, n)
    w_in[:2, :k] = 1.0  # two neurons read the relevant bits
    w_out = torch.ones(2, 6)
    frac = relevant_fraction(w_in, k)
    assert frac[:2].min() > 0.9 and frac[2:].max() < 0.2
    c = circuit_norms(w_in, w_out, None, k)
    assert c["n_sparse"] == 2
    expect_sparse = float((w_in[:2].double().pow(2).sum() + w_out[:, :2].double().pow(2).sum()).sqrt())
    assert abs(c["sparse"] - expect_sparse) < 1e-9
    assert abs(c["sparse"] ** 2 / (c["sparse"] ** 2 + c["dense"] ** 2) - c["sparse_share"]) < 1e-12


def test_subnetwork_size_on_a_hand_worked_network() -> None:
    # 4 neurons by input norm 4 > 3 > 2 > 1; neuron 0 answers samples 0-1, neuron 1 samples 2-3, neuron 2 only adds
    # a small vote for class 0 everywhere, neuron 3 is silent: the two largest neurons are the circuit.
    w_in = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0]))
    neurons = torch.tensor([[1.0, 0, 1, 0], [1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]])
    out = torch.nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        out.weight.copy_(torch.tensor([[0.0, 0, 0.1, 0], [1, 1, 0, 0]]))  # class 1 <- neurons 0 and 1; class 0 <- neuron 2
    y = torch.tensor([1, 1, 1, 1])
    assert subnetwork_size(neurons, w_in, out, y) == 2  # neuron 0 alone gets samples 2-3 wrong (a 0-0 tie goes to class 0)
    wrong = torch.tensor([1, 1, 1, 0])  # the network is right on 3 of 4; neuron 0 alone too, on other samples
    assert subnetwork_size(neurons, w_in, out, wrong) == 1  # as in the paper, the accuracy is matched, not the predictions
    with torch.no_grad():
        out.weight[0, 2] = 2.0  # neuron 2 now outvotes the others: the network is wrong on every sample
    assert subnetwork_size(neurons, w_in, out, y) == 3  # neurons 0 + 1 are right on all 4 (more than the network): not a match


def test_subnetwork_size_matches_a_masked_forward_search_on_a_trained_mlp() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 2, (300, 12)).float() * 2 - 1
    y = (x[:, :3].prod(1) > 0).long()
    hidden, out = torch.nn.Linear(12, 64), torch.nn.Linear(64, 2)
    opt = torch.optim.AdamW([*hidden.parameters(), *out.parameters()], lr=1e-2, weight_decay=0.1)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(out(torch.relu(hidden(x))), y).backward()
        opt.step()
    neurons = torch.relu(hidden(x)).detach()
    full = int((out(neurons).argmax(1) == y).sum())
    order = hidden.weight.norm(dim=1).argsort(descending=True)
    for k in range(1, 65):  # the paper's linear search: mask all but the k largest-norm neurons and forward again
        mask = torch.zeros(64)
        mask[order[:k]] = 1.0
        if int((out(neurons * mask).argmax(1) == y).sum()) == full:
            break
    assert subnetwork_size(neurons, hidden.weight, out, y) == k
    assert 1 < k < 64  # neither trivial end: the search had something to find


def test_collapse_and_circuit_are_logged_during_training(tmp_path) -> None:
    parity: Config = apply_overrides(
        get_preset("parity"),
        {
            "task.n_bits": 12,
            "task.n_samples": 400,
            "model.width": 32,
            "steps": 20,
            "eval_every": 10,
            "analysis": "collapse,circuit",
            "analysis_every": 1,
            "threads": 1,
        },
    )
    train(parity, tmp_path / "p", progress=False)
    rows = [json.loads(line) for line in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 10, 20] and all("circuit/n_subnetwork" in r and "collapse/train" in r for r in rows)
    # The last row holds what the measures give on the final weights.
    from groklab.analysis.collapse import correct_gradient_zero_fraction
    from groklab.losses import make_loss, softmax_collapse_fraction

    model, data = load_model(load_run(tmp_path / "p")), build_task(parity.task, parity.split_seed)
    w_in, w_out = model.neuron_layers()
    x, y = data.x[data.train], data.y[data.train]
    with torch.no_grad():
        logits, neurons = model(x), model.neurons(x)
    expected = {f"circuit/{k}": v for k, v in circuit_norms(w_in.weight, w_out.weight, w_in.bias, parity.task.k_bits).items()}
    expected["circuit/n_subnetwork"] = subnetwork_size(neurons, w_in.weight, w_out, y)
    expected["collapse/train"] = softmax_collapse_fraction(logits, y)
    expected["collapse/train_own_loss"] = correct_gradient_zero_fraction(make_loss(parity.loss, parity.loss_dtype), logits, y)
    assert {key: rows[-1][key] for key in expected} == pytest.approx(expected, rel=1e-5)


def test_correct_gradient_zero_fraction_sees_collapse_under_the_runs_own_loss() -> None:
    from groklab.analysis.collapse import correct_gradient_zero_fraction as frac
    from groklab.losses import make_loss

    logits = torch.zeros(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    logits[torch.arange(4), y] = torch.tensor([30.0, 30.0, 30.0, 5.0])  # e^-30 is absorbed by 1 in float32, e^-5 is not
    assert frac(make_loss("cross_entropy", "float32"), logits, y) == 0.75
    assert frac(make_loss("cross_entropy", "float64"), logits, y) == 0.0  # float64 resolves 1 + e^-30
    assert frac(make_loss("stablemax", "float32"), logits, y) == 0.0  # StableMax's tail decays like 1/x, not e^-x
    big = torch.zeros(2, 5)
    big[:, 0] = 200.0  # even float64 absorbs e^-200
    assert frac(make_loss("cross_entropy", "float64"), big, torch.tensor([0, 0])) == 1.0
