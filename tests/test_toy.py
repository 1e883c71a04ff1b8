"""Liu et al. 2022's toy model, its addition task and the effective loss, on hand-worked cases."""

from __future__ import annotations

import pytest
import torch

from groklab.analysis.rqi import effective_loss
from groklab.config import Config, ModelConfig, OptimConfig, TaskConfig, UserError, validate
from groklab.data import build_task
from groklab.losses import make_loss
from groklab.models import build_model

TOY = ModelConfig(name="toy", d_model=1, width=200, depth=2, activation="tanh")


def toy_config(optim: OptimConfig | None = None) -> Config:
    task = TaskConfig(name="addition", p=10, train_frac=0.4, val_frac=0.2)
    return Config(task=task, model=TOY, optim=optim or OptimConfig(weight_decay=0.0), loss="target_mse")


def test_addition_task_has_55_unordered_pairs_of_p_10() -> None:
    data = build_task(toy_config().task, 0)
    assert len(data.y) == 55 and data.n_classes == 19 and data.vocab_size == 10
    a, b = data.x[:, 0], data.x[:, 1]
    assert bool((a <= b).all()) and torch.equal(data.y, a + b)
    assert len(data.train) == 22  # 40% of 55: Liu et al.'s critical fraction


def test_forward_is_the_negative_distance_to_each_target() -> None:
    data = build_task(toy_config().task, 0)
    model = build_model(TOY, data, seed=0)
    with torch.no_grad():
        model.embed.weight.copy_(torch.arange(10.0)[:, None])  # E_k = k
    x = torch.tensor([[2, 3]])
    out = model.out(model.neurons(x))  # the decoder reads E_2 + E_3 = 5
    with torch.no_grad():
        same = model.out(torch.tanh(model.hidden[1](torch.tanh(model.hidden[0](torch.tensor([[5.0]]))))))
    assert torch.allclose(out, same)
    logits = model(x)
    assert logits.shape == (1, 19)
    assert torch.allclose(logits[0], -(out[0] - model.targets).pow(2).mean(-1))  # (19,) one per class target
    # target_mse is the MSE to the right class's target: Liu et al.'s loss
    loss = make_loss("target_mse", "float32")(logits.detach(), torch.tensor([5]))
    assert float(loss) == pytest.approx(float((out[0] - model.targets[5]).pow(2).mean().detach()))


def test_targets_are_the_tasks_not_the_seeds() -> None:
    data = build_task(toy_config().task, 0)
    a, b = build_model(TOY, data, seed=0), build_model(TOY, data, seed=1)
    assert torch.equal(a.targets, b.targets)
    assert not torch.equal(a.embed.weight, b.embed.weight)
    assert "targets" not in dict(a.named_parameters())  # never trained, never decayed, never scaled by init_scale


def test_effective_loss_hand_worked() -> None:
    linear = torch.arange(4.0)[:, None]  # E_k = k: every parallelogram holds
    pairs = torch.tensor([[0, 3], [1, 2], [0, 2], [1, 1]])
    assert effective_loss(linear, pairs) == 0.0
    # E = (0, 1, 3): centered (−4/3, −1/3, 5/3), Z₀ = 42/9; one training parallelogram {0,2} vs {1,1}: |0 + 3 − 1 − 1|² = 1
    emb = torch.tensor([[0.0], [1.0], [3.0]])
    assert effective_loss(emb, torch.tensor([[0, 2], [1, 1], [0, 1]])) == pytest.approx(9 / 42)
    assert effective_loss(5 * emb + 7, torch.tensor([[0, 2], [1, 1]])) == pytest.approx(9 / 42)  # shift and scale free
    assert effective_loss(emb, torch.tensor([[0, 1], [1, 2]])) == 0.0  # no two training pairs share a sum


def test_the_toy_model_needs_its_loss_and_a_token_task() -> None:
    with pytest.raises(UserError, match="target_mse"):
        validate(Config(task=TaskConfig(name="addition", p=10), model=TOY))
    with pytest.raises(UserError, match="target_mse"):
        validate(Config(loss="target_mse"))  # the MLP's logits are not distances
    with pytest.raises(UserError, match="expected mlp"):
        validate(Config(task=TaskConfig(name="parity"), model=TOY, loss="target_mse"))
    validate(toy_config(optim=OptimConfig(embed_lr=1e-3, lr=1e-4)))  # separate representation and decoder lr
