"""The regime recipes at their quick scale, end to end (slow): each asserts the phenomenon where it should appear
and its absence where it should not, on fixed seeds."""

from __future__ import annotations

from pathlib import Path

import pytest

from groklab.experiments.recipes import run_recipe

pytestmark = pytest.mark.slow


def arm(findings: dict, prefix: str) -> dict:
    """The one arm whose label starts with `prefix`."""
    (match,) = [a for name, a in findings["arms"].items() if name.startswith(prefix)]
    return match


def test_slingshot_spikes_appear_with_adam_without_weight_decay(tmp_path: Path) -> None:
    f = run_recipe("slingshot", tmp_path / "r", scale="quick", workers=2, quiet=True)
    adam, control = arm(f, "adam lr"), arm(f, "adamw lr")
    assert all(n >= 1 for n in adam["loss_spikes_per_seed"]), adam
    assert all(n >= 1 for n in adam["norm_breaks_per_seed"]), adam
    assert sum(control["loss_spikes_per_seed"]) < sum(adam["loss_spikes_per_seed"]), control
    assert (tmp_path / "r" / "figures" / "slingshot_0.png").is_file()
    assert "loss spikes" in f["headline"]


def test_parity_delay_shrinks_with_data_and_the_sparse_circuit_wins(tmp_path: Path) -> None:
    f = run_recipe("parity", tmp_path / "r", scale="quick", workers=2, quiet=True)
    small, mid, large = (f["per_n_samples"][k] for k in ("1000", "2000", "4000"))
    assert mid["grok_delay"]["n"] == large["grok_delay"]["n"] == 2  # enough data: both seeds grok
    assert small["grok_delay"]["censored"] == 2  # too little: memorization only, within the budget
    assert 0 <= large["grok_delay"]["mean"] < mid["grok_delay"]["mean"]
    # The sparse circuit overtakes the dense one in every run that generalizes, and in none that only memorizes.
    assert None not in mid["sparse_overtakes_dense"]["per_seed"] + large["sparse_overtakes_dense"]["per_seed"]
    assert small["sparse_overtakes_dense"]["per_seed"] == [None, None]
    assert min(mid["final_sparse_share"] + large["final_sparse_share"]) > 0.5 > 0.1 > max(small["final_sparse_share"])
    # Pruned by norm, the networks that generalized keep their accuracy with fewer neurons than those that memorized.
    assert max(mid["final_n_subnetwork"] + large["final_n_subnetwork"]) < min(small["final_n_subnetwork"])
    assert (tmp_path / "r" / "figures" / "parity_circuits.png").is_file()
    assert (tmp_path / "r" / "figures" / "parity_subnetwork.png").is_file()


def test_stablemax_and_orthograd_grok_without_weight_decay_where_softmax_collapses(tmp_path: Path) -> None:
    f = run_recipe("stablemax", tmp_path / "r", scale="quick", workers=2, quiet=True)
    softmax, stable = f["arms"]["softmax CE"], f["arms"]["StableMax CE"]
    assert softmax["steps_to_val_acc_99"]["censored"] == 2  # plain softmax without weight decay: no grokking
    assert softmax["collapsed_own_loss_max"]["mean"] > 0.5  # most training samples lost their gradient
    for name in ("StableMax CE", "StableMax CE + ⊥Grad", "softmax CE + ⊥Grad"):
        assert f["arms"][name]["steps_to_val_acc_99"]["censored"] == 0, name
    assert stable["collapsed_own_loss_max"]["mean"] == 0.0
    assert stable["steps_to_val_acc_99"]["mean"] > stable["steps_to_train_acc_99"]["mean"]  # train first: grokking
    assert (tmp_path / "r" / "figures" / "stablemax_collapse.png").is_file()


def test_avoid_grokking_wd_groks_late_and_without_regularization_val_lags(tmp_path: Path) -> None:
    f = run_recipe("avoid-grokking", tmp_path / "r", scale="quick", workers=2, quiet=True)
    baseline, off, batch50 = arm(f, "wd 1"), arm(f, "no wd, adamw lr 0.003, full batch"), arm(f, "no wd, adamw lr 0.003, batch 50")
    assert baseline["grok_delay"]["censored"] == 0 and baseline["grok_delay"]["mean"] > 0  # weight decay: grokking
    assert off["steps_to_train_acc_99"]["censored"] == 0 and off["steps_to_val_acc_99"]["censored"] == 2  # fits, never generalizes
    assert batch50["final_val_acc"]["mean"] > off["final_val_acc"]["mean"] + 0.2  # minibatch noise regularizes
    assert (tmp_path / "r" / "figures" / "avoid_curves.png").is_file()


def test_grokfast_reports_filters_next_to_the_lr_matched_baselines(tmp_path: Path) -> None:
    f = run_recipe("grokfast", tmp_path / "r", scale="quick", workers=2, quiet=True)
    steps = f["steps_to_val_acc_95"]
    assert len(steps) == 5 and all(a["censored"] == 0 for a in steps.values())  # every arm reaches 95% val
    fair = {c["arm"].split(" (")[0]: c for c in f["comparisons"]}
    assert set(fair) == {"Grokfast-EMA", "Grokfast-MA"} and all("lr_matched" in c and "same_lr" in c for c in fair.values())
    assert f["published"]["baseline"] == 39_890 and "39,890" in f["headline"]
    # Measured here: raising the baseline's lr by (1 + λ) beats each filter, and EMA gives no speed-up at the same lr.
    assert all(c["lr_matched"]["speedup"] < 1 for c in fair.values()), fair
    assert fair["Grokfast-EMA"]["same_lr"]["speedup"] < 1.1, fair
