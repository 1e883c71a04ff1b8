"""Power et al. 2022: the grokking curves (Fig 1), data-fraction curves (Fig 2), interventions, op difficulty.

power-fig1: the 2-layer transformer on x/y mod 97 with half of the table for training. Train accuracy
reaches 99% long before validation accuracy does; the figure shows both (and the locked test split)
over log steps, mean and 95% band over seeds, with the two 99% points marked.

power-fig2: steps to 99% val vs training fraction per operation, and per op the fraction below which it
does not generalize within the step budget. op-difficulty: the same kind of sweep, the ops ranked by that
fraction. power-interventions: steps to grok and final test accuracy under each regularizer / optimizer arm, at one
or more training fractions (Power et al. judge an intervention by the data it needs to generalize within a budget).
Runs that never reach 99% val are censored: counted, never averaged in.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import (
    PALETTE,
    SPLIT_COLORS,
    Series,
    band,
    estimate,
    group,
    rows,
    run_data,
    step_budget,
    summary_steps,
)
from groklab.report.plots import Figure, steps_to_grok_figure
from groklab.stats import mean_ci


def fig1(dirs: dict[str, Path], scale: str) -> Findings:
    sweep = dirs["sweep"]
    members = rows(sweep)
    runs = [run_data(sweep, r) for r in members]
    train = summary_steps(members, "steps_to_train_acc_99")
    val = summary_steps(members, "steps_to_val_acc_99")
    ratios = [v / t for t, v in zip(train["per_seed"], val["per_seed"], strict=True) if t and v]
    series = [s for split in ("train", "val", "test") for s in band(runs, f"{split}/acc", split, SPLIT_COLORS[split], dash=split == "test")]
    marks = [
        (m, label, SPLIT_COLORS[split]) for m, label, split in ((train["mean"], "train 99%", "train"), (val["mean"], "val 99%", "val")) if m
    ]
    first = members[0]
    setting = f"{first['task.op']} mod {first['task.p']}, {first['task.train_frac']:.0%} train, wd {first['optim.weight_decay']}"
    figure = Figure(
        "fig1_curves",
        f"Power et al. Fig 1: accuracy vs steps ({setting})",
        "step (optimizer updates, log scale)",
        "accuracy",
        series,
        vlines=marks,
        xlog=True,
        caption="Mean over seeds with 95% t-bands; dotted lines: mean step at which train / val accuracy first reached 99%.",
    )
    grokked = len(members) - val["censored"]
    if ratios:
        headline = (
            f"train acc reached 99% at step {train['mean']:.0f} and val acc only at step {val['mean']:.0f} "
            f"({min(ratios):.1f}-{max(ratios):.1f}x later; {grokked}/{len(members)} seeds grokked within a budget of {runs[0].config['steps']} steps)"
        )
    else:
        headline = f"no seed reached 99% val acc within {runs[0].config['steps']} steps (train 99%: {len(members) - train['censored']}/{len(members)} seeds)"
    numbers = {
        "headline": headline,
        "setting": setting,
        "seeds": len(members),
        "steps_to_train_acc_99": train,
        "steps_to_val_acc_99": val,
        "val_over_train_ratio": {"min": min(ratios, default=None), "max": max(ratios, default=None)},
        "grokked": grokked,
        "final_test_acc": [r.get("test/acc") for r in members],
    }
    return Findings(numbers, [figure])


def generalizes_from(by_frac: dict[float, dict[str, Any]]) -> float | None:
    """The smallest tested fraction from which on every seed at every larger tested fraction reached 99% val within the
    budget (steps-to-99% statistics per fraction); None if even the largest fraction has a censored seed."""
    min_frac = None
    for frac in sorted(by_frac, reverse=True):
        if by_frac[frac]["censored"]:
            break
        min_frac = frac
    return min_frac


def op_fractions(members: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per op: steps-to-99%-val statistics at every training fraction, and the generalization threshold ("min_frac",
    `generalizes_from`)."""
    out: dict[str, dict[str, Any]] = {}
    for (op,), at_op in group(members, "task.op").items():
        by_frac = {float(f): summary_steps(m) for (f,), m in sorted(group(at_op, "task.train_frac").items())}
        min_frac = generalizes_from(by_frac)
        tested = sorted(by_frac)
        out[op] = {
            "by_frac": {f"{f:g}": st for f, st in by_frac.items()},
            "min_frac": min_frac,
            # The fraction below which it did not generalize: the largest tested fraction under min_frac.
            "fails_at_or_below": max((f for f in tested if min_frac is None or f < min_frac), default=None),
        }
    return out


