"""Every recipe's analysis on sweeps shaped like its `paper` spec: every run of the grid, planned synthetic curves.

The recipe tests run the analyses on quick sweeps, whose grids are small and whose seeds mostly behave. Here each
recipe's real `analyze` reads sweep dirs written with the project's own writers (RunDir, summarize, RunsTable) for
every run of its paper spec, with grokking-shaped curves planned per run: when train fits, when val generalizes,
which seeds never generalize within the budget (censored), which settings never fit, early stopping as the trainer
does it. The findings are checked against that plan: every setting of the grid reported, seeds and censored seeds
counted as planned, and every claim judged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from groklab.analysis import is_modular, parse_analysis
from groklab.config import SEQUENCE_TASKS, flatten, to_dict
from groklab.experiments.claims import claims_of, evaluate
from groklab.experiments.recipes import MODULES, Findings, get_recipe, recipe_runs, spec_text
from groklab.report.plots import Figure
from groklab.runio import RunDir, summarize
from groklab.stats import share_interval
from groklab.sweep import PlannedRun, parse_spec
from groklab.sweep.runner import prepare_sweep_dir
from groklab.sweep.table import RunsTable

ROWS = 40
"""Log-spaced evaluation steps per run before rounding (about 30-40 distinct ones remain)."""
VERDICTS = {"reproduced", "partly", "not reproduced"}
SLOW = {"op-difficulty"}
"""Over 15 s alone on a loaded 2-core machine (612 run dirs): run with -m slow. Its per-op rule (power.op_fractions)
runs by default through power-fig2's paper grid."""


# ---------------------------------------------------------------------------------------------
# The plan: what each run's curves do, decided from its place in the spec's grid and its seed.


@dataclass(frozen=True)
class Plan:
    """One run's curves in outline. `fit` / `gen`: row index where train / val acc first reach 1 (None: never)."""

    steps: list[int]
    """The logged steps; the run ends at the last one (its budget, or earlier when stop_patience stopped it)."""
    fit: int | None
    gen: int | None
    phase: str
    """Liu et al.'s phase the plan means: confusion, memorization, comprehension or grokking."""
    slingshot: int | None = None
    """Row at which the last-layer norm jumps and the train loss bursts (Adam without weight decay, norms logged)."""

    def at(self, index: int | None) -> int | None:
        return None if index is None else self.steps[index]

    @property
    def fit_step(self) -> int | None:
        return self.at(self.fit)

    @property
    def gen_step(self) -> int | None:
        return self.at(self.gen)

    @property
    def delay(self) -> int | None:
        return None if self.gen is None or self.fit is None else self.steps[self.gen] - self.steps[self.fit]


def eval_steps(run: PlannedRun) -> list[int]:
    """0 and about ROWS log-spaced steps up to the budget, on the eval_every grid where evaluation is linear."""
    config = run.config
    unit = config.eval_every if config.eval_spacing == "linear" else 1
    raw = np.geomspace(unit, config.steps, ROWS) / unit
    return sorted({0, config.steps} | {int(round(v)) * unit for v in raw})


def grid_place(runs: list[PlannedRun]) -> dict[str, tuple[int, int, int]]:
    """run_id -> (o, j, m): the setting's place in the spec's grid. j indexes the innermost axis (the last grid key, or
    the [zip] arm), which has m values; o indexes the combination of the outer axes. Seeds are not an axis."""
    points = {run.run_id: [(k, v) for k, v in run.point.items() if k != "seed"] for run in runs}
    inner: dict[Any, int] = {}
    outer: dict[Any, int] = {}
    for point in points.values():
        if point:
            inner.setdefault(point[-1], len(inner))
        outer.setdefault(tuple(point[:-1]), len(outer))
    return {rid: (outer[tuple(p[:-1])], inner[p[-1]] if p else 0, max(len(inner), 1)) for rid, p in points.items()}


