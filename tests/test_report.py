"""Reports: run, sweep and compare pages, downsampling, statistics, `groklab ls`, and the error paths."""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import tiny

from groklab.cli import main
from groklab.config import Config, UserError, apply_overrides, flatten, to_dict
from groklab.report import report, report_run, report_sweep
from groklab.report.data import downsample_indices, kind_of
from groklab.runio import RunDir, atomic_write_bytes, summarize, write_parquet

# ---------------------------------------------------------------------------------------------
# Helpers: synthetic runs written through the run-directory API (fast, with a known grokking point).


def sigmoid_rise(steps: np.ndarray, at: float | None, width: float = 0.15) -> np.ndarray:
    """Accuracy rising from ~0 to 1 around step `at` on a log axis (flat near 0 when at is None)."""
    if at is None:
        return np.full(len(steps), 0.05)
    return 1 / (1 + np.exp(np.clip(-(np.log10(np.maximum(steps, 1)) - math.log10(at)) / width, -50, 50)))


def synthetic_run(
    path: Path, config: Config, n_evals: int = 60, train_at: float = 100, grok_at: float | None = 2000, finish: bool = True
) -> None:
    """A run dir with metrics shaped like grokking: train acc rises at `train_at`, val/test at `grok_at`."""
    run = RunDir(path)
    run.prepare(config)
    steps = np.unique(np.geomspace(1, config.steps, n_evals).astype(int))
    steps = np.concatenate([[0], steps])
    train, val = sigmoid_rise(steps, train_at), sigmoid_rise(steps, grok_at)
    rows = [
        {"step": int(s), "time_s": 0.01 * float(s), "train/loss": float(-np.log(t * 0.98 + 0.01)), "train/acc": float(t), "val/loss": float(-np.log(v * 0.98 + 0.01)),
         "val/acc": float(v), "test/loss": float(-np.log(v * 0.97 + 0.01)), "test/acc": float(v * 0.99), "norm/total": 40.0 - 10 * float(v), "lr": 1e-3, "sharpness/top_eig": 5.0 + float(t)}
        for s, t, v in zip(steps, train, val, strict=True)
    ]  # fmt: skip
    atomic_write_bytes(run.metrics_path, "".join(json.dumps(r) + "\n" for r in rows).encode())
    if finish:
        run.finish(summarize(rows, "finished", int(steps[-1]), 1.0, seed=config.seed, split_seed=config.split_seed))


def sweep_row(root: Path, run_id: str, config: Config) -> dict:
    """The runs.parquet row of a run dir, as the sweep engine writes it (flattened config + summary)."""
    row = {"run_id": run_id, "run_dir": f"runs/{run_id}", **flatten(to_dict(config))}
    summary = RunDir(root / "runs" / run_id).read_summary()
    if summary is None:
        return {**row, "status": "running"}
    keys = ("status", "steps", "wall_s", "steps_to_train_acc_99", "steps_to_val_acc_99", "grokked", "grok_delay")
    return {**row, **{k: summary[k] for k in keys}, **summary["final"]}


def make_sweep(root: Path, fracs=(0.3, 0.5), wds=(0.1, 1.0), seeds=(0, 1), n_evals: int = 60, steps: int = 100_000) -> Path:
    """A sweep dir over train_frac × weight_decay × seed with synthetic runs: small fractions never grok,
    more data groks sooner; one run is left half-written (no summary)."""
    rows = []
    for frac in fracs:
        for wd in wds:
            for seed in seeds:
                run_id = f"f{frac}-wd{wd}-s{seed}"
                config = apply_overrides(Config(), {"task.train_frac": frac, "optim.weight_decay": wd, "seed": seed, "steps": steps})
                grok_at = None if frac < 0.4 else 300 / (frac * wd) * (1 + 0.2 * seed)
                synthetic_run(
                    root / "runs" / run_id,
                    config,
                    n_evals=n_evals,
                    grok_at=grok_at,
                    finish=run_id != f"f{fracs[-1]}-wd{wds[-1]}-s{seeds[-1]}",
                )
                rows.append(sweep_row(root, run_id, config))
    (root / "spec.toml").write_text('preset = "mlp"\nseeds = 2\n[grid]\n"task.train_frac" = [0.3, 0.5]\n')
    pq.write_table(pa.Table.from_pylist(rows), root / "runs.parquet")
    return root


def figure_data(page: Path) -> dict[str, dict]:
    """figure key -> the Plotly JSON embedded in the page."""
    text = page.read_text()
    out = {}
    for target, payload in re.findall(r'<script type="application/json" class="fig" data-target="([^"]+)">(.*?)</script>', text, re.S):
        out[target.split("-", 2)[2]] = json.loads(payload.replace("<\\/", "</"))
    return out


