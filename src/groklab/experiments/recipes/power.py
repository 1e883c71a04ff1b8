"""Power et al. 2022: the grokking curves (Fig 1).

power-fig1: the 2-layer transformer on x/y mod 97 with half of the table for training. Train accuracy
reaches 99% long before validation accuracy does; the figure shows both (and the locked test split)
over log steps, mean and 95% band over seeds, with the two 99% points marked.
"""

from __future__ import annotations

from pathlib import Path

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import SPLIT_COLORS, band, rows, run_data, summary_steps
from groklab.report.plots import Figure


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


RECIPES = [
    Recipe("power-fig1", "Power et al. Fig 1: train vs val accuracy over log steps, transformer on x/y mod 97 at 50%", ("sweep",), fig1),
]
