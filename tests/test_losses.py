"""Losses: StableMax against its formula, its cross-entropy and gradients, and the softmax-collapse measure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from groklab.losses import make_loss, softmax_collapse_fraction, stablemax, stablemax_cross_entropy


def s_by_hand(x: float) -> float:
    return x + 1 if x >= 0 else 1 / (1 - x)


def test_stablemax_probabilities_match_the_formula_and_sum_to_one() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0, -3.0], [0.5, 10.0, -0.25, 100.0]], dtype=torch.float64)
    probs = stablemax(logits)
    for row, p in zip(logits.tolist(), probs, strict=True):
        s = [s_by_hand(x) for x in row]
        assert p.tolist() == pytest.approx([v / sum(s) for v in s], rel=1e-12)
    assert torch.allclose(probs.sum(-1), torch.ones(2, dtype=torch.float64))
    # On random logits of both signs too.
    random_probs = stablemax(torch.randn(64, 97, generator=torch.Generator().manual_seed(0)) * 5)
    assert torch.allclose(random_probs.sum(-1), torch.ones(64), atol=1e-6)
    assert bool((random_probs > 0).all())


def test_stablemax_cross_entropy_is_minus_log_probability_of_the_label() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [-4.0, 3.0, 0.5]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    expected = -(stablemax(logits)[torch.arange(2), y].log()).mean()
    assert float(stablemax_cross_entropy(logits, y)) == pytest.approx(float(expected), rel=1e-12)
    assert float(make_loss("stablemax", "float64")(logits.float(), y)) == pytest.approx(float(expected), rel=1e-6)


def test_stablemax_gradient_is_finite_and_never_collapses_where_softmax_does() -> None:
    logits = torch.tensor([[1000.0, -50.0, 0.0, -1e6]], requires_grad=True)
    y = torch.tensor([0])
    stablemax_cross_entropy(logits, y).backward()
    assert logits.grad is not None and bool(torch.isfinite(logits.grad).all())
    assert bool((logits.grad != 0).any())  # StableMax still pushes on this sample ...
    assert softmax_collapse_fraction(logits.detach(), y) == 1.0  # ... where float32 softmax gives nothing at all


def test_collapse_fraction_is_zero_for_moderate_logits_and_one_for_huge_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 97, generator=gen) * 3  # (n, n_classes)
    y = torch.randint(0, 97, (200,), generator=gen)
    assert softmax_collapse_fraction(logits, y) == 0.0
    confident = logits.clone()
    confident[torch.arange(200), y] = 1e3  # the label's logit far above the rest: softmax rounds to one-hot
    assert softmax_collapse_fraction(confident, y) == 1.0
    half = torch.where((torch.arange(200) < 100)[:, None], confident, logits)
    assert softmax_collapse_fraction(half, y) == 0.5
    # Confidently wrong is not collapse: the gradient is as large as it gets.
    assert softmax_collapse_fraction(confident, (y + 1) % 97) == 0.0


def test_collapse_fraction_measures_float32_even_for_float64_logits() -> None:
    """A lead of 120 underflows exp() in float32 (exact one-hot) but not in float64."""
    logits = torch.zeros(1, 10, dtype=torch.float64)
    logits[0, 3] = 120.0
    y = torch.tensor([3])
    assert softmax_collapse_fraction(logits, y) == 1.0
    grad64 = torch.autograd.grad(F.cross_entropy(logits.requires_grad_(True), y), logits)[0]
    assert bool((grad64 != 0).any())


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_masked_sequence_loss_is_the_mean_over_real_tokens_only(dtype: str) -> None:
    """Sequence A has one real token (loss log 4/3), B three (log 2 each); every padded position would cost 200."""
    pad = torch.tensor([100.0, -100.0])  # target 1 under these logits: cross-entropy 200
    logits = torch.stack(
        [
            torch.stack([torch.tensor([0.0, -torch.log(torch.tensor(3.0))]), pad, pad]),  # target 0: log(1 + 1/3)
            torch.zeros(3, 2),  # log 2 at every position
        ]
    )  # (2 sequences, 3 positions, 2 classes)
    y = torch.tensor([[0, 1, 1], [0, 1, 0]])
    mask = torch.tensor([[True, False, False], [True, True, True]])
    expected = (torch.log(torch.tensor(4 / 3)) + 3 * torch.log(torch.tensor(2.0))) / 4
    assert float(make_loss("cross_entropy", dtype)(logits, y, mask)) == pytest.approx(float(expected), rel=1e-6)
    every = (torch.log(torch.tensor(4 / 3)) + 2 * 200 + 3 * torch.log(torch.tensor(2.0))) / 6  # padding counted
    assert float(make_loss("cross_entropy", dtype)(logits, y, torch.ones_like(mask))) == pytest.approx(float(every), rel=1e-6)