# ---------------------------------------------------------------------------------------------
# Downsampling and statistics.


def test_downsample_keeps_log_spacing_and_the_whole_grokking_transition():
    steps = np.arange(0, 100_001, 10)
    val = sigmoid_rise(steps, 30_000, width=0.02)
    cols = {"train/acc": sigmoid_rise(steps, 500), "val/acc": val}
    idx = downsample_indices(steps, cols, n_log=200)
    assert len(idx) < 1000 < len(steps)
    assert idx[0] == 0 and idx[-1] == len(steps) - 1
    cross = int(np.nonzero(val >= 0.99)[0][0])
    last_low = int(np.nonzero(val[:cross] < 0.1)[0][-1])
    assert cross - last_low > 400 and {last_low, cross - 1, cross} <= set(idx.tolist()), "a long rise keeps its ends and the crossing"
    val = sigmoid_rise(steps, 30_000, width=0.005)
    idx = downsample_indices(steps, {"val/acc": val}, n_log=200)
    cross = int(np.nonzero(val >= 0.99)[0][0])
    last_low = int(np.nonzero(val[:cross] < 0.1)[0][-1])
    assert set(range(last_low, cross + 1)) <= set(idx.tolist()), "every row of the rise to 99% val acc is kept"
    early = steps[idx][(steps[idx] > 0) & (steps[idx] < 1000)]
    assert len(early) >= 20, "log spacing keeps the early steps dense"


def test_downsample_leaves_short_curves_alone():
    steps = np.arange(50)
    assert downsample_indices(steps, {}).tolist() == list(range(50))


# ---------------------------------------------------------------------------------------------
# Run reports.


def test_run_report_has_curves_grok_marker_extras_and_config(tmp_path):
    config = apply_overrides(Config(), {"steps": 10_000, "task.op": "x*y"})
    synthetic_run(tmp_path / "run", config, grok_at=2000)
    page = report_run(tmp_path / "run", analyze=False)
    assert page == tmp_path / "run" / "report" / "index.html"
    figs = figure_data(page)
    assert {"run_acc", "run_loss", "run_norm", "run_sharpness"} <= set(figs)
    acc = figs["run_acc"]
    assert acc["layout"]["xaxis"]["type"] == "log"
    assert [t["name"] for t in acc["data"]] == ["train", "val", "test"]
    colors = {t["name"]: t["line"]["color"] for t in acc["data"]}
    assert colors == {t["name"]: t["line"]["color"] for t in figs["run_loss"]["data"]}, "splits keep their colours across figures"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    marked = [s["x0"] for s in acc["layout"]["shapes"]]
    assert summary["steps_to_val_acc_99"] in marked and summary["steps_to_train_acc_99"] in marked
    for key in figs:
        assert (tmp_path / "run" / "report" / f"{key}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = page.read_text()
    assert text.count("Plotly=") <= 2 and len(text) > 1_000_000, "Plotly is inlined (once)"
    assert "task.op" in text and "x*y" in text
    assert "http://" not in text.split("<body>")[1] and "https://" not in text.split("<body>")[1]


def test_half_written_run_renders_marked(tmp_path):
    synthetic_run(tmp_path / "run", apply_overrides(Config(), {"steps": 5000}), finish=False)
    with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 6000, "train/ac')  # torn last line, as after kill -9
    page = report_run(tmp_path / "run", analyze=False, pngs=False)
    text = page.read_text()
    assert "No summary.json" in text and 'class="badge incomplete"' in text
    assert figure_data(page)["run_acc"]["data"][0]["x"], "the curves logged so far are drawn"


def test_run_report_with_analysis_of_a_trained_run(tmp_path):
    from groklab.train import train

    config = tiny(Config(), {"task.p": 7, "task.train_frac": 0.5, "task.val_frac": 0.25, "steps": 12})
    train(config, tmp_path / "run", progress=False)
    page = report_run(tmp_path / "run", sharpness=False)
    figs = figure_data(page)
    assert {"run_acc", "run_loss", "run_norm", "embedding_pca", "fourier_spectrum", "layer_norms"} <= figs.keys()
    assert "analysis module" not in page.read_text()


def test_run_report_draws_the_tsne_map_and_the_neuron_spectrum(tmp_path):
    from groklab.analysis import analyze_run
    from groklab.runio import load_run
    from groklab.train import train

    config = tiny(Config(), {"task.p": 11, "model.d_model": 16, "model.width": 32, "model.depth": 1, "steps": 12})
    train(config, tmp_path / "run", progress=False)
    page = report_run(tmp_path / "run", sharpness=False)
    figs = figure_data(page)
    analysis = analyze_run(load_run(tmp_path / "run"), sharpness=False)
    tsne = figs["embedding_tsne"]["data"][0]
    assert [[x, y] for x, y in zip(tsne["x"], tsne["y"], strict=True)] == analysis["embeddings"]["tsne"]  # one point per token
    assert tsne["marker"]["color"] == list(range(11))  # coloured by token, as the PCA map
    other, key = figs["neuron_spectrum"]["data"]
    spectrum = analysis["neuron_fourier"]["spectrum"]
    assert len(other["x"]) == len(spectrum) == 11 // 2 + 1
    drawn = [k if k is not None else o for k, o in zip(key["y"], other["y"], strict=True)]
    assert drawn == pytest.approx(spectrum)  # every frequency drawn once, key frequencies in their own trace
    assert figs["neuron_spectrum"]["layout"]["yaxis"]["type"] == "log"
    assert (page.parent / "embedding_tsne.png").stat().st_size > 0 and (page.parent / "neuron_spectrum.png").stat().st_size > 0


def test_not_a_run_or_sweep_is_a_user_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="neither a run"):
        report(tmp_path)
    with pytest.raises(UserError, match="not a directory"):
        kind_of(tmp_path / "notes.txt")
    assert main(["report", str(tmp_path)]) == 2