def plan_part(runs: list[PlannedRun]) -> dict[str, Plan]:
    """A plan per run, from its place in the grid (see grid_place) and its seed's rank k:

    * never fits: the smallest inner value in every odd outer row; with one axis, its middle value (of 5 or more);
    * the last seed never generalizes within the budget (censored) at the c smallest inner values, c rising with the
      outer row (a threshold fraction per op, say), and at every inner value in every 5th outer row;
    * the others generalize right after fitting (comprehension, when (o + j) % 4 == 1) or well after it (grokking),
      sooner at larger inner values (steps to grok fall as the training fraction grows) and later for odd seeds."""
    place = grid_place(runs)
    single = {o for o, _, _ in place.values()} == {0}  # one axis (or none): no outer rows
    seeds = sorted({run.config.seed for run in runs})
    plans = {}
    for run in runs:
        o, j, m = place[run.run_id]
        k = seeds.index(run.config.seed)
        steps = eval_steps(run)
        n = len(steps)
        fit = n // 5 + k % 3
        never_fit = (j == m // 2 and m >= 5) if single else (j == 0 and o % 2 == 1)
        hard = m if o % 5 == 4 else 1 + (o % 3) * (m // 4)
        censored = not never_fit and k == len(seeds) - 1 and j < hard
        comprehension = (o + j) % 4 == 1
        gen = fit + 1 if comprehension else fit + 8 + round(6 * (m - 1 - j) / max(m - 1, 1)) + k % 2
        if never_fit:
            fit = gen = None
            phase = "confusion"
        elif censored:
            gen, phase = None, "memorization"
        else:
            phase = "comprehension" if comprehension else "grokking"
        if gen is not None and run.config.stop_patience:  # the trainer stops once val acc has held 99% this long
            stop = next((i for i in range(gen, n) if steps[i] - steps[gen] >= run.config.stop_patience), None)
            steps = steps if stop is None else steps[: stop + 1]
        sling = None
        if "norms" in parse_analysis(run.config.analysis) and run.config.optim.weight_decay == 0:
            sling = len(steps) - 8
            assert fit is not None and fit + 10 < sling, "the burst must come well after fitting"
        plans[run.run_id] = Plan(steps, fit, gen, phase, sling)
    return plans


# ---------------------------------------------------------------------------------------------
# Metric rows from a plan: every key the trainer would log for this config.


def metric_rows(run: PlannedRun, plan: Plan) -> list[dict[str, Any]]:
    config, n = run.config, len(plan.steps)
    fit, gen = plan.fit, plan.gen
    analyses = parse_analysis(config.analysis)
    rows = []
    for i, step in enumerate(plan.steps):
        if fit is None:
            train = 0.02 + 0.5 * i / n
        else:
            train = 1.0 if i >= fit else 0.02 + 0.8 * i / fit
        if gen is None:
            val = 0.02 + 0.25 * i / n
        else:
            val = 1.0 if i >= gen else 0.6 if i == gen - 1 else 0.3 if i == gen - 2 else 0.02 + 0.08 * i / gen
        memorizing = fit is not None and i >= fit and (gen is None or i < gen)
        val_loss = 4.6 * (1 - val) + (0.1 * (i - (fit or 0)) if memorizing else 0.0) + 1e-3  # val loss rises while memorizing
        train_loss = 4.6 * (1 - train) + 1e-3 * 0.9**i
        if plan.slingshot is not None and i == plan.slingshot:
            train, train_loss = 0.9, 0.5
        norm = 10.0 * config.model.init_scale
        if config.optim.norm_constraint > 0:
            norm *= config.optim.norm_constraint
        else:
            norm *= math.exp(-0.5 * config.optim.weight_decay * i / n) if config.optim.weight_decay else 1 + 0.2 * i / n
        row: dict[str, Any] = {
            "step": step,
            "time_s": round(0.05 * i, 4),
            "train/loss": train_loss,
            "train/acc": train,
            "val/loss": val_loss,
            "val/acc": val,
            "test/loss": val_loss * 1.05,
            "test/acc": max(val - 0.004, 0.0),
        }
        if config.task.name in SEQUENCE_TASKS:  # the generalization split: rises a few evaluations after val does
            gen_acc = 0.9 if gen is not None and i >= gen + 3 else 0.5 if gen is not None and i == gen + 2 else 0.1 + 0.3 * i / n
            row.update({"gen/loss": 4.0 * (1 - gen_acc) + 1e-3, "gen/acc": gen_acc})
        row["norm/total"] = norm
        row["lr"] = config.optim.lr
        if i % config.analysis_every == 0:
            row.update(analysis_keys(run, plan, i, analyses))
        rows.append(row)
    return rows


def analysis_keys(run: PlannedRun, plan: Plan, i: int, analyses: list[str]) -> dict[str, float]:
    """What `--analysis` logs on an analysis row, for the configs that log it (as groklab.analysis.training_metrics)."""
    config, fit, gen, n = run.config, plan.fit, plan.gen, len(plan.steps)
    fitted, general = fit is not None and i >= fit, gen is not None and i >= gen
    since_fit = i - (fit or 0)
    out: dict[str, float] = {}
    if "fourier" in analyses and is_modular(config):
        out["fourier/gini"] = 0.9 if general else 0.2 + 0.3 * i / n
        out["fourier/n_key"] = 5 if general else 20
        near = gen is not None and i >= gen - 2
        out["fourier/restricted_loss"] = 0.5 if near else 2.0 if fitted else 4.0
        out["fourier/excluded_loss"] = 1.0 + 0.5 * since_fit if fitted else 1.0
    if "norms" in analyses:
        jump = 1.3 if plan.slingshot is not None and i >= plan.slingshot else 1.0
        out["norm/last_layer"] = 2.0 * 1.02**i * jump
    if "rqi" in analyses and (config.task.name == "addition" or (is_modular(config) and config.task.op == "x+y")):
        out["rqi"] = 0.95 if general else 0.1 + 0.3 * i / n
    if "rqi" in analyses and config.task.name == "addition":
        out["effective_loss"] = 0.01 if general else 1.0 - 0.5 * i / n
    if "collapse" in analyses:
        softmax32 = config.loss == "cross_entropy" and config.loss_dtype == "float32" and not config.optim.orthograd
        share = (0.8 if softmax32 else 0.05) * min(1.0, (since_fit + 1) / 5) if fitted else 0.0
        out["collapse/train"], out["collapse/train_own_loss"] = share / 2, share
    if "circuit" in analyses and config.task.name == "parity" and config.model.depth == 1:
        sparse, dense = (9.0 if gen is not None and i >= gen - 1 else 1.0 + i / n), 5.0
        out.update({
            "circuit/sparse": sparse, "circuit/dense": dense, "circuit/sparse_share": sparse**2 / (sparse**2 + dense**2),
            "circuit/n_sparse": 7 if sparse > dense else 0, "circuit/n_subnetwork": 6 if sparse > dense else 300,
        })  # fmt: skip
    if "tree" in analyses and config.task.name in SEQUENCE_TASKS:
        out["tree/score"] = 0.1 + 0.5 * i / n
    return out


# ---------------------------------------------------------------------------------------------
# Sweep dirs written with the project's writers.


@dataclass
class Part:
    """One part of a recipe as built: its sweep dir, its planned runs (spec order) and their plans."""

    dir: Path
    runs: list[PlannedRun]
    plans: dict[str, Plan]

    def groups(self, *keys: str) -> dict[tuple[Any, ...], list[Plan]]:
        """Plans grouped by config fields (axes of the spec), in spec order (seeds are the members, in seed order)."""
        out: dict[tuple[Any, ...], list[Plan]] = {}
        for run in self.runs:
            flat = run.point if all(k in run.point for k in keys) else flatten(to_dict(run.config))
            out.setdefault(tuple(flat[k] for k in keys), []).append(self.plans[run.run_id])
        return out

    def settings(self) -> list[list[Plan]]:
        """Plans grouped by the spec's axis values (the seed aside), in spec order."""
        out: dict[tuple[Any, ...], list[Plan]] = {}
        for run in self.runs:
            out.setdefault(tuple((k, v) for k, v in run.point.items() if k != "seed"), []).append(self.plans[run.run_id])
        return list(out.values())

    def budget(self) -> int:
        return max(run.config.steps for run in self.runs)


def write_run(sweep: Path, run: PlannedRun, plan: Plan) -> None:
    """One finished run dir, as train.fit leaves it: config.json, metrics.jsonl, metrics.parquet, summary.json."""
    run_dir = RunDir(sweep / run.run_dir)
    assert not run_dir.prepare(run.config)
    rows = metric_rows(run, plan)
    run_dir.rewind(rows[-1]["step"], rows)  # metrics.jsonl in one write (append_metrics is one write per row)
    extra = {"stopped_early": True} if plan.gen is not None and plan.steps[-1] < run.config.steps else {}
    summary = summarize(rows, "finished", rows[-1]["step"], 1.0, seed=run.config.seed, split_seed=run.config.split_seed, **extra)
    run_dir.finish(summary)


def build_part(out: Path, name: str, part: str, runs: list[PlannedRun]) -> Part:
    text = spec_text(get_recipe(name), part, "paper")
    prepare_sweep_dir(out, parse_spec(text, part), text)
    plans = plan_part(runs)
    with ThreadPoolExecutor(4) as pool:  # each run its own files: the threads overlap the file system's waits
        list(pool.map(lambda run: write_run(out, run, plans[run.run_id]), runs))
    RunsTable(out, runs).write()  # as run_sweep's table, read back from the run dirs' summaries
    return Part(out, runs, plans)


def build(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Part]:
    """Every part of recipe `name` at the paper scale, written under tmp_path.

    No fsync keeps thousands of run dirs fast: durability is not under test here."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    return {part: build_part(tmp_path / part, name, part, runs) for part, runs in recipe_runs(get_recipe(name), "paper").items()}


# ---------------------------------------------------------------------------------------------
# What the findings must say, per recipe, from the plan.


def val_steps(plans: list[Plan]) -> list[int | None]:
    return [p.gen_step for p in plans]


def fit_steps(plans: list[Plan]) -> list[int | None]:
    return [p.fit_step for p in plans]


def assert_censored(stats: dict[str, Any], per_seed: list[int | None]) -> None:
    """A censored_stats dict holds exactly these per-seed values: the ones reached counted in n, the rest censored."""
    assert stats["per_seed"] == per_seed
    assert stats["censored"] == per_seed.count(None)
    assert stats["n"] == len(per_seed) - per_seed.count(None)


def expected_min_frac(by_frac: dict[float, list[Plan]]) -> float | None:
    """Smallest fraction from which on every seed at every larger fraction generalizes (power.op_fractions' rule)."""
    out = None
    for frac in sorted(by_frac, reverse=True):
        if any(p.gen is None for p in by_frac[frac]):
            break
        out = frac
    return out


def check_power_fig1(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    (plans,) = parts["sweep"].settings()
    assert n["seeds"] == len(plans)
    assert_censored(n["steps_to_train_acc_99"], fit_steps(plans))
    assert_censored(n["steps_to_val_acc_99"], val_steps(plans))
    assert n["grokked"] == sum(p.gen is not None for p in plans)
    assert len(n["final_test_acc"]) == len(plans)


def check_fractions(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    """power-fig2 and op-difficulty: every op at every fraction, each with its planned seeds and threshold."""
    sweep = parts["sweep"]
    cells = sweep.groups("task.op", "task.train_frac")
    ops = list(dict.fromkeys(op for op, _ in cells))
    fracs = sorted({f for _, f in cells})
    min_frac = {op: expected_min_frac({f: cells[(op, f)] for f in fracs}) for op in ops}
    assert list(n["per_op"]) == ops
    assert n["budget_steps"] == sweep.budget()
    for op in ops:
        stats = n["per_op"][op]
        assert list(stats["by_frac"]) == [f"{f:g}" for f in fracs], op
        for f in fracs:
            assert_censored(stats["by_frac"][f"{f:g}"], val_steps(cells[(op, f)]))
        assert stats["min_frac"] == min_frac[op], op
    if "ranking" in n:  # op-difficulty
        assert sorted(n["ranking"]) == sorted(ops)
        assert n["min_frac"] == min_frac
        assert set(n["never_grokked"]) == {op for op in ops if min_frac[op] is None}
    else:
        assert n["fractions"] == fracs
        assert n["seeds"] == len({run.config.seed for run in sweep.runs})


def check_interventions(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    sweep = parts["sweep"]
    fields = n["varied_fields"]
    fracs = sorted({f for (f,) in sweep.groups("task.train_frac")})
    arms, cells = sweep.groups(*fields), sweep.groups(*fields, "task.train_frac")
    assert n["fractions"] == fracs and len(n["arms"]) == len(set(n["arms"])) == len(n["per_arm"]) == len(arms)
    assert n["budget_steps"] == sweep.budget()
    for label, arm in zip(n["arms"], arms, strict=True):
        a = n["per_arm"][label]
        assert list(a["by_frac"]) == [f"{f:g}" for f in fracs]
        for f in fracs:
            plans = cells[(*arm, f)]
            assert a["seeds"] == len(plans)
            assert_censored(a["by_frac"][f"{f:g}"]["steps_to_val_acc_99"], val_steps(plans))
        # The smallest fraction from which on every seed at every larger fraction generalized.
        done = [all(p.gen_step is not None for p in cells[(*arm, f)]) for f in fracs]
        assert a["min_frac"] == next((f for i, f in enumerate(fracs) if all(done[i:])), None)
    assert ("interventions_data_efficiency" in figures) == (len(fracs) > 1)


def check_omnigrok(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    alpha, lu = parts["alpha"], parts["lu"]
    cells = alpha.groups("model.init_scale", "optim.norm_constraint")
    assert [(s["init_scale"], s["norm_constraint"]) for s in n["settings"]] == list(cells)
    for s in n["settings"]:
        plans = cells[(s["init_scale"], s["norm_constraint"])]
        assert s["seeds"] == len(plans)
        assert_censored(s["steps_to_train_fit"], fit_steps(plans))
        assert_censored(s["steps_to_val_gen"], val_steps(plans))
        assert_censored(s["delay"], [p.delay for p in plans])
    assert sorted(p["norm_constraint"] for p in n["lu"]) == sorted(c for (c,) in lu.groups("optim.norm_constraint"))
    # The budgets are the configured ones: runs.parquet's `steps` is where a run stopped (stop_patience ends a grokked run).
    assert n["budget_steps"] == alpha.budget()
    (lu_figure,) = [f for key, f in figures.items() if key.endswith("_lu")]
    assert f"after {lu.budget()} steps" in lu_figure.caption


PHASE_FIGURES = {"lr-wd": "phase_lr_wd", "embed-decoder": "phase_embed_decoder"}
"""liu-phases: each part's figure."""


def check_phases(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    """liu-phases: every run a cell, its phase the planned one."""
    for part, built in parts.items():
        planned = [built.plans[run.run_id].phase for run in built.runs]
        assert [c["phase"] for c in n[part]["cells"]] == planned, part
        assert n[part]["counts"] == {p: planned.count(p) for p in n[part]["counts"]}, part
        assert sum(n[part]["counts"].values()) == len(built.runs)
        # The budget memorization is judged within: the configured one, not where the first run stopped early.
        assert n[part]["setting"].endswith(f", {built.budget()} steps"), n[part]["setting"]
        assert f"not within {built.budget()} steps" in figures[PHASE_FIGURES[part]].caption


def check_toy(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    by_frac = {f: plans for (f,), plans in sorted(parts["fraction"].groups("task.train_frac").items())}
    table = n["fraction"]["per_fraction"]
    assert list(table) == [f"{f:g}" for f in by_frac]
    for f, plans in by_frac.items():  # generalized: the planned val jump (held-out accuracy about 1, else at most 0.27)
        assert table[f"{f:g}"]["seeds"] == len(plans), f
        assert table[f"{f:g}"]["generalized"] == sum(p.gen is not None for p in plans), f
    expected = None
    for f in sorted(by_frac, reverse=True):
        if 2 * sum(p.gen is not None for p in by_frac[f]) <= len(by_frac[f]):
            break
        expected = f
    assert n["critical_fraction"] == expected
    # Fig 4a's share needs no training: one value per training-set size; every run's own split is judged too
    unique = n["fraction"]["unique_linear"]
    assert len(unique["share"]) == 54 and all(0 <= v <= 1 for v in unique["share"].values())
    assert 0.2 < unique["critical_fraction"] < 0.6
    assert unique["runs"] == sum(len(plans) for plans in by_frac.values())
    for f, plans in by_frac.items():  # each run's split judged: a flag and an ideal accuracy per seed
        row = table[f"{f:g}"]
        assert len(row["fixes_linear"]) == len(row["ideal_acc"]) == len(plans) and all(0 <= a <= 1 for a in row["ideal_acc"])
    assert unique["runs_fixed_at_ideal"] <= unique["runs_fixed"]
    assert unique["runs_fixed_generalized"] + unique["runs_free_generalized"] == sum(
        p.gen is not None for ps in by_frac.values() for p in ps
    )
    lr = parts["lr-lr"]
    planned = [lr.plans[run.run_id].phase for run in lr.runs]
    assert [c["phase"] for c in n["lr-lr"]["cells"]] == planned
    assert n["lr-lr"]["counts"] == {p: planned.count(p) for p in n["lr-lr"]["counts"]}
    assert sum(n["lr-lr"]["counts"].values()) == len(lr.runs)


def check_progress(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    (plans,) = parts["sweep"].settings()
    assert_censored(n["steps_to_val_acc_99"], val_steps(plans))
    r = n["restricted_before_val"]
    assert r["seeds"] == len(plans) and r["seeds_restricted_first"] == sum(p.gen is not None for p in plans)
    assert len(n["final_key_frequencies"]) == len(plans)
    assert [s["phases"] is not None for s in n["per_seed"]] == [p.gen is not None for p in plans]


def check_modelwise(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    widths = sorted(w for (w,) in parts["width"].groups("model.width"))
    assert n["widths"] == widths
    assert list(n["final_test_loss"]) == list(n["final_test_acc"]) == [str(w) for w in widths]
    assert n["budget_steps"] == parts["width"].budget()
    finals: dict[int, list[float]] = {}  # width -> each seed's planned final test loss
    for run in parts["width"].runs:
        finals.setdefault(run.config.model.width, []).append(metric_rows(run, parts["width"].plans[run.run_id])[-1]["test/loss"])
    mean = {w: float(np.mean(v)) for w, v in finals.items()}
    assert n["final_test_loss"] == pytest.approx({str(w): mean[w] for w in widths})
    assert n["best_final_width"] == min(mean, key=mean.__getitem__)


def check_arms(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    """avoid-grokking and stablemax: one arm per [zip] point, each with its planned seeds."""
    settings = parts["sweep"].settings()
    assert len(n["arms"]) == len(settings)
    for arm, plans in zip(n["arms"].values(), settings, strict=True):
        assert arm["steps"] == parts["sweep"].budget()
        assert_censored(arm["steps_to_train_acc_99"], fit_steps(plans))
        assert_censored(arm["steps_to_val_acc_99"], val_steps(plans))
        if "grok_delay" in arm:
            assert_censored(arm["grok_delay"], [p.delay for p in plans])


def check_slingshot(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    settings = parts["sweep"].settings()
    assert len(n["arms"]) == len(settings)
    for arm, plans in zip(n["arms"].values(), settings, strict=True):
        planned = [[p.steps[p.slingshot]] if p.slingshot is not None else [] for p in plans]
        assert arm["norm_break_steps"] == planned
        assert arm["loss_spike_steps"] == planned
        assert arm["norm_breaks_per_seed"] == [len(s) for s in planned]
        assert_censored(arm["first_norm_break"], [s[0] if s else None for s in planned])
        assert arm["steps"] == parts["sweep"].budget()


def check_grokfast(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    sweep = parts["sweep"]
    settings = sweep.settings()
    arms = n["steps_to_val_acc_95"]
    assert len(arms) == len(settings)
    for arm, plans in zip(arms.values(), settings, strict=True):
        assert_censored(arm, val_steps(plans))
    baseline_lrs = {run.config.optim.lr for run in sweep.runs if run.config.optim.grokfast == "none"}
    filters = {(r.config.optim.lr, r.config.optim.grokfast_lamb) for r in sweep.runs if r.config.optim.grokfast != "none"}
    assert len(n["comparisons"]) == len(filters)
    for c in n["comparisons"]:
        a = arms[c["arm"]]
        assert ("same_lr" in c) == any(math.isclose(lr, a["lr"]) for lr in baseline_lrs), c
        assert ("lr_matched" in c) == any(math.isclose(lr, a["lr"] * (1 + a["lamb"])) for lr in baseline_lrs), c


def check_parity(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    sizes = parts["sweep"].groups("task.n_samples")
    assert list(n["per_n_samples"]) == [str(s) for (s,) in sorted(sizes)]
    for (size,), plans in sizes.items():
        stats = n["per_n_samples"][str(size)]
        assert_censored(stats["grok_delay"], [p.delay for p in plans])
        assert_censored(stats["steps_to_val_acc_99"], val_steps(plans))
        assert_censored(stats["sparse_overtakes_dense"], [p.at(p.gen - 1) if p.gen is not None else None for p in plans])
        assert len(stats["final_n_sparse"]) == len(stats["final_sparse_share"]) == len(plans)
        assert stats["final_n_subnetwork"] == [6 if p.gen is not None else 300 for p in plans]
    grokked = next(plans for _, plans in sorted(sizes.items()) if any(p.gen is not None for p in plans))
    assert [s.y[-1] for s in figures["parity_subnetwork"].series] == [6 if p.gen is not None else 300 for p in grokked]


def check_structural(n: dict[str, Any], parts: dict[str, Part], figures: dict[str, Figure]) -> None:
    assert list(n["per_task"]) == list(parts)
    for task, built in parts.items():
        depths = built.groups("model.n_layers")
        assert list(n["per_task"][task]) == [str(d) for (d,) in sorted(depths)], task
        for (depth,), plans in depths.items():
            cell = n["per_task"][task][str(depth)]
            assert cell["seeds"] == len(plans)
            assert cell["val_never_99"] == sum(p.gen is None for p in plans)
            passed = sum(p.gen is not None for p in plans)
            assert cell["share_passing_80"] == passed / len(plans)
            assert cell["share_passing_80_ci"] == list(share_interval(passed, len(plans)))


EXPECT: dict[str, Callable[[dict[str, Any], dict[str, Part], dict[str, Figure]], None]] = {
    "power-fig1": check_power_fig1,
    "power-fig2": check_fractions,
    "power-interventions": check_interventions,
    "op-difficulty": check_fractions,
    "omnigrok-digits": check_omnigrok,
    "omnigrok-modular": check_omnigrok,
    "liu-phases": check_phases,
    "liu-toy": check_toy,
    "nanda-progress": check_progress,
    "modelwise": check_modelwise,
    "avoid-grokking": check_arms,
    "slingshot": check_slingshot,
    "grokfast": check_grokfast,
    "stablemax": check_arms,
    "parity": check_parity,
    "structural": check_structural,
}
"""Recipe -> the check of its findings against the plan of its paper-scale sweep."""


def has_data(figure: Figure) -> bool:
    """A series with at least one finite point, or a heat map with at least one filled cell."""
    if figure.heatmap is not None:
        return any(z is not None for row in figure.heatmap.z for z in row)
    return any(s.x and any(isinstance(v, (int, float)) and math.isfinite(v) for v in s.y) for s in figure.series)


def test_every_recipe_has_a_shape_check() -> None:
    assert set(EXPECT) == set(MODULES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in MODULES])
def test_analysis_reads_its_paper_scale_sweep(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real analysis on every run of the paper grid: plain JSON, the plan's counts, every claim judged, no empty figure."""
    parts = build(tmp_path, name, monkeypatch)
    findings: Findings = get_recipe(name).analyze({part: built.dir for part, built in parts.items()}, "paper")
    numbers = findings.numbers
    json.dumps(numbers, allow_nan=False)  # findings.json is written from these: plain JSON, every value finite
    assert isinstance(numbers["headline"], str) and numbers["headline"]
    EXPECT[name](numbers, parts, {f.key: f for f in findings.figures})
    verdicts = evaluate(name, {"recipe": name, "scale": "paper", **numbers})
    assert len(verdicts) == len(claims_of(name))
    assert all(v["verdict"] in VERDICTS for v in verdicts), verdicts
    assert findings.figures
    assert len({f.key for f in findings.figures}) == len(findings.figures)
    for figure in findings.figures:
        assert has_data(figure), figure.key
