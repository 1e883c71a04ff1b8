"""`groklab bench`: the JSON schema, the peer's absence, the counted FLOPs, and time to grok over seeds."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from groklab.bench import (
    COMPILED,
    PEER_NAME,
    GrokCase,
    groklab_to_grok,
    lm_config,
    paired_interval,
    paired_ratio,
    peer_dir,
    peer_ratios,
    power_config,
    spread,
    time_to_grok,
    train_flops,
)
from groklab.cli import main, print_bench
from groklab.data import build_task
from groklab.models import build_model
from groklab.presets import get_preset
from groklab.runio import load_run

CONFIG_KEYS = {
    "name",
    "ms_per_step",
    "steps_per_s",
    "gflops",
    "fraction_of_peak",
    "peer_ms_per_step",
    "ratio_vs_peer",
    "executed_gflop_per_step",
    "tokens_per_s",
}


def check_schema(result: dict) -> None:
    assert set(result) == {"device", "threads", "peak_gflops", "configs"}
    assert result["peak_gflops"] > 0 and result["threads"] >= 1
    for c in result["configs"]:
        assert set(c) == CONFIG_KEYS
        assert c["ms_per_step"] > 0 and c["gflops"] > 0
        assert c["steps_per_s"] == pytest.approx(1000 / c["ms_per_step"], rel=0.01)
        assert 0 < c["fraction_of_peak"]


def test_bench_json_without_the_peer_reports_null(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("GROKLAB_PEER_DIR", str(tmp_path / "no-peer-here"))
    assert main(["bench", "--json", "--quick", "--only", "power", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    check_schema(result)
    assert captured.err.count("\n") == 1 and "peer" in captured.err and "--peer" in captured.err  # said, not silent
    names = [c["name"] for c in result["configs"]]
    assert names[:2] == ["sgemm 512x512x512", "sgemm Power shapes"] and names[-1] == "power"  # (+ 4096³ on a GPU)
    if torch.backends.mkldnn.is_available():  # the matmuls compiled steps run, on the CPU
        assert names[2:4] == ["sgemm 512x512x512 oneDNN", "sgemm Power shapes oneDNN"]
    power = result["configs"][-1]
    assert power["peer_ms_per_step"] is None and power["ratio_vs_peer"] is None
    # The sgemm peak is the best of the sgemm entries, so each one's fraction is at most 1.
    assert max(c["fraction_of_peak"] for c in result["configs"][:-1]) == pytest.approx(1.0, abs=0.01)


def test_bench_rejects_bad_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--only", "resnet"]) == 2
    assert main(["bench", "--threads", "two"]) == 2
    assert main(["bench", "--frobnicate", "1"]) == 2
    assert capsys.readouterr().err.count("error:") == 3


def test_power_flops_match_the_architecture_formula() -> None:
    """3 × forward matmul FLOPs of the last-position Power model at batch 512, counted by hand."""
    config = power_config()
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, 0)
    b, s, d, d_mlp, n_classes = 512, 4, 128, 512, data.n_classes
    # Attention's scores and mixing are elementwise multiply-and-sum in every layer, which the matmul-only count leaves
    # out (2·2·s·s·d per row in a full layer: 0.4% of the step).
    full_layer = s * (2 * d * 3 * d + 2 * d * d + 2 * 2 * d * d_mlp)  # qkv, proj, MLP
    # The last layer: keys and values at every position, everything else at the answer position alone.
    last_layer = s * 2 * d * 2 * d + 2 * d * d + 2 * d * d + 2 * 2 * d * d_mlp + 2 * d * n_classes
    expected = 3 * b * (full_layer + last_layer)
    stands_for, executed = train_flops(model, data.x[data.train[:b]])
    assert stands_for == pytest.approx(expected, rel=1e-6)
    assert 3.3e9 < expected < 3.6e9  # the design's 3.38 GFLOP per step
    # The fast path's token tables and shared prefix do the same computation with about half the matmul FLOPs.
    assert 0.4 * expected < executed < 0.7 * expected


def test_mlp_flops_match_the_architecture_formula() -> None:
    """The mlp preset at batch 512 stands for embedding, concatenating and two linears; its token tables execute fewer."""
    config = get_preset("mlp")
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, 0)
    b, d, width, vocab, n_classes = 512, config.model.d_model, config.model.width, data.vocab_size, data.n_classes
    stands_for, executed = train_flops(model, data.x[data.train[:b]])
    assert stands_for == pytest.approx(3 * b * (2 * (2 * d) * width + 2 * width * n_classes), rel=1e-6)
    # tables: each operand's (vocab, d) embeddings times its (d, width) slice, once per step instead of per sample
    assert executed == pytest.approx(3 * (2 * 2 * vocab * d * width + b * 2 * width * n_classes), rel=1e-6)


def test_peer_dir_env_var_is_an_explicit_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "training_step.py").write_text("")
    monkeypatch.setenv("GROKLAB_PEER_DIR", str(tmp_path))
    assert peer_dir(None) == tmp_path
    monkeypatch.setenv("GROKLAB_PEER_DIR", "")
    assert peer_dir(None) is None


REPO = Path(__file__).resolve().parents[1]
PEER = REPO.parent / "shared" / "peers" / PEER_NAME


@pytest.mark.slow
@pytest.mark.skipif(not PEER.is_dir(), reason="the peer folder ../shared/peers is not beside this checkout")
def test_bench_cli_against_the_peer() -> None:
    """The real command line, all configs, the peer timed in the same process."""
    env = {k: v for k, v in os.environ.items() if k != "GROKLAB_PEER_DIR"}
    proc = subprocess.run(
        [sys.executable, "-m", "groklab.cli", "bench", "--json", "--quick", "--threads", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    check_schema(result)
    by_name = {c["name"]: c for c in result["configs"]}
    assert {"power", "nanda full batch", "mlp batch 512", "lm depth 6 width 512 batch 8", "ensemble mlp N=8 (per model)", "ensemble power N=8 (per model)"} <= set(by_name)
    lm = by_name["lm depth 6 width 512 batch 8"]
    seq_len = build_task(lm_config().task, 0).x.shape[1]
    assert lm["tokens_per_s"] == pytest.approx(lm["steps_per_s"] * 8 * seq_len, rel=0.01)
    for name in ("power", "power --bf16 (the peer in float32)"):
        power = by_name[name]
        assert power["peer_ms_per_step"] > 0
        assert power["ratio_vs_peer"] == pytest.approx(power["peer_ms_per_step"] / power["ms_per_step"], rel=0.01)


TINY_GROK = GrokCase("mlp", "tiny mlp", ("--preset", "mlp", "--task.p", "47", "--optim.lr", "1e-2", "--optim.batch-size", "256"), max_steps=3000)
"""The mlp preset shrunk to grok within about a thousand steps (a few seconds)."""


def test_time_to_grok_reports_each_seeds_run_and_their_spread(tmp_path: Path) -> None:
    """Each seed's steps are the first evaluation at val acc >= 0.99 of the very run `groklab train` makes at that
    seed; seconds include the process start; the median and range are over the seeds."""
    [entry] = time_to_grok([TINY_GROK], 2, 1, None, say=lambda line: None)
    assert [r["seed"] for r in entry["seeds"]] == [0, 1] and "peer" not in entry and entry["ratio_vs_peer"] is None
    assert entry["paired_ratio_vs_peer"] is None
    for r in entry["seeds"]:
        out = tmp_path / f"seed-{r['seed']}"
        subprocess.run(
            [sys.executable, "-m", "groklab", "train", *TINY_GROK.args, "--seed", str(r["seed"]), "--split-seed", str(r["seed"]),
             "--threads", "1", "--quiet", "--out", str(out)],
            check=True, capture_output=True,
        )  # fmt: skip
        rows = load_run(out).metrics
        grok = next(row for row in rows if row["val/acc"] >= 0.99)
        assert r["groklab"]["steps"] == grok["step"]
        assert r["groklab"]["seconds"] > grok["time_s"]  # plus the start-up
    steps = sorted(r["groklab"]["steps"] for r in entry["seeds"])
    assert entry["groklab"]["steps"] == {"median": sum(steps) / 2, "min": steps[0], "max": steps[1], "censored": 0}


@pytest.mark.slow
def test_time_to_grok_with_compile_adds_a_compiled_side_for_cases_that_compile() -> None:
    """With compile on, a case that `compiles` also runs `groklab train --compile` at every seed (its first compile
    timed before them); it trains the same model, so it groks where the eager run does, up to rounding; a case that
    does not compile gets no such side."""
    compiled_case = dataclasses.replace(TINY_GROK, compiles=True)
    [entry, plain] = time_to_grok([compiled_case, TINY_GROK], 1, 1, None, say=lambda line: None, compile=True)
    [run] = entry["seeds"]
    assert entry["first_compile_s"] > 0 and entry["ratio_compiled_vs_peer"] is None  # no peer here
    assert run[COMPILED]["steps"] is not None and run["groklab"]["steps"] is not None
    assert abs(run[COMPILED]["steps"] - run["groklab"]["steps"]) <= 0.2 * run["groklab"]["steps"]
    assert entry[COMPILED]["steps"]["median"] == run[COMPILED]["steps"]
    assert COMPILED not in plain and "first_compile_s" not in plain and COMPILED not in plain["seeds"][0]


def test_the_paired_ratio_divides_seed_by_seed() -> None:
    """Paired: the median of the peer's seconds over groklab's at each seed; a seed where either side never grokked
    is left out. The ratio of the medians pairs different seeds, so drift can move it where the paired one holds."""
    def run(seed: int, peer: float | None, mine: float | None) -> dict[str, Any]:
        return {"seed": seed, "peer": {"steps": 1, "seconds": peer}, "groklab": {"steps": 1, "seconds": mine}}

    seeds = [run(0, 10.0, 5.0), run(1, 60.0, 20.0), run(2, 20.0, 20.0), run(3, None, 4.0), run(4, 9.0, None)]
    assert paired_ratio({"seeds": seeds}, "groklab") == 2.0  # ratios 2, 3, 1
    assert paired_ratio({"seeds": [run(0, None, 1.0)]}, "groklab") is None
    assert paired_ratio({"seeds": [{"seed": 0, "groklab": {"steps": 1, "seconds": 3.0}}]}, "groklab") is None  # no peer


def test_the_paired_ratio_comes_with_the_interval_of_its_median() -> None:
    """Between two order statistics of the paired ratios: the 2nd and 8th of 9 (coverage 1 - 2·10/512 ≈ 96%), the
    min and max of 5 (94%); none with fewer than 3 seeds that both sides grokked."""
    def entry(pairs: list[tuple[float | None, float]]) -> dict[str, Any]:
        return {"seeds": [{"seed": k, "peer": {"seconds": p}, "groklab": {"seconds": m}} for k, (p, m) in enumerate(pairs)]}

    nine = entry([(r * 10.0, 10.0) for r in (3.0, 1.0, 2.5, 9.0, 2.0, 2.2, 2.8, 2.6, 2.4)])  # sorted: 1 2 2.2 2.4 2.5 2.6 2.8 3 9
    assert paired_ratio(nine, "groklab") == 2.5
    assert paired_interval(nine, "groklab") == [2.0, 3.0, 0.96]
    assert paired_interval(entry([(2.0, 1.0), (3.0, 1.0), (5.0, 1.0), (1.0, 1.0), (4.0, 1.0)]), "groklab") == [1.0, 5.0, 0.94]
    assert paired_interval(entry([(2.0, 1.0), (3.0, 1.0), (None, 1.0)]), "groklab") is None  # two paired seeds left


def test_the_time_to_grok_table_shows_both_ratios(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    seeds = [
        {"seed": k, "groklab": {"steps": 100, "seconds": mine}, "peer": {"steps": 100, "seconds": peer}, COMPILED: {"steps": 100, "seconds": c}}
        for k, (mine, peer, c) in enumerate([(2.0, 9.0, 1.0), (4.0, 10.0, 2.0), (8.0, 30.0, 5.0)])
    ]
    entry: dict[str, Any] = {"name": "power x+y", "seeds": seeds}
    for side in ("groklab", "peer", COMPILED):
        entry[side] = {key: spread([r[side] for r in seeds], key) for key in ("steps", "seconds")}
    entry |= peer_ratios(entry)
    print_bench({"device": "cpu", "threads": 1, "peak_gflops": 1.0, "configs": [], "time_to_grok": [entry]})
    rows = {line.split("│")[2].strip(): line for line in capsys.readouterr().out.splitlines() if line.count("│") >= 6}
    cells = {side: [cell.strip() for cell in rows[side].split("│")[5:7]] for side in ("groklab", "peer", COMPILED)}
    assert cells["groklab"] == ["2.50", "3.75 [2.50-4.50]"]  # medians 10 / 4; paired: 4.5, 2.5, 3.75 (3 seeds: min-max)
    assert cells[COMPILED] == ["5.00", "6.00 [5.00-9.00]"]  # 10 / 2; paired: 9, 5, 6
    assert cells["peer"] == ["", ""]


def test_time_to_grok_stops_a_run_at_a_lower_target_than_its_own(tmp_path: Path) -> None:
    """A case whose target is below the run's stopping rule (fast-grok's 95%) stops the run once it is reached: the
    steps are the first evaluation at val acc >= 0.5 of the same run made in full, which goes on much longer."""
    half = dataclasses.replace(TINY_GROK, target=0.5)
    result = groklab_to_grok(half, 0, 1)
    out = tmp_path / "full"
    subprocess.run(
        [sys.executable, "-m", "groklab", "train", *TINY_GROK.args, "--seed", "0", "--split-seed", "0", "--threads", "1", "--quiet", "--out", str(out)],
        check=True, capture_output=True,
    )  # fmt: skip
    run = load_run(out)
    first = next(row for row in run.metrics if row["val/acc"] >= 0.5)
    assert result["steps"] == first["step"]
    assert first["step"] <= result["ran_steps"] < run.summary["steps"] - 500  # the full run held 0.99 for 500 more steps
