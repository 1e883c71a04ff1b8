"""Liu et al. 2022's toy model, its addition task and the effective loss, on hand-worked cases."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from groklab.analysis.rqi import effective_loss, inferable, representation_freedom
from groklab.config import Config, ModelConfig, OptimConfig, TaskConfig, UserError, validate
from groklab.data import build_task
from groklab.experiments.recipes.toy import unique_linear
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


def test_representation_freedom_hand_worked() -> None:
    # {0,3} and {1,2} share the sum 3: one equation E0 + E3 = E1 + E2 on 4 unknowns leaves 3 free directions, so a
    # representation other than a line fits too: E = (0, 0, 1, 1) gives 0 + 1 = 0 + 1
    assert representation_freedom(torch.tensor([[0, 3], [1, 2]]), 4) == 3
    # adding {1,3} and {2,2} (sum 4: E1 + E3 = 2·E2) leaves only translation and scale: the line is the only fit
    assert representation_freedom(torch.tensor([[0, 3], [1, 2], [1, 3], [2, 2]]), 4) == 2
    assert representation_freedom(torch.tensor([[0, 1], [1, 2]]), 4) == 4  # no two pairs share a sum: no equation
    assert representation_freedom(torch.triu_indices(10, 10).T, 10) == 2  # every pair: Liu et al.'s full table
    assert representation_freedom(torch.tensor([[0, 2], [1, 1]]), 3) == 2  # a doubled operand: E0 + E2 = 2·E1


def test_inferable_pairs_hand_worked() -> None:
    # E0 + E2 = 2·E1 alone: held-out (1, 2) shares its sum with training (0, 3), but E1 + E2 = E0 + E3 does not follow
    # (E = (0, 0, 0, 1) fits the training equation and breaks it), so a fitted model need not answer (1, 2) right
    loose = torch.tensor([[0, 2], [1, 1], [0, 3]])
    assert inferable(loose, torch.tensor([[1, 2]]), 4).tolist() == [False]
    # with (1, 3) and (2, 2) also in training (E1 + E3 = 2·E2) only lines fit, and every line gives E1 + E2 = E0 + E3
    fixed = torch.tensor([[0, 2], [1, 1], [0, 3], [1, 3], [2, 2]])
    assert inferable(fixed, torch.tensor([[1, 2]]), 4).tolist() == [True]
    # an answer no training pair has (sum 0, 1, 5, 6 here): never inferable, the decoder never saw its target
    assert inferable(fixed, torch.tensor([[0, 0], [0, 1], [2, 3], [3, 3]]), 4).tolist() == [False] * 4


def test_share_of_training_sets_that_fix_the_linear_representation() -> None:
    share = {f: sum(v) / len(v) for f, v in unique_linear(10, draws=40).items()}
    assert len(share) == 54 and all(len(v) == 40 for v in unique_linear(10, draws=40).values())
    # k training pairs give equations spanned by k − 1 differences of pair vectors: fixing 8 directions needs k >= 9
    assert all(s == 0 for f, s in share.items() if f * 55 < 8.5)
    # without one pair, 54 of 55 still fix it (every sum but the extremes has several pairs): always
    assert share[54 / 55] == 1.0
    assert unique_linear(10, draws=40) == unique_linear(10, draws=40)  # seeded


def test_uniform_init_draws_every_embedding_from_a_unit_interval() -> None:
    data = build_task(toy_config().task, 0)
    torch_default = build_model(TOY, data, seed=0)
    uniform = build_model(dataclasses.replace(TOY, init="uniform"), data, seed=0)
    assert (
        float(uniform.embed.weight.detach().abs().max()) <= 0.5 < float(torch_default.embed.weight.detach().abs().max())
    )  # N(0, 1) by default
    assert torch.equal(uniform.out.weight, torch_default.out.weight)  # the decoder keeps PyTorch's default
    with pytest.raises(UserError, match="model.init='normal' is not valid for model.name='toy'"):
        validate(Config(task=TaskConfig(name="addition", p=10), model=dataclasses.replace(TOY, init="normal"), loss="target_mse"))