# ---------------------------------------------------------------------------------------------
# Sweep reports.


def test_sweep_report_figures_table_and_run_pages(tmp_path):
    root = make_sweep(tmp_path / "sweep")
    page = report_sweep(root, quiet=True)
    text = page.read_text()
    figs = figure_data(page)
    assert {"steps_to_grok", "final_test_acc"} <= set(figs)
    rows = pq.read_table(root / "runs.parquet").to_pylist()
    # The steps-to-grok line at frac 0.5 averages the grokked seeds of each weight decay; frac 0.3 never groks.
    lines = [t for t in figs["steps_to_grok"]["data"] if t.get("mode") == "lines" and t["showlegend"]]
    for line in lines:
        wd = float(line["name"].split("=")[1])
        expect = [
            r["steps_to_val_acc_99"] for r in rows if r["optim.weight_decay"] == wd and r["task.train_frac"] == 0.5 and r.get("grokked")
        ]
        assert line["x"] == [0.5] and line["y"][0] == pytest.approx(np.mean(expect))
    never = [t for t in figs["steps_to_grok"]["data"] if t.get("marker", {}).get("symbol") == "x"]
    assert never and all(t["x"] == [0.3] for t in never), "censored groups are shown, not averaged"
    # The phase map: frac 0.3 never generalizes (memorization), frac 0.5 groks, at both weight decays.
    heat = figs["phase_map"]["data"][0]
    assert (heat["type"], heat["x"], heat["y"]) == ("heatmap", ["0.3", "0.5"], ["0.1", "1"])
    phase = heat["colorbar"]["ticktext"]
    assert [[phase[z] for z in row] for row in heat["z"]] == [["memorization", "grokking"]] * 2
    # Table: a row per run, sortable, each linking to a run page that exists; the half-written run is marked.
    assert text.count('<tr><td><a href="runs/') == len(rows)
    for href in re.findall(r'<a href="(runs/[^"]+)"', text):
        run_page = root / "report" / href
        assert run_page.is_file() and '<script src="../plotly.min.js">' in run_page.read_text()
    assert "incomplete" in text
    assert (root / "report" / "steps_to_grok.png").stat().st_size > 1000


