"""One engine: every option means the same for one run and for a --seeds ensemble (or is refused in one line), an
ensemble resumes from its members' checkpoints, early stopping fires where its rule says, and sequence tasks (targets
at many positions under a mask, task-defined splits and scores) train in the same loop."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import tiny
from test_data import write_mnist

from groklab.cli import main
from groklab.config import Config, apply_overrides, leaf_fields
from groklab.data import Dataset
from groklab.errors import UserError
from groklab.presets import get_preset
from groklab.runio import RunDir, checkpoint_steps, load_run, read_metrics
from groklab.steppers import ENSEMBLE_REFUSED, Ensemble, Single
from groklab.train import Hook, fit, train, train_ensemble, train_pack

SMALL = {
    "task.p": 7, "model.d_model": 8, "model.width": 16, "model.depth": 1, "model.n_heads": 2, "model.d_mlp": 16,
    "optim.batch_size": 8, "steps": 12, "eval_every": 4, "seed": 1,
}  # fmt: skip
TRANSFORMER = {"model.name": "transformer", "model.n_layers": 1}
PARITY = {"task.name": "parity", "task.n_bits": 8, "task.k_bits": 2, "task.n_samples": 64}
MNIST = "<mnist>"  # replaced by a directory of IDX files the test writes
LM = {"model.name": "lm", "model.n_layers": 1}
DYCK = {
    "task.name": "dyck", **LM, "task.n_brackets": 2, "task.max_depth": 3, "task.max_len": 16,
    "task.train_size": 32, "task.eval_size": 8, "task.gen_size": 8,
}  # fmt: skip

OPTIONS: dict[str, dict[str, Any]] = {
    "task.name": PARITY,
    "task.op": {"task.op": "x*y"},
    "task.p": {"task.p": 11},
    "task.train_frac": {"task.train_frac": 0.6},
    "task.val_frac": {"task.val_frac": 0.2},
    "task.n_bits": {**PARITY, "task.n_bits": 10},
    "task.k_bits": {**PARITY, "task.k_bits": 3},
    "task.n_samples": {**PARITY, "task.n_samples": 80},
    "task.train_size": {"task.name": "digits", "task.train_size": 100, "task.val_frac": 0.2},
    "task.data_dir": {"task.name": "mnist", "task.data_dir": MNIST, "task.train_size": 20, "task.val_frac": 0.2},
    "task.eval_size": {**DYCK, "task.eval_size": 6},
    "task.gen_size": {**DYCK, "task.gen_size": 6},
    "task.n_brackets": {**DYCK, "task.n_brackets": 3},
    "task.max_depth": {**DYCK, "task.max_depth": 4},
    "task.min_distance": {**DYCK, "task.min_distance": 3},
    "task.max_len": {**DYCK, "task.max_len": 20},
    "model.name": TRANSFORMER,
    "model.d_model": {"model.d_model": 16},
    "model.n_layers": {**TRANSFORMER, "model.n_layers": 2},
    "model.n_heads": {**TRANSFORMER, "model.n_heads": 4},
    "model.d_mlp": {**TRANSFORMER, "model.d_mlp": 8},
    "model.width": {"model.width": 24},
    "model.depth": {"model.depth": 2},
    "model.activation": {"model.activation": "gelu"},
    "model.norm": {**TRANSFORMER, "model.norm": "pre"},
    "model.mlp_bias": {**TRANSFORMER, "model.mlp_bias": True},
    "model.init": {**TRANSFORMER, "model.init": "normal"},
    "model.init_scale": {"model.init_scale": 2.0},
    "model.target_dim": {"task.name": "addition", "task.p": 10, "model.name": "toy", "model.d_model": 2, "loss": "target_mse", "model.target_dim": 6},
    "optim.name": {"optim.name": "sgd", "optim.lr": 0.1},
    "optim.lr": {"optim.lr": 3e-3},
    "optim.embed_lr": {"optim.embed_lr": 1e-2},
    "optim.beta1": {"optim.beta1": 0.8},
    "optim.beta2": {"optim.beta2": 0.99},
    "optim.weight_decay": {"optim.weight_decay": 0.1},
    "optim.warmup_steps": {"optim.warmup_steps": 3},
    "optim.batch_size": {"optim.batch_size": 0},
    "optim.last_batch": {**TRANSFORMER, "optim.last_batch": "keep", "optim.batch_size": 5},  # 24 = 4 × 5 + 4
    "optim.grokfast": {"optim.grokfast": "ema"},
    "optim.grokfast_alpha": {"optim.grokfast": "ema", "optim.grokfast_alpha": 0.9},
    "optim.grokfast_lamb": {"optim.grokfast": "ema", "optim.grokfast_lamb": 1.0},
    "optim.grokfast_window": {"optim.grokfast": "ma", "optim.grokfast_window": 3},
    "optim.wd_target": {"optim.wd_target": "init"},
    "optim.grad_clip": {"optim.grad_clip": 0.05, "optim.lr": 0.05},
    "optim.decay_steps": {"optim.warmup_steps": 2, "optim.decay_steps": 8},
    "steps": {"steps": 9},
    "seed": {"seed": 5},
    "split_seed": {"split_seed": 2},
    "loss": {"loss": "stablemax"},
    "loss_dtype": {"loss_dtype": "float64"},
    "eval_every": {"eval_every": 3},
    "eval_spacing": {"eval_spacing": "log"},
    "eval_train_size": {"eval_train_size": 10},
    "stop_patience": {"stop_patience": 4, "optim.lr": 0.05, "optim.weight_decay": 0.0, "steps": 40},
    "checkpoint_every": {"checkpoint_every": 5},
    "checkpoint_seconds": {"checkpoint_seconds": 1e-6},
    "device": {"device": "cpu"},
    "threads": {"threads": 2},
    "analysis": {"analysis": "fourier,norms,rqi,sharpness,collapse", "task.op": "x+y"},
    "analysis_every": {"analysis": "norms", "analysis_every": 2},
    "log": {"log": "tensorboard"},
}
"""Every Config field -> a run that sets it (the ensemble must reproduce its single runs), unless ENSEMBLE_REFUSED."""


def test_every_field_is_tested_for_ensembles_or_refused() -> None:
    assert set(OPTIONS) | set(ENSEMBLE_REFUSED) == set(leaf_fields())
    assert not set(OPTIONS) & set(ENSEMBLE_REFUSED)


def rows_match(member: list[dict[str, Any]], single: list[dict[str, Any]], rel: float = 1e-4) -> None:
    """The same evaluation steps with the same keys (both ways) and the same values up to float rounding."""
    assert [r["step"] for r in member] == [r["step"] for r in single]
    for a, b in zip(member, single, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys() - {"time_s"}:
            assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-5), (a["step"], key)


@pytest.mark.parametrize("field", sorted(OPTIONS))
def test_option_means_the_same_for_an_ensemble(tmp_path: Path, field: str) -> None:
    overrides = dict(OPTIONS[field])
    if overrides.get("task.data_dir") == MNIST:
        write_mnist(tmp_path, 60, gz=False)
        overrides["task.data_dir"] = str(tmp_path)
    config = tiny(Config(), {**SMALL, **overrides})
    summaries = train_ensemble(config, tmp_path / "ens", 2, progress=False)
    for k in range(2):
        single = train(dataclasses.replace(config, seed=config.seed + k), tmp_path / f"single-{k}", progress=False)
        member = load_run(tmp_path / "ens" / f"seed-{k}")
        rows_match(member.metrics, load_run(tmp_path / f"single-{k}").metrics)
        same = ("status", "steps", "steps_to_train_acc_99", "steps_to_val_acc_99", "grokked", "seed", "split_seed", "stopped_early")
        assert {key: summaries[k].get(key) for key in same} == {key: single.get(key) for key in same}
    if field == "log":
        assert all((tmp_path / "ens" / f"seed-{k}" / "tensorboard").is_dir() for k in range(2))


@pytest.mark.parametrize("field", sorted(ENSEMBLE_REFUSED))
def test_options_an_ensemble_cannot_reproduce_are_refused(tmp_path: Path, field: str) -> None:
    value = 0.1 if field in ("model.dropout", "optim.norm_constraint", "optim.grad_noise") else True
    config = apply_overrides(tiny(Config(), SMALL), {field: value})
    with pytest.raises(UserError, match=rf"^{field}={value} is not valid with --seeds: "):
        train_ensemble(config, tmp_path / "ens", 2, progress=False)
    assert not (tmp_path / "ens").exists()


def test_cli_seeds_with_analysis_logs_it_in_every_member(tmp_path: Path) -> None:
    """`groklab train --preset mlp --seeds 2 --analysis fourier` (shrunk) logs fourier/* keys in every member's rows."""
    out = tmp_path / "D"
    small = ["--task.p", "11", "--steps", "20", "--eval-every", "5", "--analysis-every", "1", "--threads", "1", "--device", "cpu"]
    assert main(["train", "--preset", "mlp", "--seeds", "2", "--analysis", "fourier", "--out", str(out), "--quiet", *small]) == 0
    for k in range(2):
        rows = read_metrics(out / f"seed-{k}" / "metrics.jsonl")
        assert rows and all({"fourier/gini", "fourier/n_key", "fourier/restricted_loss", "fourier/excluded_loss"} <= r.keys() for r in rows)


def untimed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time_s"} for r in rows]


def drop_newest_state(run_dir: Path) -> None:
    newest = sorted((run_dir / "checkpoints").glob("state-*.pt"))[-1]
    newest.unlink()
    newest.with_name(newest.name + ".sha256").unlink()


@pytest.mark.parametrize("members_dropped", [(0, 1), (1,)], ids=["all-newest", "one-newest"])
def test_an_interrupted_ensemble_resumes_exactly(tmp_path: Path, members_dropped: tuple[int, ...]) -> None:
    """Losing the newest checkpoints (of every member, or of one: the other then resumes from the older step they
    share) and the summaries, the ensemble trains again from there to the very same metrics."""
    config = tiny(Config(), {**SMALL, "steps": 20, "checkpoint_every": 7, "model.name": "transformer", "model.n_layers": 2})
    train_ensemble(config, tmp_path, 2, progress=False)
    before = [load_run(tmp_path / f"seed-{k}").metrics for k in range(2)]
    for k in range(2):
        (tmp_path / f"seed-{k}" / "summary.json").unlink()
    for k in members_dropped:
        drop_newest_state(tmp_path / f"seed-{k}")
    summaries = train_ensemble(config, tmp_path, 2, progress=False)
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    for k in range(2):
        assert untimed(load_run(tmp_path / f"seed-{k}").metrics) == untimed(before[k])


class Crash(Hook):
    def stepped(self, step: int, rows: list[dict[str, Any]] | None) -> None:
        raise RuntimeError("killed")


def test_an_ensemble_stopped_while_writing_its_first_checkpoints_starts_again(tmp_path: Path) -> None:
    """Killed after member 0 wrote its step-0 state and before member 1 wrote its own (no member has a row yet): the
    members hold no step in common, and the resume is a fresh start to the same metrics as an uninterrupted run."""
    config = tiny(Config(), {**SMALL, "steps": 12, "checkpoint_every": 5})
    with pytest.raises(RuntimeError, match="killed"):
        train_ensemble(config, tmp_path / "killed", 2, progress=False, hooks=[Crash()])
    for path in (tmp_path / "killed" / "seed-1" / "checkpoints").iterdir():
        path.unlink()
    assert checkpoint_steps(tmp_path / "killed" / "seed-0" / "checkpoints", "state") == [0]
    summaries = train_ensemble(config, tmp_path / "killed", 2, progress=False)
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    train_ensemble(config, tmp_path / "whole", 2, progress=False)
    for k in range(2):
        assert untimed(load_run(tmp_path / "killed" / f"seed-{k}").metrics) == untimed(load_run(tmp_path / "whole" / f"seed-{k}").metrics)


class StatesAtStart(Hook):
    """Each member's state checkpoint steps when training (re)starts, after the resume has rewound the runs."""

    def __init__(self, runs: list[Path]) -> None:
        self.runs = runs
        self.seen: list[list[int]] | None = None

    def stepped(self, step: int, rows: list[dict[str, Any]] | None) -> None:
        if self.seen is None:
            self.seen = [checkpoint_steps(run / "checkpoints", "state") for run in self.runs]


class NewestState(Hook):
    """The newest state checkpoint of a run after each optimizer step (before that step's own checkpoint)."""

    def __init__(self, run: Path) -> None:
        self.run, self.seen = run, {}

    def stepped(self, step: int, rows: list[dict[str, Any]] | None) -> None:
        if step:
            self.seen.setdefault(step, checkpoint_steps(self.run / "checkpoints", "state")[-1])  # its first call: right after the step


@pytest.mark.parametrize(("seconds", "expected"), [(1e-6, {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5}), (1e6, dict.fromkeys(range(1, 7), 0))])
def test_checkpoint_seconds_saves_a_state_once_that_much_time_has_passed(tmp_path: Path, seconds: float, expected: dict[int, int]) -> None:
    config = tiny(Config(), {**SMALL, "steps": 6, "checkpoint_every": 1000, "checkpoint_seconds": seconds})
    hook = NewestState(tmp_path / "run")
    train(config, tmp_path / "run", progress=False, hooks=[hook])
    assert hook.seen == expected


def test_a_resume_from_an_older_shared_step_drops_the_newer_states(tmp_path: Path) -> None:
    """Member 1 lost its newest state, so both resume from the older step they share; member 0's newer state is from
    the stretch trained again and is dropped (kept, it would be one of the two newest, and a second interruption
    could leave the members with no step in common)."""
    config = tiny(Config(), {**SMALL, "steps": 12, "checkpoint_every": 5})
    train_ensemble(config, tmp_path, 2, progress=False)
    for k in range(2):
        (tmp_path / f"seed-{k}" / "summary.json").unlink()
    drop_newest_state(tmp_path / "seed-1")
    hook = StatesAtStart([tmp_path / f"seed-{k}" for k in range(2)])
    train_ensemble(config, tmp_path, 2, progress=False, hooks=[hook])
    assert hook.seen == [[10], [10]]  # member 0 held 10 and 12, member 1 only 10


def test_finished_members_are_left_alone_and_the_rest_resume(tmp_path: Path) -> None:
    config = tiny(Config(), {**SMALL, "steps": 16, "checkpoint_every": 5})
    train_ensemble(config, tmp_path, 2, progress=False)
    kept = (tmp_path / "seed-0" / "metrics.jsonl").read_bytes()
    (tmp_path / "seed-1" / "summary.json").unlink()
    drop_newest_state(tmp_path / "seed-1")
    summaries = train_ensemble(config, tmp_path, 2, progress=False)
    assert (tmp_path / "seed-0" / "metrics.jsonl").read_bytes() == kept
    assert [s["steps"] for s in summaries] == [16, 16]
    alone = train(dataclasses.replace(config, seed=config.seed + 1), tmp_path / "single", progress=False)
    assert summaries[1]["final"] == pytest.approx(alone["final"], rel=1e-4, abs=1e-5)


GROKS = {"task.p": 47, "optim.lr": 1e-2, "optim.batch_size": 256, "steps": 3000, "eval_every": 25}
"""The mlp preset shrunk to grok in about 500 steps (val acc 0.99 some 500 steps after train acc)."""


@pytest.mark.parametrize("n_seeds", [1, 2], ids=["single", "ensemble"])
def test_early_stopping_fires_where_the_rule_says(tmp_path: Path, n_seeds: int) -> None:
    """A run that reaches val acc >= 0.99 and holds it stops at the first evaluation at least stop_patience steps later."""
    config = tiny(get_preset("mlp"), {**GROKS, "stop_patience": 100})
    summaries = (
        train_ensemble(config, tmp_path, n_seeds, progress=False) if n_seeds > 1 else [train(config, tmp_path / "seed-0", progress=False)]
    )
    for k, summary in enumerate(summaries):
        rows = read_metrics(tmp_path / f"seed-{k}" / "metrics.jsonl")
        steps, val = np.array([r["step"] for r in rows]), np.array([r["val/acc"] for r in rows])
        below = np.nonzero(val < 0.99)[0]
        held_from = int(steps[below[-1] + 1]) if below.size else 0  # the start of the last unbroken stretch at >= 0.99
        assert summary["stopped_early"] is True and summary["steps"] < config.steps
        assert summary["steps"] == held_from + config.stop_patience  # 100 is a multiple of eval_every: on the grid
        assert steps[-1] == summary["steps"] and (val[steps >= held_from] >= 0.99).all()


def copy_task(n: int = 512, seq: int = 8, vocab: int = 6) -> Dataset:
    """A sequence task: at every position but the first, predict the previous token; `gen` is a task-defined split
    scored by whole sequences (every target position right)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, vocab, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.bool)
    mask[:, 0] = False
    perm = torch.randperm(n, generator=g)
    return Dataset(
        x=x, y=torch.roll(x, 1, dims=1), n_classes=vocab, vocab_size=vocab, train=perm[:256], val=perm[256:384], test=perm[384:],
        mask=mask, extra_splits={"gen": perm[384:448]}, score=lambda forward, x, logits, y, m: ((logits.argmax(-1) == y) | ~m).all(-1).float(),
    )  # fmt: skip


def test_a_sequence_task_trains_in_the_same_loop(tmp_path: Path) -> None:
    overrides = {**LM, "model.d_model": 32, "model.n_heads": 2, "model.d_mlp": 64, "optim.lr": 1e-2}
    config = tiny(Config(), {**overrides, "optim.weight_decay": 0.0, "optim.batch_size": 64, "steps": 60, "eval_every": 20})
    data, cpu = copy_task(), torch.device("cpu")
    configs = [dataclasses.replace(config, seed=k) for k in range(2)]
    singles = [RunDir(tmp_path / f"single-{k}") for k in range(2)]
    members = [RunDir(tmp_path / f"ens-{k}") for k in range(2)]
    for run, c in [*zip(singles, configs, strict=True), *zip(members, configs, strict=True)]:
        run.prepare(c)
    for run, c in zip(singles, configs, strict=True):
        fit([c], [run], data, Single(c, data, cpu), [])
    fit(configs, members, data, Ensemble(configs, data, cpu), [])
    for single, member in zip(singles, members, strict=True):
        rows = read_metrics(single.metrics_path)
        assert {"gen/loss", "gen/acc"} <= rows[0].keys()
        assert rows[0]["train/acc"] < 0.5 and rows[-1]["train/acc"] >= 0.99 and rows[-1]["gen/acc"] >= 0.95  # it learned to copy
        rows_match(read_metrics(member.metrics_path), rows)
    assert json.loads(singles[0].summary_path.read_text())["status"] == "finished"


def test_an_mlp_is_refused_for_a_sequence_task() -> None:
    with pytest.raises(UserError, match="^model.name='mlp' is not valid for a sequence task"):
        Single(tiny(Config(), SMALL), copy_task(), torch.device("cpu"))


def test_a_pack_of_runs_that_differ_beyond_their_seed_is_refused(tmp_path: Path) -> None:
    config = tiny(Config(), SMALL)
    other = apply_overrides(config, {"seed": 9, "optim.lr": 0.01})
    with pytest.raises(UserError, match=r"^runs that differ in optim.lr cannot train as one ensemble: only their seed may differ$"):
        train_pack([config, other], [tmp_path / "a", tmp_path / "b"], progress=False)
    assert not any(tmp_path.iterdir())