def coverage(members: list[dict[str, Any]], budget: int) -> str:
    """What a fraction sweep covers, said plainly (the quick scales test a subset of the paper's ops and fractions)."""
    ops = list(group(members, "task.op"))
    fracs = ", ".join(f"{f:g}" for f in sorted({float(r["task.train_frac"]) for r in members}))
    return (
        f"{len(ops)} of the 12 operations of Power et al. ({', '.join(op for (op,) in ops)}) at training fractions {fracs}; "
        f"{len({r['seed'] for r in members})} seeds; the {members[0]['model.name']} model; a {budget}-step budget"
    )


def _frac_text(stats: dict[str, Any]) -> str:
    if stats["min_frac"] is None:
        return f"not at any tested fraction (<= {stats['fails_at_or_below']:g})"
    below = f", not at {stats['fails_at_or_below']:g}" if stats["fails_at_or_below"] is not None else ""
    return f"from {stats['min_frac']:g}{below}"


def fig2(dirs: dict[str, Path], scale: str) -> Findings:
    members = rows(dirs["sweep"])
    per_op = op_fractions(members)
    figure = steps_to_grok_figure(members)
    assert figure is not None, "the power-fig2 spec varies task.train_frac"
    first = members[0]
    figure = dataclasses.replace(
        figure,
        key="fig2_steps_to_grok",
        title=f"Power et al. Fig 2: steps to 99% val vs training fraction ({first['model.name']} model)",
        xlabel="training fraction (share of all pairs)",
    )
    budget = step_budget(dirs["sweep"], members)
    summary = "; ".join(f"{op} {_frac_text(s)}" for op, s in per_op.items())
    falls = []
    for op, stats in per_op.items():
        grokked = [(float(f), st["mean"]) for f, st in stats["by_frac"].items() if st["mean"] is not None and not st["censored"]]
        if len(grokked) >= 2:
            (f_lo, s_lo), (f_hi, s_hi) = grokked[0], grokked[-1]
            falls.append(f"{op} {s_lo:.0f} at {f_lo:g} -> {s_hi:.0f} at {f_hi:g}")
    headline = (
        f"steps to 99% val fall as the training fraction grows ({'; '.join(falls) or 'too few fractions grokked to compare'}); "
        f"every seed generalizes within {budget} steps: {summary}"
    )
    numbers = {
        "headline": headline,
        "model": first["model.name"],
        "coverage": coverage(members, budget),
        "budget_steps": budget,
        "seeds": len({r["seed"] for r in members}),
        "ops": list(per_op),
        "fractions": sorted({float(r["task.train_frac"]) for r in members}),
        "per_op": per_op,
    }
    return Findings(numbers, [figure])


def op_difficulty(dirs: dict[str, Path], scale: str) -> Findings:
    members = rows(dirs["sweep"])
    per_op = op_fractions(members)
    largest = max(float(r["task.train_frac"]) for r in members)

    def steps_at_largest(op: str) -> float:
        mean = per_op[op]["by_frac"][f"{largest:g}"]["mean"]
        return math.inf if mean is None else mean

    # Easiest first: smallest threshold fraction; ties broken by fewer steps to grok at the largest fraction.
    ranked = sorted(per_op, key=lambda op: (per_op[op]["min_frac"] or math.inf, steps_at_largest(op)))
    grokked = [op for op in ranked if per_op[op]["min_frac"] is not None]
    never = [op for op in ranked if per_op[op]["min_frac"] is None]
    budget = step_budget(dirs["sweep"], members)
    series = [
        Series(
            "bar",
            ranked,
            [per_op[op]["min_frac"] if op in grokked else math.nan for op in ranked],
            name="min training fraction at which every seed grokked",
            color=PALETTE[0],
            text=[f"{op}: {_frac_text(per_op[op])}" for op in ranked],
        ),
        Series(
            "bar",
            ranked,
            [1.0 if op in never else math.nan for op in ranked],
            name=f"did not grok at any tested fraction (up to {largest:g}); drawn at 1",
            color="#bbbbbb",
            text=[f"{op}: {_frac_text(per_op[op])}" for op in ranked],
        ),
    ]
    figure = Figure(
        "op_difficulty",
        f"Operations ranked by the smallest training fraction at which they grok ({members[0]['model.name']} model)",
        "operation (easiest first)",
        "min training fraction (all seeds reach 99% val)",
        series,
        caption=f"Fractions tested: {', '.join(f'{f:g}' for f in sorted({float(r['task.train_frac']) for r in members}))}; "
        f"budget {budget} steps; an op counts at a fraction only if every seed reached 99% val there and at every larger fraction.",
    )
    order = ", ".join(f"{op} ({per_op[op]['min_frac']:g})" for op in grokked)
    headline = f"easiest to hardest by the minimum training fraction that groks within {budget} steps: {order or 'none grokked'}"
    if never:
        headline += f"; never at any tested fraction up to {largest:g}: {', '.join(never)}"
    numbers = {
        "headline": headline,
        "model": members[0]["model.name"],
        "coverage": coverage(members, budget),
        "budget_steps": budget,
        "ranking": ranked,
        "min_frac": {op: per_op[op]["min_frac"] for op in ranked},
        "never_grokked": never,
        "per_op": per_op,
    }
    return Findings(numbers, [figure])


