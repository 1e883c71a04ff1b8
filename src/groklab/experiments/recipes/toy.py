"""Liu et al. 2022 ("Towards understanding grokking: an effective theory"): their toy model on addition.

The model (model.name = "toy") embeds each of 0..p−1 and decodes the sum E_a + E_b to a fixed random target per
answer; it generalizes exactly when the embedding becomes linear (parallelograms E_i + E_j = E_m + E_n for
i + j = m + n), which the representation quality index (RQI) and the effective loss ℓ_eff = ℓ₀ / Z₀ measure.

Two parts: ``fraction``, a sweep over the training fraction of the p(p+1)/2 unordered pairs with RQI and ℓ_eff
logged (the held-out accuracy vs fraction, and the critical fraction above which most seeds generalize); and
``lr-lr``, the phase diagram over the representation lr (optim.embed_lr) × the decoder lr (optim.lr).

Liu et al.'s own critical fraction (their Fig 4a) needs no training: the share of random training sets whose
parallelograms leave the linear representation as the only one. It is computed here beside the trained runs, and for
each run's own training split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from groklab.analysis.phases import PHASES
from groklab.analysis.rqi import inferable, representation_freedom
from groklab.data import build_task
from groklab.data.split import split_sizes
from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import PALETTE, SPLIT_COLORS, band, estimate, group, rows, run_data
from groklab.experiments.recipes.phases import classify, count_text
from groklab.report.plots import Figure, Series, phase_heatmap
from groklab.runio import RunDir
from groklab.stats import mean_ci

HELD_OUT_ACC = 0.9
"""A seed generalized when its accuracy on the held-out pairs (val and test together) is at least 0.9."""
DRAWS = 500
"""Random training sets per size for the share that fixes the linear representation (Liu et al.'s Fig 4a: 100)."""


def held_out_acc(row: dict[str, Any]) -> float:
    """Final accuracy over every pair outside the training set: val and test weighted by their sizes.

    With 55 pairs the val and test splits hold a handful each; Liu et al. score all unseen pairs together.
    """
    p = int(row["task.p"])
    n = p * (p + 1) // 2
    n_train, n_val = split_sizes(n, float(row["task.train_frac"]), float(row["task.val_frac"]))
    n_test = n - n_train - n_val
    return (n_val * float(row["val/acc"]) + n_test * float(row["test/acc"])) / (n_val + n_test)


def critical_fraction(per_fraction: dict[float, list[float]]) -> float | None:
    """The smallest training fraction from which on (it and every larger one swept) most seeds generalize; None if none."""
    return first_of_majorities({f: [a >= HELD_OUT_ACC for a in accs] for f, accs in per_fraction.items()})


def first_of_majorities(per_fraction: dict[float, list[bool]]) -> float | None:
    """The smallest fraction from which on (it and every larger one) more than half of the outcomes are true; None if none."""
    critical = None
    for frac in sorted(per_fraction, reverse=True):
        if sum(per_fraction[frac]) * 2 <= len(per_fraction[frac]):
            break
        critical = frac
    return critical


def unique_linear(p: int, draws: int = DRAWS, seed: int = 0) -> dict[float, list[bool]]:
    """Training fraction (size / N for every size 1..N−1 of the N = p(p+1)/2 unordered pairs) -> for each of `draws`
    random training sets of that size, whether its parallelograms leave the linear representation as the only one."""
    pairs, rng = np.stack(np.triu_indices(p), axis=1), np.random.default_rng(seed)
    n = len(pairs)
    return {k / n: [representation_freedom(pairs[rng.permutation(n)[:k]], p) == 2 for _ in range(draws)] for k in range(1, n)}


def split_theory(sweep: Path, row: dict[str, Any]) -> tuple[bool, float]:
    """This run's own training split: whether it leaves the linear representation as the only one, and its ideal
    held-out accuracy (the share of held-out pairs whose answer the training parallelograms determine)."""
    config = RunDir(sweep / str(row["run_dir"])).read_config()
    data = build_task(config.task, config.split_seed)
    operands = data.x[:, list(data.operand_positions)]
    train, held_out = operands[data.train], operands[torch.cat([data.val, data.test])]
    p = config.task.p
    return representation_freedom(train, p) == 2, float(inferable(train, held_out, p).mean())


def fraction_findings(sweep: Path) -> tuple[dict[str, Any], list[Figure]]:
    by_frac = group(rows(sweep), "task.train_frac")
    per_fraction = {float(f): [held_out_acc(r) for r in members] for (f,), members in sorted(by_frac.items())}
    critical = critical_fraction(per_fraction)
    split = {float(f): [split_theory(sweep, r) for r in members] for (f,), members in by_frac.items()}
    table = {
        f"{f:g}": {
            "held_out_acc": estimate(mean_ci(accs)),
            "per_seed": [round(a, 4) for a in accs],
            "generalized": sum(a >= HELD_OUT_ACC for a in accs),
            "seeds": len(accs),
            "fixes_linear": [fixed for fixed, _ in split[f]],
            "ideal_acc": [round(ideal, 4) for _, ideal in split[f]],
        }
        for f, accs in per_fraction.items()
    }
    p = int(next(iter(by_frac.values()))[0]["task.p"])
    theory = unique_linear(p)
    share = {f: sum(v) / len(v) for f, v in theory.items()}
    outcomes = [  # per run: its split fixes the line, it reached held-out HELD_OUT_ACC, it reached its split's ideal
        (fixed, acc >= HELD_OUT_ACC, ideal > 0 and acc >= ideal - 1e-6)
        for f, accs in per_fraction.items()
        for (fixed, ideal), acc in zip(split[f], accs, strict=True)
    ]
    unique = {
        "critical_fraction": first_of_majorities(theory),
        "draws": DRAWS,
        "share": {f"{f:.4g}": s for f, s in share.items()},
        "runs_fixed": sum(fixed for fixed, _, _ in outcomes),
        "runs_fixed_generalized": sum(fixed and gen for fixed, gen, _ in outcomes),
        "runs_free_generalized": sum(gen and not fixed for fixed, gen, _ in outcomes),
        "runs_fixed_at_ideal": sum(fixed and at for fixed, _, at in outcomes),
        "runs": len(outcomes),
    }
    fracs = list(per_fraction)
    stats = [mean_ci(a) for a in per_fraction.values()]
    clip = lambda v, m: min(max(m if v != v else v, 0.0), 1.0)  # noqa: E731  (no interval with one seed: the mean)
    acc_fig = Figure(
        "toy_fraction",
        "Toy model: held-out accuracy vs training fraction",
        "training fraction of the unordered pairs",
        "held-out accuracy (val + test)",
        [
            Series(
                "band",
                fracs,
                [clip(e.lo, e.mean) for e in stats],
                upper=[clip(e.hi, e.mean) for e in stats],
                color=PALETTE[0],
                legend=False,
            ),
            Series("line", fracs, [e.mean for e in stats], name="mean over seeds (95% CI)", color=PALETTE[0]),
            Series(
                "line",
                fracs,
                [sum(ideal for _, ideal in split[f]) / len(split[f]) for f in fracs],
                name="ideal accuracy of the runs' splits (mean)",
                color=PALETTE[2],
                dash=True,
            ),
            Series(
                "line",
                list(share),
                list(share.values()),
                name="share of training sets that fix the linear representation",
                color=PALETTE[1],
                dash=True,
            ),
        ],
        vlines=[
            (c, f"{name} {c:.2g}", color)
            for c, name, color in ((critical, "trained", PALETTE[3]), (unique["critical_fraction"], "training sets", PALETTE[1]))
            if c is not None
        ],
        caption=f"A seed generalizes at held-out accuracy ≥ {HELD_OUT_ACC:g}; the trained critical fraction is the smallest from which on most "
        f"seeds do. Dashed: over {DRAWS} random training sets per size, the share whose parallelograms leave the linear representation "
        "as the only one (Liu et al.'s Fig 4a, no training; they report ≈ 0.4 for p = 10), and the most a model fitted to each run's "
        "training set can score (held-out pairs whose answer its parallelograms determine).",
    )
    shown = critical if critical is not None else fracs[-1]
    runs = [run_data(sweep, r) for r in by_frac[(shown,)]]
    curves = Figure(
        "toy_rqi",
        f"Toy model at training fraction {shown:g}: RQI and effective loss during training",
        "step (optimizer updates)",
        "RQI, ℓ_eff, accuracy",
        band(runs, "rqi", "RQI", PALETTE[2])
        + band(runs, "effective_loss", "effective loss ℓ_eff", PALETTE[3])
        + band(runs, "train/acc", "train acc", SPLIT_COLORS["train"], dash=True)
        + band(runs, "val/acc", "val acc", SPLIT_COLORS["val"], dash=True),
        xlog=True,
        caption="RQI: share of parallelograms i + j = m + n the embedding satisfies; ℓ_eff: their mean violation over the "
        "training pairs over Σ|E_k|² (0 for a linear representation).",
    )
    findings = {"per_fraction": table, "critical_fraction": critical, "held_out_threshold": HELD_OUT_ACC, "unique_linear": unique}
    return findings, [acc_fig, curves]


def lr_findings(sweep: Path) -> tuple[dict[str, Any], Figure]:
    members, phases = classify(sweep)
    figure = phase_heatmap(members, phases, PHASES)
    if figure is None:
        raise ValueError(f"{sweep}: a phase diagram needs two numeric axes in the spec's grid")
    figure.key, figure.title = "toy_phase_lr", "Toy model phase diagram: representation lr × decoder lr"
    counts = {p: phases.count(p) for p in PHASES}
    cells = [
        {"optim.embed_lr": r.get("optim.embed_lr"), "optim.lr": r.get("optim.lr"), "seed": r.get("seed"), "phase": p}
        for r, p in zip(members, phases, strict=True)
    ]
    return {"counts": counts, "cells": cells}, figure


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    fraction, figures = fraction_findings(dirs["fraction"])
    lr, phase_fig = lr_findings(dirs["lr-lr"])
    critical, unique = fraction["critical_fraction"], fraction["unique_linear"]["critical_fraction"]
    headline = (
        (
            f"trained: critical training fraction {critical:g}"
            if critical is not None
            else "trained: no swept fraction generalized for most seeds"
        )
        + (f"; most training sets fix the linear representation from fraction {unique:.2g}" if unique is not None else "")
        + " (Liu et al.: ≈ 0.4 for p = 10);"
        + f" representation lr × decoder lr: {count_text(lr['counts'])}."
    )
    numbers = {"headline": headline, "critical_fraction": critical, "fraction": fraction, "lr-lr": lr}
    return Findings(numbers, [*figures, phase_fig])


RECIPES = [
    Recipe(
        "liu-toy",
        "Liu et al. 2022: the toy model (a, b) -> Dec(E_a + E_b) on addition, p = 10: RQI and effective loss, the critical "
        "training fraction, the representation lr x decoder lr phase diagram",
        ("fraction", "lr-lr"),
        analyze,
    ),
]
