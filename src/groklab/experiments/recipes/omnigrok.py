"""Liu et al. 2023 (Omnigrok): grokking comes from a large weight norm, and fixing the norm removes it.

Two parts per recipe:

* ``alpha``: the same network initialized at scale α = 1 and at a large α (every initial weight times α),
  trained without and with Omnigrok's norm constraint (``optim.norm_constraint``: after every step all
  parameters are rescaled to that factor times their initial total L2 norm; 1/α puts the large-α network on the
  sphere of α = 1's initial norm). At large α the train set is fitted long before the test set; weight decay
  then shrinks the norm slowly and test accuracy follows it. At α = 1, and at large α held on the α = 1 sphere,
  train and test rise together.
* ``lu``: α = 1, no weight decay, the norm held at a range of factors of the initial norm: final train and test
  loss vs the weight norm (Omnigrok's "LU" figure: train loss falls with the norm, test loss is U-shaped).

omnigrok-digits is Omnigrok's MNIST setting (MLP, MSE loss, 1,000 training images) on scikit-learn's 8×8 digits,
which need no download. MNIST runs from IDX files by editing the spec (``"task.name" = "mnist"`` and
``"task.data_dir" = "DIR"``; ``groklab recipe omnigrok-digits --print-spec alpha``). omnigrok-modular is Omnigrok's
algorithmic setting, modular addition, here on the MLP with cross-entropy (the spec's description says why).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import (
    PALETTE,
    SPLIT_COLORS,
    Series,
    band,
    censored_stats,
    first_step,
    group,
    rows,
    run_data,
    step_budget,
)
from groklab.report.data import RunData
from groklab.report.plots import Figure
from groklab.stats import GROK_ACC

TRAIN_FIT = GROK_ACC
"""Train accuracy that counts as fitted."""
VAL_GEN = {"omnigrok-digits": 0.95, "omnigrok-modular": GROK_ACC}
"""Validation accuracy that counts as generalized: 8×8 digits saturate below 99%, so 95% there; modular addition
reaches 100%, so the usual 99%."""


def setting_label(init_scale: float, constraint: float) -> str:
    norm = f"norm held at {constraint:g}× init" if constraint > 0 else "free norm"
    return f"α = {init_scale:g}, {norm}"


def alpha_settings(sweep: Path, val_gen: float) -> tuple[list[dict[str, Any]], list[Series], list[Series]]:
    """Per (α, norm constraint): steps to fit train, to generalize, the delay (JSON) and the accuracy / norm curves."""
    settings, acc_series, norm_series = [], [], []
    for i, ((alpha, constraint), members) in enumerate(group(rows(sweep), "model.init_scale", "optim.norm_constraint").items()):
        runs = [run_data(sweep, r) for r in members]
        fit = [first_step(r, "train/acc", TRAIN_FIT) for r in runs]
        gen = [first_step(r, "val/acc", val_gen) for r in runs]
        delay = [g - f if f is not None and g is not None else None for f, g in zip(fit, gen, strict=True)]
        settings.append({
            "init_scale": alpha, "norm_constraint": constraint, "label": setting_label(alpha, constraint), "seeds": len(runs),
            "steps_to_train_fit": censored_stats(fit), "steps_to_val_gen": censored_stats(gen), "delay": censored_stats(delay),
            "initial_norm": float(np.mean([r.columns["norm/total"][0] for r in runs])),
            "final_test_acc": [float(r.columns["test/acc"][-1]) for r in runs],
        })  # fmt: skip
        color = PALETTE[i % len(PALETTE)]
        label = setting_label(alpha, constraint)
        acc_series += band(runs, "train/acc", f"train, {label}", color, dash=True) + band(runs, "val/acc", f"val, {label}", color)
        norm_series += band(runs, "norm/total", label, color)
    return settings, acc_series, norm_series


def lu_points(sweep: Path) -> list[dict[str, Any]]:
    """Final weight norm and train / test loss per held norm (mean over seeds), sorted by norm."""
    points = []
    for (constraint,), members in group(rows(sweep), "optim.norm_constraint").items():
        runs = [run_data(sweep, r) for r in members]
        keys = {
            "norm": "norm/total",
            "train_loss": "train/loss",
            "test_loss": "test/loss",
            "train_acc": "train/acc",
            "test_acc": "test/acc",
        }
        points.append({"norm_constraint": constraint, **{k: float(np.mean([r.columns[m][-1] for r in runs])) for k, m in keys.items()}})
    return sorted(points, key=lambda p: p["norm"])


U_MARGIN = 1.05
"""How far above the minimum the loss must be at both ends of the norm axis for a U (modelwise's margin), so that noise
around a flat curve is not one."""


def u_shaped(loss: Sequence[float]) -> bool:
    """Whether `loss` (ordered by norm) has its minimum inside: over U_MARGIN times it at the smallest and the largest norm."""
    return min(loss[0], loss[-1]) > U_MARGIN * min(loss)


def small_norm_underfits(train_loss: Sequence[float]) -> bool:
    """Whether train loss at the smallest norm (first) is over 10x the lowest train loss at any norm."""
    return train_loss[0] > 10 * min(train_loss)


def overfits_at_large_norm(gap: Sequence[float], best: int) -> bool:
    """Whether test minus train loss at the largest norm (last) is over 10x that at index `best` (the best test loss)."""
    return gap[-1] > 10 * gap[best]


def trajectory(run: RunData) -> list[Series]:
    """Train and test loss against the weight norm along one run (x: norm, which shrinks as it trains)."""
    norm = run.columns["norm/total"].tolist()
    return [
        Series(
            "line",
            norm,
            run.columns[f"{split}/loss"].tolist(),
            name=f"{split}, large-α run along training",
            color=SPLIT_COLORS[split],
            dash=True,
        )
        for split in ("train", "test")
    ]


def delay_text(setting: dict[str, Any], budget: int) -> str:
    d = setting["delay"]
    if d["censored"] == setting["seeds"]:
        return f"{setting['label']}: never generalized within {budget} steps"
    return f"{setting['label']}: {d['mean']:.0f} steps" + (f" ({d['censored']} seed(s) never)" if d["censored"] else "")


def analyze_for(name: str) -> Callable[[dict[str, Path], str], Findings]:
    """The `analyze` of recipe `name` (the two recipes differ only in what counts as generalized)."""
    val_gen = VAL_GEN[name]

    def analyze(dirs: dict[str, Path], scale: str) -> Findings:
        settings, acc_series, norm_series = alpha_settings(dirs["alpha"], val_gen)
        alpha_rows = rows(dirs["alpha"])
        first = alpha_rows[0]
        budget = step_budget(dirs["alpha"], alpha_rows)
        task = (
            f"{first['task.op']} mod {first['task.p']}"
            if first["task.name"] == "binop"
            else f"{first['task.name']} ({first['task.train_size']} train images)"
        )
        model = f"MLP width {first['model.width']}" if first["model.name"] == "mlp" else f"{first['model.n_layers']}-layer transformer"
        setting = f"{task}, {model}, {first['loss']} loss, wd {first['optim.weight_decay']}"
        points = lu_points(dirs["lu"])
        large = max((s for s in settings if s["norm_constraint"] == 0), key=lambda s: s["init_scale"])
        large_run = run_data(
            dirs["alpha"],
            next(r for r in rows(dirs["alpha"]) if r["model.init_scale"] == large["init_scale"] and r["optim.norm_constraint"] == 0),
        )
        norms = [p["norm"] for p in points]
        figures = [
            Figure(
                f"{name}_accuracy",
                "Omnigrok: accuracy vs steps at init scale α",
                "step (optimizer updates)",
                "accuracy",
                acc_series,
                caption=f"{setting}. Dashed: train, solid: validation; mean over seeds with 95% bands. Generalized = val acc ≥ {val_gen:.0%}, fitted = train acc ≥ {TRAIN_FIT:.0%}.",
            ),
            Figure(
                f"{name}_norm",
                "Total weight norm vs steps",
                "step (optimizer updates)",
                "total L2 norm of all parameters",
                norm_series,
                caption="Weight decay shrinks the large-α network's norm; validation accuracy rises as it approaches α = 1's norm. The constrained runs stay on their sphere.",
            ),
            Figure(
                f"{name}_lu",
                "Omnigrok LU: train and test loss vs weight norm",
                "total weight norm (L2, held fixed during training)",
                f"{first['loss']} loss (log scale)",
                [
                    Series("line", norms, [p["train_loss"] for p in points], name="train (norm held fixed)", color=SPLIT_COLORS["train"]),
                    Series("markers", norms, [p["train_loss"] for p in points], color=SPLIT_COLORS["train"], legend=False),
                    Series("line", norms, [p["test_loss"] for p in points], name="test (norm held fixed)", color=SPLIT_COLORS["test"]),
                    Series("markers", norms, [p["test_loss"] for p in points], color=SPLIT_COLORS["test"], legend=False),
                    *trajectory(large_run),
                ],
                xlog=True,
                ylog=True,
                caption=(
                    f"Solid: each point one run at α = 1 without weight decay, its norm held fixed (final losses after {step_budget(dirs['lu'], rows(dirs['lu']))} steps, mean over seeds). "
                    f"Dashed: the free α = {large['init_scale']:g} run (first seed) as weight decay moves it from large norm to small."
                ),
            ),
        ]
        best = min(points, key=lambda p: p["test_loss"])
        u = u_shaped([p["test_loss"] for p in points])
        # The L: below the best norm the network cannot fit (train loss high); the U: above it, test loss climbs
        # away from train loss (overfitting). With a fixed Adam lr the largest norms also fit more slowly, so train
        # loss need not keep falling within the budget: reported, not assumed.
        underfits = small_norm_underfits([p["train_loss"] for p in points])
        gap = [p["test_loss"] - p["train_loss"] for p in points]
        overfits = overfits_at_large_norm(gap, points.index(best))
        constrained = [s for s in settings if s["norm_constraint"] > 0]
        small = min(settings, key=lambda s: (s["init_scale"], s["norm_constraint"]))
        headline = (
            f"Steps from fitting train (≥{TRAIN_FIT:.0%}) to generalizing (val ≥{val_gen:.0%}): "
            + "; ".join(delay_text(s, budget) for s in [small, large, *constrained])
            + f". Test loss vs held norm is {'U-shaped' if u else 'not U-shaped'} with its minimum at norm {best['norm']:.3g}"
            + f" (α = 1 starts at {small['initial_norm']:.3g}); train loss at the smallest norm is {points[0]['train_loss']:.2g}"
            + f" vs down to {min(p['train_loss'] for p in points):.2g} elsewhere; test minus train loss is {gap[points.index(best)]:.2g} at the best norm"
            + f" and {gap[-1]:.2g} at the largest."
        )
        numbers = {
            "headline": headline,
            "setting": setting,
            "train_fit_acc": TRAIN_FIT,
            "val_gen_acc": val_gen,
            "budget_steps": budget,
            "settings": settings,
            "lu": points,
            "lu_best_norm": best["norm"],
            "lu_test_u_shaped": u,
            "lu_small_norm_underfits": underfits,
            "lu_test_minus_train": gap,
            "lu_overfits_at_large_norm": overfits,
        }
        return Findings(numbers, figures)

    return analyze


RECIPES = [
    Recipe(
        "omnigrok-digits",
        "Liu et al. 2023 (Omnigrok): large init scale α delays generalization on 1,000 images (MLP, MSE); a fixed weight norm removes it; LU curves",
        ("alpha", "lu"),
        analyze_for("omnigrok-digits"),
    ),
    Recipe(
        "omnigrok-modular",
        "Liu et al. 2023 (Omnigrok): init scale α and norm-constrained training on modular addition (MLP); LU curves",
        ("alpha", "lu"),
        analyze_for("omnigrok-modular"),
    ),
]
