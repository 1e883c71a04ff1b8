"""Seeds as one vmapped ensemble: member k must be the single run with seed config.seed + k."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import tiny
from test_engine import rows_match

from groklab.cli import main
from groklab.config import Config, apply_overrides
from groklab.data import build_task
from groklab.models import load_model
from groklab.runio import load_run
from groklab.steppers import Ensemble
from groklab.train import train, train_ensemble

SEEDS = 3


def ensemble_config(model: str) -> Config:
    return tiny(
        Config(),
        {
            "task.p": 11, "model.name": model, "model.d_model": 16, "model.n_heads": 2, "model.d_mlp": 32, "model.width": 32,
            "optim.batch_size": 16, "steps": 30, "eval_every": 10, "seed": 3, "checkpoint_every": 7,
        },
    )  # fmt: skip


@pytest.mark.parametrize("model", ["mlp", "transformer"])
def test_member_k_matches_single_run_with_seed_k(tmp_path: Path, model: str) -> None:
    config = ensemble_config(model)
    summaries = train_ensemble(config, tmp_path / "ens", SEEDS, progress=False)
    assert [s["seed"] for s in summaries] == [3, 4, 5]
    for k in range(SEEDS):
        single = train(dataclasses.replace(config, seed=config.seed + k), tmp_path / f"single-{k}", progress=False)
        member, alone = load_run(tmp_path / "ens" / f"seed-{k}"), load_run(tmp_path / f"single-{k}")
        assert member.config == alone.config
        rows_match(member.metrics, alone.metrics, rel=0)  # same steps and keys both ways, values within 1e-5
        exact_keys = ("status", "steps", "steps_to_train_acc_99", "steps_to_val_acc_99", "grokked", "seed", "split_seed")
        assert {key: member.summary[key] for key in exact_keys} == {key: single[key] for key in exact_keys}
        files = {p.name for p in (tmp_path / "ens" / f"seed-{k}").rglob("*")}
        assert files == {p.name for p in (tmp_path / f"single-{k}").rglob("*")}
    # The members' weights differ from each other (they really are different seeds).
    w0, w1 = (load_model(load_run(tmp_path / "ens" / f"seed-{k}")).state_dict() for k in (0, 1))
    assert any(not (w0[name] == w1[name]).all() for name in w0)


def test_transformer_members_share_prefixes_found_outside_vmap() -> None:
    """The members' distinct `a op` prefixes are found once for all batches; each member's vmapped loss equals the loss of
    its own weights through the plain full-sequence computation."""
    config = ensemble_config("transformer")
    data = build_task(config.task, config.split_seed)
    ens = Ensemble([dataclasses.replace(config, seed=config.seed + k) for k in range(SEEDS)], data, torch.device("cpu"))
    idx = torch.stack([s.next() for s in ens.samplers])  # (N, batch)
    x, y = data.x[idx], data.y[idx]
    tokens, inverse = ens.prefixes(x)  # (u, 2), (N, batch)
    assert inverse.shape == x.shape[:2] and torch.equal(tokens[inverse], x[..., :2])
    assert len(tokens) < x.shape[0] * x.shape[1]  # prefixes repeat across the batches, so fewer rows run
    losses = ens.member_losses(dict(zip(ens.names, ens.stacked, strict=True)), ens.buffers, (x, y), (tokens, inverse))
    for k in range(SEEDS):
        model = ens.member(k)
        torch.testing.assert_close(losses[k], ens.loss_fn(model.sequence_logits(x[k])[:, -1], y[k]), atol=1e-5, rtol=1e-5)


def test_member_checkpoint_resumes_as_a_single_run(tmp_path: Path) -> None:
    """A member's state checkpoint has train()'s layout: dropping the last one, train() resumes and agrees."""
    config = ensemble_config("mlp")
    train_ensemble(config, tmp_path, 2, progress=False)
    before, after = drop_last_state_and_resume(dataclasses.replace(config, seed=4), tmp_path / "seed-1")
    rows_match(after, before, rel=0)


def drop_last_state_and_resume(config: Config, run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Delete the final checkpoint and summary of a finished run, resume it with train(); metrics (before, after)."""
    before = load_run(run_dir).metrics
    for name in ("state-000000030.pt", "state-000000030.pt.sha256"):
        (run_dir / "checkpoints" / name).unlink()
    (run_dir / "summary.json").unlink()
    summary = train(config, run_dir, progress=False)
    assert summary["status"] == "finished" and summary["steps"] == 30
    return before, load_run(run_dir).metrics


@pytest.mark.parametrize(
    "overrides",
    [
        {"optim.grokfast": "ema", "optim.grokfast_lamb": 2.0},
        {"optim.grokfast": "ma", "optim.grokfast_window": 4, "optim.grokfast_lamb": 5.0},
        {"optim.wd_target": "init", "optim.weight_decay": 1.0},
    ],
    ids=["grokfast-ema", "grokfast-ma", "wd-towards-init"],
)
def test_elementwise_interventions_match_single_runs_and_resume(tmp_path: Path, overrides: dict) -> None:
    """Grokfast and weight decay towards init act elementwise, so the ensemble reproduces them, checkpoints included."""
    config = apply_overrides(ensemble_config("mlp"), overrides)
    train_ensemble(config, tmp_path / "ens", 2, progress=False)
    for k in range(2):
        train(dataclasses.replace(config, seed=config.seed + k), tmp_path / f"single-{k}", progress=False)
        rows_match(load_run(tmp_path / "ens" / f"seed-{k}").metrics, load_run(tmp_path / f"single-{k}").metrics, rel=0)
    before, after = drop_last_state_and_resume(dataclasses.replace(config, seed=config.seed + 1), tmp_path / "ens" / "seed-1")
    rows_match(after, before, rel=0)


@pytest.mark.parametrize("bad", ["0", "-2", "1.5", "many"])
def test_bad_seed_counts_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str) -> None:
    assert main(["train", "--out", str(tmp_path / "x"), "--seeds", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--seeds" in err and repr(bad) in err
    assert not (tmp_path / "x").exists()


def test_cli_seeds_writes_one_run_dir_per_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    args = ["train", "--preset", "mlp", "--out", str(out), "--seeds", "2", "--quiet", "--task.p", "7", "--steps", "4"]
    assert main([*args, "--threads", "1", "--device", "cpu", "--eval-every", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-0", "seed-1"]
    assert [load_run(out / f"seed-{k}").config.seed for k in (0, 1)] == [0, 1]
    assert main(["train", "--out", str(tmp_path / "x"), "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
