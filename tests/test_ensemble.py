"""Seeds as one vmapped ensemble: member k must be the single run with seed config.seed + k."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from conftest import tiny

from groklab.cli import main
from groklab.config import Config, UserError
from groklab.ensemble import parse_seeds, train_ensemble
from groklab.runio import load_run
from groklab.train import train

SEEDS = 3


def ensemble_config(model: str) -> Config:
    return tiny(
        Config(),
        {
            "task.p": 11, "model.name": model, "model.d_model": 16, "model.n_heads": 2, "model.d_mlp": 32, "model.width": 32,
            "optim.batch_size": 16, "steps": 30, "eval_every": 10, "seed": 3, "checkpoint_every": 7,
        },
    )  # fmt: skip


def metric_gap(a: list[dict], b: list[dict]) -> float:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    return max(abs(ra[key] - rb[key]) for ra, rb in zip(a, b, strict=True) for key in ra if key != "time_s")


@pytest.mark.parametrize("model", ["mlp", "power"])
def test_member_k_matches_single_run_with_seed_k(tmp_path: Path, model: str) -> None:
    config = ensemble_config(model)
    summaries = train_ensemble(config, tmp_path / "ens", SEEDS, progress=False)
    assert [s["seed"] for s in summaries] == [3, 4, 5]
    for k in range(SEEDS):
        single = train(dataclasses.replace(config, seed=config.seed + k), tmp_path / f"single-{k}", progress=False)
        member, alone = load_run(tmp_path / "ens" / f"seed-{k}"), load_run(tmp_path / f"single-{k}")
        assert member.config == alone.config
        assert metric_gap(member.metrics, alone.metrics) < 1e-5
        exact_keys = ("status", "steps", "steps_to_train_acc_99", "steps_to_val_acc_99", "grokked", "seed", "split_seed")
        assert {key: member.summary[key] for key in exact_keys} == {key: single[key] for key in exact_keys}
        files = {p.name for p in (tmp_path / "ens" / f"seed-{k}").rglob("*")}
        assert files == {p.name for p in (tmp_path / f"single-{k}").rglob("*")}
    # The members' weights differ from each other (they really are different seeds).
    w0, w1 = (load_run(tmp_path / "ens" / f"seed-{k}").load_model().state_dict() for k in (0, 1))
    assert any(not (w0[name] == w1[name]).all() for name in w0)


def test_member_checkpoint_resumes_as_a_single_run(tmp_path: Path) -> None:
    """A member's state checkpoint has train()'s layout: dropping the last one, train() resumes and agrees."""
    config = ensemble_config("mlp")
    train_ensemble(config, tmp_path, 2, progress=False)
    run_dir = tmp_path / "seed-1"
    before = load_run(run_dir).metrics
    for name in ("state-000000030.pt", "state-000000030.pt.sha256"):
        (run_dir / "checkpoints" / name).unlink()
    (run_dir / "summary.json").unlink()
    summary = train(dataclasses.replace(config, seed=4), run_dir, progress=False)
    assert summary["status"] == "finished" and summary["steps"] == 30
    assert metric_gap(load_run(run_dir).metrics, before) < 1e-5


@pytest.mark.parametrize("bad", ["0", "-2", "1.5", "many"])
def test_bad_seed_counts_are_one_line_errors(bad: str) -> None:
    with pytest.raises(UserError, match="--seeds"):
        parse_seeds(bad)


def test_cli_seeds_writes_one_run_dir_per_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "runs"
    args = ["train", "--preset", "mlp", "--out", str(out), "--seeds", "2", "--quiet", "--task.p", "7", "--steps", "4"]
    assert main([*args, "--threads", "1", "--device", "cpu", "--eval-every", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-0", "seed-1"]
    assert [load_run(out / f"seed-{k}").config.seed for k in (0, 1)] == [0, 1]
    assert main(["train", "--out", str(tmp_path / "x"), "--seeds", "0"]) == 2
    assert "--seeds" in capsys.readouterr().err
