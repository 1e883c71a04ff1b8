"""End-to-end analysis of real runs: a grokked MLP shows a Fourier circuit, a memorizing one does not."""

from __future__ import annotations

import json
import math
import time

import pytest

from groklab.analysis import analyze_run
from groklab.config import apply_overrides
from groklab.presets import get_preset
from groklab.runio import load_run
from groklab.train import train

pytestmark = pytest.mark.slow


def measure(tmp_path, name: str, overrides: dict[str, object]) -> tuple[dict, dict]:
    """Train the mlp preset (x+y mod 97) with `overrides`; analyze its final checkpoint and its init."""
    config = apply_overrides(get_preset("mlp"), {"device": "cpu", "threads": 1, **overrides})
    train(config, tmp_path / name, progress=False)
    run = load_run(tmp_path / name)
    final, init = analyze_run(run, sharpness=False), analyze_run(run, step=0, sharpness=False)
    print(name, json.dumps({k: final["fourier"][k] for k in ("key_frequencies", "gini", "full_loss", "restricted_loss", "excluded_loss")}))
    print(name, "init gini", init["fourier"]["gini"], "phase", final["phase"], final["phase_boundaries"])
    return final, init


def test_grokked_mlp_shows_a_fourier_circuit(tmp_path) -> None:
    final, init = measure(tmp_path, "grok", {})
    f = final["fourier"]
    assert final["phase"] == "grokking"
    assert 1 <= len(f["key_frequencies"]) <= 16  # a handful (13 of 48 when it stops before cleanup), not dozens
    assert f["gini"] > 5 * init["fourier"]["gini"]
    assert f["restricted_loss"] < 0.1 < f["excluded_loss"]  # log(97) ≈ 4.6 is chance
    assert f["excluded_loss"] > 20 * f["restricted_loss"]
    assert f["logit_variance_explained"] > 0.5
    assert final["embeddings"]["circularity"] > 0.8
    b = final["phase_boundaries"]
    assert b is not None and b["memorization_end"] < b["circuit_formation_end"] <= b["cleanup_end"]


def test_memorizing_mlp_shows_no_circuit(tmp_path) -> None:
    final, init = measure(tmp_path, "memo", {"task.train_frac": 0.2, "optim.weight_decay": 0.0, "steps": 600})
    f = final["fourier"]
    assert final["phase"] == "memorization" and final["phase_boundaries"] is None
    assert f["full_loss"] < 0.01  # it did fit its training set
    assert len(f["key_frequencies"]) == 0 or f["restricted_loss"] > 1.0
    assert f["gini"] < 2 * init["fourier"]["gini"]
    assert f["excluded_loss"] < f["full_loss"] + 0.01  # removing its "key" frequencies costs nothing
    assert f["logit_variance_explained"] < 0.05


def test_analysis_of_a_p113_model_and_a_long_run_takes_seconds(tmp_path) -> None:
    config = apply_overrides(get_preset("nanda"), {"device": "cpu", "threads": 1, "steps": 1})
    train(config, tmp_path / "nanda", progress=False)
    metrics = tmp_path / "nanda" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    with open(metrics, "a") as f:  # a 10⁴-row history: a slowly grokking curve
        for i in range(10_000):
            s = 10 * (i + 2)
            acc = 1 / (1 + math.exp(-(s - 50_000) / 5_000))
            f.write(json.dumps({**rows[-1], "step": s, "train/acc": 1.0, "val/acc": acc, "val/loss": 5 * (1 - acc) + 1e-3}) + "\n")
    start = time.perf_counter()
    result = analyze_run(load_run(tmp_path / "nanda"))
    elapsed = time.perf_counter() - start
    print(f"p=113 nanda model, 10,002 metric rows: analyze_run with sharpness took {elapsed:.2f} s")
    assert result["phase"] == "grokking" and result["phase_boundaries"] is not None
    assert len(result["fourier"]["spectrum"]) == 113 // 2 + 1
    assert elapsed < 45  # about 3 s on an idle 2-core machine: mostly the Hessian products and torch's one-time import of its compiler
