"""Sparse parity and the two circuits (Merrill et al. 2023): an MLP on n random bits whose label is the parity of k
of them first memorizes with a dense circuit (all neurons, all bits); a sparse circuit of a few neurons reading
only the k relevant bits grows in norm, and the network generalizes when it overtakes the dense one (weight decay
shrinks the dense circuit, which needs more norm for the same margin).

parity: one sweep over the dataset size (task.n_samples) with `--analysis circuit`, which logs the norms of the
sparse neurons (most of their input weight on the k relevant bits) and of the rest, and the paper's pruned circuit
size (the fewest largest-norm neurons that keep the training accuracy). Findings: the grokking delay (99% train ->
99% val) per dataset size, the step at which the sparse circuit's norm overtakes the dense one next to the step of
99% val, and both circuit sizes at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from groklab.experiments.recipes import Findings, Recipe
from groklab.experiments.recipes.common import (
    PALETTE,
    SPLIT_COLORS,
    band,
    censored_stats,
    first_step,
    group,
    last_logged,
    rows,
    run_data,
    summary_steps,
)
from groklab.report.data import RunData
from groklab.report.plots import Figure, Series
from groklab.stats import GROK_ACC


def overtake_step(run: RunData) -> int | None:
    """First logged step at which the sparse circuit's norm is above the dense circuit's (None if never)."""
    sparse, dense = run.columns.get("circuit/sparse"), run.columns.get("circuit/dense")
    if sparse is None or dense is None:
        return None
    hit = np.nonzero(sparse > dense)[0]  # NaN rows (no analysis) compare False
    return int(run.steps[hit[0]]) if hit.size else None


def analyze(dirs: dict[str, Path], scale: str) -> Findings:
    sweep = dirs["sweep"]
    by_size = group(rows(sweep), "task.n_samples")
    per_size: dict[str, Any] = {}
    xs, means, errs, labels = [], [], [], []
    circuit_fig = subnetwork_fig = None
    for (n_samples,), members in sorted(by_size.items()):
        runs = [run_data(sweep, r) for r in members]
        delay = summary_steps(members, "grok_delay")
        overtakes = [overtake_step(r) for r in runs]
        val99 = [first_step(r, "val/acc", GROK_ACC) for r in runs]
        per_size[str(n_samples)] = {
            "n_train": int(round(n_samples * members[0]["task.train_frac"])),
            "grok_delay": delay,
            "steps_to_train_acc_99": summary_steps(members, "steps_to_train_acc_99"),
            "steps_to_val_acc_99": summary_steps(members, "steps_to_val_acc_99"),
            "sparse_overtakes_dense": censored_stats(overtakes),
            "overtake_minus_val_99": [o - v if o is not None and v is not None else None for o, v in zip(overtakes, val99, strict=True)],
            "final_sparse_share": [round(last_logged(r, "circuit/sparse_share"), 4) for r in runs],  # type: ignore[arg-type]
            "final_n_sparse": [int(last_logged(r, "circuit/n_sparse")) for r in runs],  # type: ignore[arg-type]
            "final_n_subnetwork": [int(v) for r in runs if (v := last_logged(r, "circuit/n_subnetwork")) is not None],
            "final_val_acc": [r.get("val/acc") for r in members],
        }
        xs.append(f"{n_samples} samples")
        means.append(delay["mean"] or 0.0)
        errs.append(delay["hi"] - delay["mean"] if delay["hi"] is not None else 0.0)
        labels.append(f"{delay['n']} grokked, {delay['censored']} censored")
        if circuit_fig is None and delay["n"]:
            circuit_fig = circuits_figure(runs[0], members[0])
            subnetwork_fig = subnetwork_figure(runs, members)
    first = next(iter(by_size.values()))[0]
    setting = f"n={first['task.n_bits']}, k={first['task.k_bits']}, MLP width {first['model.width']}, wd {first['optim.weight_decay']:g}"
    delay_fig = Figure(
        "parity_delay",
        f"Sparse parity: grokking delay vs dataset size ({setting})",
        "samples drawn (train + val + test)",
        "steps from 99% train to 99% val",
        [Series("bar", xs, means, name="grokking delay (mean, 95% CI)", color=PALETTE[0], error=errs, text=labels)],
        caption="Mean over the seeds that grokked; seeds that never reached 99% val are censored and counted in the labels "
        "(a size where none grokked shows no bar).",
    )
    figures = [delay_fig] + [f for f in (circuit_fig, subnetwork_fig) if f is not None]
    return Findings({"headline": headline(per_size), "setting": setting, "per_n_samples": per_size}, figures)


def circuits_figure(run: RunData, row: dict[str, Any]) -> Figure:
    keep = ~np.isnan(run.columns["circuit/sparse"])
    steps = run.steps[keep].tolist()
    series = [
        Series(
            "line",
            steps,
            run.columns["circuit/sparse"][keep].tolist(),
            name="sparse circuit norm (neurons on the k bits)",
            color=PALETTE[2],
        ),
        Series("line", steps, run.columns["circuit/dense"][keep].tolist(), name="dense circuit norm (the other neurons)", color=PALETTE[3]),
    ]
    acc = [
        s for s in band([run], "val/acc", "val acc (x10)", SPLIT_COLORS["val"], dash=True, transform=lambda v: 10 * v) if s.kind == "line"
    ]
    marks = [
        (s, label, c)
        for s, label, c in (
            (overtake_step(run), "sparse > dense", PALETTE[2]),
            (first_step(run, "val/acc", GROK_ACC), "val 99%", SPLIT_COLORS["val"]),
        )
        if s is not None
    ]
    return Figure(
        "parity_circuits",
        f"Two circuits: per-neuron norm competition ({row['task.n_samples']} samples, seed {row['seed']})",
        "step (optimizer updates)",
        "L2 norm (val acc x10)",
        series + acc,
        vlines=marks,
        caption="A neuron is sparse when more than half of its squared input weight is on the k relevant bits.",
    )


def subnetwork_figure(runs: list[RunData], members: list[dict[str, Any]]) -> Figure | None:
    """The pruned circuit's size over training, one line per seed (the paper's sparsity over time); None before the metric existed."""
    if not all("circuit/n_subnetwork" in r.columns for r in runs):
        return None
    series, marks = [], []
    for i, (run, row) in enumerate(zip(runs, members, strict=True)):
        keep = ~np.isnan(run.columns["circuit/n_subnetwork"])
        color = PALETTE[i % len(PALETTE)]
        series.append(
            Series(
                "line",
                run.steps[keep].tolist(),
                run.columns["circuit/n_subnetwork"][keep].tolist(),
                name=f"seed {row['seed']}",
                color=color,
            )
        )
        if (step := first_step(run, "val/acc", GROK_ACC)) is not None:
            marks.append((step, "" if marks else "val 99%", color))  # one label: the seeds' lines sit close together
    return Figure(
        "parity_subnetwork",
        f"The circuit's size over training ({members[0]['task.n_samples']} samples)",
        "step (optimizer updates)",
        "neurons that keep the training accuracy",
        series,
        vlines=marks,
        ylog=True,
        caption="The fewest neurons, taken by input-weight norm from the largest, whose network alone has the full network's "
        "training accuracy (Merrill et al.'s pruning); a dotted line in a seed's colour marks its first 99% val.",
    )


def headline(per_size: dict[str, Any]) -> str:
    parts = []
    for n, a in per_size.items():
        d = a["grok_delay"]
        total = d["n"] + d["censored"]
        if d["n"]:
            parts.append(f"{n} samples: delay {d['mean']:.0f} steps ({d['n']}/{total} grokked)")
        else:
            parts.append(f"{n} samples: never grokked (0/{total})")
    shares = "; ".join(f"{n}: {'/'.join(f'{s:.2f}' for s in a['final_sparse_share'])}" for n, a in per_size.items())
    sizes = "; ".join(f"{n}: {'/'.join(map(str, a['final_n_subnetwork']))}" for n, a in per_size.items() if a["final_n_subnetwork"])
    pruned = f". Neurons that keep the training accuracy (pruned by norm) at the end, per seed: {sizes}" if sizes else ""
    return "; ".join(parts) + f". Sparse circuit's share of the squared norm at the end, per seed: {shares}" + pruned


RECIPES = [
    Recipe(
        "parity",
        "Merrill et al. 2023: sparse parity with an MLP; sparse vs dense circuit norms, grokking delay vs dataset size",
        ("sweep",),
        analyze,
    ),
]
