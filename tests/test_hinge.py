"""The multi-class hinge loss on hand-worked cases, its target mask, and an ensemble step with it."""

from __future__ import annotations

import pytest
import torch

from groklab.losses import hinge, make_loss


def test_hand_worked_three_classes() -> None:
    logits = torch.tensor([[2.0, 0.5, 1.5], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, 2])
    # Sample 0, class 0 correct (2.0): max(0, 1 − 2 + 0.5) = 0, max(0, 1 − 2 + 1.5) = 0.5 → 0.5 / 3.
    # Sample 1, all equal: each wrong class costs the whole margin 1 → 2 / 3.
    per_sample = hinge(logits, y, reduction="none")
    assert per_sample.tolist() == pytest.approx([0.5 / 3, 2 / 3])
    assert float(hinge(logits, y)) == pytest.approx((0.5 / 3 + 2 / 3) / 2)
    assert float(hinge(logits, y)) == pytest.approx(float(torch.nn.functional.multi_margin_loss(logits, y)))


def test_two_classes_is_the_binary_hinge_halved() -> None:
    # Parity: two classes; a margin d = x_y − x_other costs max(0, 1 − d) / 2.
    logits = torch.tensor([[3.0, 1.0], [0.2, 0.0], [-1.0, 1.0]])
    y = torch.tensor([0, 0, 0])
    assert hinge(logits, y, reduction="none").tolist() == pytest.approx([0.0, 0.4, 1.5])


def test_gradient_only_from_violated_margins() -> None:
    logits = torch.tensor([[2.0, 0.5, 1.5]], requires_grad=True)
    hinge(logits, torch.tensor([0])).backward()
    assert logits.grad is not None
    assert logits.grad[0].tolist() == pytest.approx([-1 / 3, 0.0, 1 / 3])  # class 1 is outside the margin


def test_masked_sequence_positions_and_float64() -> None:
    loss = make_loss("hinge", "float64")
    logits = torch.tensor([[[2.0, 0.5, 1.5], [0.0, 0.0, 0.0]]])  # (batch 1, seq 2, classes 3)
    y = torch.tensor([[0, 2]])
    assert float(loss(logits, y, torch.tensor([[True, False]]))) == pytest.approx(0.5 / 3)
    assert loss(logits[0], y[0]).dtype == torch.float64


def test_vmapped_over_an_ensemble() -> None:
    logits = torch.randn(4, 8, 3)  # (members, batch, classes)
    y = torch.randint(0, 3, (8,))
    batched = torch.func.vmap(lambda z: hinge(z, y))(logits)
    assert batched.tolist() == pytest.approx([float(hinge(z, y)) for z in logits])