ARM_FIELDS = {
    "optim.weight_decay": lambda v: f"wd {v:g}",
    "optim.wd_target": lambda v: "towards init" if v == "init" else "towards 0",
    "model.dropout": lambda v: f"dropout {v:g}",
    "optim.grad_noise": lambda v: f"grad noise {v:g}",
    "optim.name": lambda v: {"adam": "Adam (L2)", "adamw": "AdamW"}.get(v, v),
    "optim.batch_size": lambda v: "full batch" if v == 0 else f"batch {v}",
}
"""How an arm's differences from the first (baseline) arm are named; other fields print as field=value."""


def arm_labels(arms: list[tuple[Any, ...]], keys: list[str]) -> list[str]:
    """Readable arm names: what each arm changes relative to the first one (the spec's baseline arm)."""
    base = arms[0]
    labels = []
    for arm in arms:
        parts = [ARM_FIELDS.get(k, lambda v, k=k: f"{k}={v}")(v) for k, v, b in zip(keys, arm, base, strict=True) if v != b]
        labels.append(", ".join(parts) if parts else "baseline")
    if labels[0] == "baseline" and all(
        not base[keys.index(k)] for k in ("optim.weight_decay", "model.dropout", "optim.grad_noise") if k in keys
    ):
        labels[0] = "no regularization"
    return labels


def _arm_bars(per_arm: dict[str, dict[str, Any]], frac: str, budget: int, suffix: str) -> list[Figure]:
    """Steps to 99% val and final test accuracy per arm at one training fraction, as bars."""
    labels = list(per_arm)
    at = [per_arm[a]["by_frac"][frac] for a in labels]
    half = lambda e: math.nan if e["hi"] is None else e["hi"] - e["mean"]  # noqa: E731
    steps = [x["steps_to_val_acc_99"] for x in at]
    tests = [x["final_test_acc"] for x in at]
    grok_text = [f"{a}: {s['n']}/{s['n'] + s['censored']} grokked" for a, s in zip(labels, steps, strict=True)]
    counted = [f"{a} ({s['n']}/{s['n'] + s['censored']})" for a, s in zip(labels, steps, strict=True)]  # seeds grokked, in the tick
    steps_fig = Figure(
        f"interventions_steps{suffix}",
        f"Steps to 99% val accuracy per intervention, {float(frac):.0%} train",
        "intervention (seeds grokked / seeds)",
        "steps to grok (mean over seeds that grokked)",
        [
            Series(
                "bar",
                counted,
                [math.nan if s["mean"] is None else s["mean"] for s in steps],
                name="steps to grok (95% CI)",
                color=PALETTE[0],
                error=[half(s) for s in steps],
                text=grok_text,
            ),
            Series(
                "markers",
                counted,
                [budget if s["censored"] else math.nan for s in steps],
                name=f"censored seeds (no grok in {budget} steps)",
                color=PALETTE[3],
                symbol="x",
                text=grok_text,
            ),
        ],
        caption="Bars: mean over the seeds that reached 99% val, error bars the 95% t-interval; x at the budget: the arm has "
        "seeds that never grokked (counted in the hover text, never averaged in).",
    )
    test_fig = Figure(
        f"interventions_test_acc{suffix}",
        f"Final test accuracy per intervention (locked test split), {float(frac):.0%} train",
        "intervention",
        "test accuracy (fraction correct)",
        [
            Series(
                "bar",
                labels,
                [t["mean"] for t in tests],
                name="final test acc (95% CI)",
                color=SPLIT_COLORS["test"],
                error=[half(t) for t in tests],
                text=grok_text,
            )
        ],  # fmt: skip
    )
    return [steps_fig, test_fig]