def test_folder_of_runs_reports_and_lists(tmp_path, capsys):
    for seed in (0, 1):
        synthetic_run(tmp_path / f"run{seed}", apply_overrides(Config(), {"seed": seed, "steps": 20_000}), grok_at=1000 + 500 * seed)
    assert kind_of(tmp_path) == "folder"
    assert main(["ls", str(tmp_path), "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    header = lines[0].split("\t")
    assert len(lines) == 3 and "steps_to_val_acc_99" in header
    grok = [line.split("\t")[header.index("steps_to_val_acc_99")] for line in lines[1:]]
    summaries = [json.loads((tmp_path / f"run{s}" / "summary.json").read_text())["steps_to_val_acc_99"] for s in (0, 1)]
    assert None not in summaries and grok == [str(s) for s in summaries]
    assert main(["ls", str(tmp_path)]) == 0
    assert "finished" in capsys.readouterr().out
    assert main(["report", str(tmp_path), "--quiet"]) == 0
    assert (tmp_path / "report" / "index.html").is_file()


def test_compare_overlays_runs(tmp_path, capsys):
    a, b = tmp_path / "wd1", tmp_path / "wd0"
    synthetic_run(a, apply_overrides(Config(), {"steps": 5000, "optim.weight_decay": 1.0}), grok_at=1500)
    synthetic_run(b, apply_overrides(Config(), {"steps": 5000, "optim.weight_decay": 0.0}), grok_at=None)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--quiet"]) == 0
    page = Path(capsys.readouterr().out.strip())
    figs = figure_data(page)
    names = [t["name"] for t in figs["compare_acc"]["data"]]
    assert names == ["wd1 val", "wd1 train", "wd0 val", "wd0 train"]
    assert "optim.weight_decay" in page.read_text()
    assert main(["compare", str(a), "--out", str(tmp_path / "x")]) == 2
    assert main(["compare", str(a), str(tmp_path), "--out", str(tmp_path / "x")]) == 2


def test_help_has_examples(capsys):
    for cmd in ("report", "ls", "compare"):
        assert main([cmd, "--help"]) == 0
        assert "examples:" in capsys.readouterr().out
    assert main(["ls", "--bogus"]) == 2


@pytest.mark.slow
def test_hundred_run_sweep_report_is_fast_and_small(tmp_path):
    """100 runs × 5,000 logged evaluations: the report takes < 30 s and the index page stays < 15 MB."""
    root = tmp_path / "sweep"
    rows = []
    steps = np.arange(0, 100_000, 20)
    for i in range(100):
        run_id = f"r{i:03d}"
        config = apply_overrides(
            Config(), {"task.train_frac": 0.2 + 0.1 * (i % 5), "optim.weight_decay": [0.1, 0.3, 1.0, 3.0][(i // 5) % 4], "seed": i // 20}
        )
        run = RunDir(root / "runs" / run_id)
        run.prepare(config)
        train, val = sigmoid_rise(steps, 300), sigmoid_rise(steps, None if i % 5 == 0 else 2000 * (1 + i % 7))
        metric_rows = [{"step": int(s), "train/acc": float(t), "val/acc": float(v), "test/acc": float(v), "train/loss": 1 - float(t) + 1e-3,
                        "val/loss": 1 - float(v) + 1e-3, "test/loss": 1 - float(v) + 1e-3, "norm/total": 30.0} for s, t, v in zip(steps, train, val, strict=True)]  # fmt: skip
        atomic_write_bytes(run.metrics_path, "".join(json.dumps(r) + "\n" for r in metric_rows).encode())
        write_parquet(run.path / "metrics.parquet", metric_rows)
        run.write_summary(summarize(metric_rows, "finished", int(steps[-1]), 10.0))
        rows.append(sweep_row(root, run_id, config))
    pq.write_table(pa.Table.from_pylist(rows), root / "runs.parquet")
    start = time.perf_counter()
    page = report_sweep(root, quiet=True)
    elapsed = time.perf_counter() - start
    print(f"100-run sweep report: {elapsed:.1f} s, index.html {page.stat().st_size / 1e6:.1f} MB")
    assert elapsed < 30, f"100-run sweep report took {elapsed:.1f} s"
    assert page.stat().st_size < 15e6
    run_pages = list((root / "report" / "runs").glob("*.html"))
    assert len(run_pages) == 100 and max(p.stat().st_size for p in run_pages) < 1e6


def test_bar_chart_with_a_sweeps_long_group_names_keeps_its_axes(tmp_path):
    """Seven groups named by six dotted fields each (power-interventions' sweep): the PNG's layout must still fit."""
    import warnings

    from groklab.report.plots import save_png, test_acc_figure

    arms = [(0.0, "adam", 1.0, 512, "zero", 0.0), (0.0, "adamw", 0.0, 512, "zero", 0.0), (0.0, "adamw", 0.0, 512, "zero", 0.01),
            (0.0, "adamw", 1.0, 0, "zero", 0.0), (0.0, "adamw", 1.0, 512, "init", 0.0), (0.0, "adamw", 1.0, 512, "zero", 0.0),
            (0.3, "adamw", 0.0, 512, "zero", 0.0)]  # fmt: skip
    keys = ("model.dropout", "optim.name", "optim.weight_decay", "optim.batch_size", "optim.wd_target", "optim.grad_noise")
    rows = [dict(zip(keys, arm, strict=True)) | {"seed": seed, "test/acc": 0.5} for arm in arms for seed in (0, 1)]
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="constrained_layout")
        save_png(test_acc_figure(rows), tmp_path / "bars.png")
    assert (tmp_path / "bars.png").stat().st_size > 0