def _data_efficiency(per_arm: dict[str, dict[str, Any]], budget: int) -> Figure:
    """Power et al.'s Fig 2 (left): accuracy reached within the budget vs training fraction, one line per arm."""
    series = []
    for i, (label, a) in enumerate(per_arm.items()):
        fracs = list(a["by_frac"])
        at = [a["by_frac"][f] for f in fracs]
        text = [f"{label}, {float(f):.0%} train: {x['steps_to_val_acc_99']['n']}/{a['seeds']} grokked" for f, x in zip(fracs, at, strict=True)]
        xs = [float(f) for f in fracs]
        series.append(Series("line", xs, [x["final_test_acc"]["mean"] for x in at], name=label, color=PALETTE[i % len(PALETTE)], text=text))
    return Figure(
        "interventions_data_efficiency",
        f"Final test accuracy within {budget} steps vs training fraction, per intervention",
        "training fraction (share of all pairs)",
        "test accuracy (mean over seeds)",
        series,
        caption="Power et al. measure an intervention by how little data it needs to generalize within a fixed budget.",
    )


def interventions(dirs: dict[str, Path], scale: str) -> Findings:
    members = rows(dirs["sweep"])
    keys = [k for k in ARM_FIELDS if len({r.get(k) for r in members}) > 1]
    arms = group(members, *keys)
    labels = arm_labels(list(arms), keys)
    fractions = sorted({float(r["task.train_frac"]) for r in members})
    budget = step_budget(dirs["sweep"], members)
    # Per arm and training fraction: steps to grok over the seeds (censored counted) and the final test accuracy.
    per_arm: dict[str, dict[str, Any]] = {}
    for label, at_arm in zip(labels, arms.values(), strict=True):
        by_frac = {float(f): m for (f,), m in sorted(group(at_arm, "task.train_frac").items())}
        steps = {f: summary_steps(m) for f, m in by_frac.items()}
        per_arm[label] = {
            "settings": {k: at_arm[0][k] for k in ARM_FIELDS},  # every arm field, varied or not: what the claims read
            "seeds": len(by_frac[fractions[0]]),
            "min_frac": generalizes_from(steps),
            "by_frac": {
                f"{f:g}": {"steps_to_val_acc_99": steps[f], "final_test_acc": estimate(mean_ci([r["test/acc"] for r in m]))}
                for f, m in by_frac.items()
            },
        }
    several = len(fractions) > 1
    figures = [fig for f in fractions for fig in _arm_bars(per_arm, f"{f:g}", budget, f"_{f:g}" if several else "")]
    if several:
        figures.insert(0, _data_efficiency(per_arm, budget))

    # Best: the least data to generalize, then most seeds grokked, then fewest steps and highest test accuracy at the largest fraction.
    def rank(a: str) -> tuple[float, ...]:
        top = per_arm[a]["by_frac"][f"{fractions[-1]:g}"]
        grokked = sum(x["steps_to_val_acc_99"]["n"] for x in per_arm[a]["by_frac"].values())
        return (per_arm[a]["min_frac"] or math.inf, -grokked, top["steps_to_val_acc_99"]["mean"] or math.inf, -(top["final_test_acc"]["mean"] or 0))

    def describe(a: str) -> str:
        parts = []
        for f, x in per_arm[a]["by_frac"].items():
            st = x["steps_to_val_acc_99"]
            at = f" at {st['mean']:.0f} steps" if st["mean"] is not None else ""
            parts.append(f"{f'{float(f):.0%}: ' if several else ''}{st['n']}/{per_arm[a]['seeds']} seeds grokked{at}, test acc {x['final_test_acc']['mean']:.3f}")
        return "; ".join(parts)

    best = min(labels[1:] or labels, key=rank)
    first = members[0]
    train = ", ".join(f"{f:.0%}" for f in fractions)
    setting = f"{first['model.name']} on {first['task.op']} at {train} train, {budget}-step budget"
    headline = f"best intervention: {best} ({describe(best)}) vs {labels[0]} ({describe(labels[0])}); {setting}"
    numbers = {
        "headline": headline,
        "setting": setting,
        "budget_steps": budget,
        "fractions": fractions,
        "arms": labels,
        "varied_fields": keys,
        "best": best,
        "per_arm": per_arm,
    }
    return Findings(numbers, figures)


RECIPES = [
    Recipe("power-fig1", "Power et al. Fig 1: train vs val accuracy over log steps, transformer on x/y mod 97 at 50%", ("sweep",), fig1),
    Recipe(
        "power-fig2", "Power et al. Fig 2: steps to 99% val vs training fraction for the 12 operations, with seed CIs", ("sweep",), fig2
    ),
    Recipe(
        "power-interventions",
        "Power et al.: steps to grok and test acc under weight decay, dropout, noise, Adam/AdamW, batch size",
        ("sweep",),
        interventions,
    ),
    Recipe(
        "op-difficulty",
        "Power et al.: the operations ranked by the smallest training fraction at which they grok",
        ("sweep",),
        op_difficulty,
    ),
]
