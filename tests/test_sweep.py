"""Sweep spec expansion and validation, runs.parquet, DuckDB queries and the seed statistics (fast tests)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from groklab.cli import main
from groklab.config import Config, UserError, apply_overrides
from groklab.presets import get_preset
from groklab.stats import censored_median, group_stats, mean_ci, share_interval
from groklab.sweep import expand, parse_spec, query, run_id
from groklab.sweep.table import RunsTable

SPEC = """
preset = "mlp"
seeds = 3
[set]
steps = 50
"task.p" = 23
[grid]
"task.op" = ["x+y", "x-y"]
"task.train_frac" = [0.3, 0.5]
[zip]
"optim.lr" = [1e-3, 3e-3]
"optim.weight_decay" = [1.0, 0.3]
"""


def write(tmp_path: Path, text: str, name: str = "spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_expansion_is_zip_times_grid_times_seeds() -> None:
    runs = expand(parse_spec(SPEC, "spec.toml"))
    assert len(runs) == 2 * 4 * 3
    points = {(r.config.optim.lr, r.config.optim.weight_decay, r.config.task.op, r.config.task.train_frac, r.config.seed) for r in runs}
    assert len(points) == 24
    assert {(lr, wd) for lr, wd, *_ in points} == {(1e-3, 1.0), (3e-3, 0.3)}  # zipped, not crossed
    assert {r.config.seed for r in runs} == {0, 1, 2}
    assert {r.config.split_seed for r in runs} == {get_preset("mlp").split_seed}  # seeds vary init, not the data split
    assert all(r.config.steps == 50 and r.config.task.p == 23 for r in runs)
    assert len({r.run_id for r in runs}) == 24
    # The id is a function of the resolved config alone: rebuilding the config by hand gives the same id.
    first = runs[0]
    by_hand = apply_overrides(get_preset("mlp"), {"steps": 50, "task.p": 23, **first.point})
    assert run_id(by_hand) == first.run_id
    assert first.run_dir == f"runs/{first.run_id}"


def test_spec_parse_variants() -> None:
    spec = parse_spec('seeds = [3, 7]\n[set]\n"task.train-frac" = 0.4\n', "s.toml")
    runs = expand(spec)
    assert spec.preset == "mlp" and [r.config.seed for r in runs] == [3, 7]
    assert runs[0].config.task.train_frac == 0.4
    assert spec.axes == []
    single = expand(parse_spec("[set]\nseed = 5\n", "s.toml"))
    assert [r.config.seed for r in single] == [5]


def test_split_seeds_are_replicates_not_axes() -> None:
    """A spec that draws each seed's training set from the seed (liu-toy's) groups its statistics by the real axes alone."""
    spec = parse_spec('[grid]\n"task.train_frac" = [0.4, 0.6]\n[zip]\nseed = [0, 1, 2]\nsplit_seed = [0, 1, 2]\n', "s.toml")
    assert spec.axes == ["task.train_frac"] and spec.replicates == ["seed", "split_seed"]
    rows = [{"task.train_frac": r.config.task.train_frac, **r.point, "status": "done", "steps_to_val_acc_99": 100} for r in expand(spec)]
    assert [(g.key, g.runs) for g in group_stats(rows, spec.axes)] == [({"task.train_frac": 0.4}, 3), ({"task.train_frac": 0.6}, 3)]
    assert parse_spec("seeds = 2\n", "s.toml").replicates == ["seed"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[grid]\n"task.opp" = ["x+y"]\n', "task.opp"),
        ('[grid]\n"task.op" = ["x+y", "x^y"]\n', "x^y"),
        ('[grid]\n"optim.lr" = [1e-3, "fast"]\n', "fast"),
        ('[set]\n"model.name" = "rnn"\n', "rnn"),
        ('[zip]\n"optim.lr" = [1e-3, 3e-3]\n"seed" = [1]\n', "equal lengths"),
        ('[set]\n"task.op" = ["x+y", "x-y"]\n', "[grid]"),
        ("seeds = 0\n", "seeds=0"),
        ('preset = "nope"\n', "nope"),
        ("sweeps = 3\n", "sweeps"),
        ('[grid]\ntask.op = ["x+y"]\n', "quote dotted keys"),
        ('[grid]\n"task.train_frac" = [0.5, 0.8]\n', "task.train_frac=0.8"),
        ('seeds = 2\n[grid]\n"seed" = [1, 2]\n', "seed"),
        ('[set]\n"task.op" = "x+y"\n[grid]\n"task.op" = ["x-y"]\n', "both"),
        ('[grid]\n"task.op" = ["x+y", "x+y"]\n', "same config"),
        ("preset = \n", "not valid TOML"),
    ],
)
def test_bad_specs_exit_2_with_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    spec = write(tmp_path, text)
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: spec.toml") and err.count("\n") == 1
    assert expected in err
    assert not out.exists()


def test_dry_run_prints_every_run_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # its calibration goes to the user cache, here a temporary one
    spec = write(tmp_path, SPEC)
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    runs = expand(parse_spec(SPEC, "spec.toml"))
    assert all(r.run_id in printed for r in runs)
    assert "24 runs" in printed
    assert not out.exists()


def test_bad_cli_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, SPEC)
    for args in (
        ["--out", str(tmp_path / "a"), "--workers", "0"],
        ["--out", str(tmp_path / "a"), "--backend", "slurm"],
        ["--out", str(tmp_path / "a"), "--task.op", "x+y"],
        ["--out", str(tmp_path / "a"), "--address", "auto"],
    ):
        assert main(["sweep", str(spec), *args]) == 2
    assert not (tmp_path / "a").exists()
    assert main(["sweep", "--out", str(tmp_path / "a")]) == 2
    assert capsys.readouterr().err.count("error:") == 5


def test_rerun_with_a_different_spec_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing sweep dir is only reused for the very same spec (comments and layout may differ)."""
    from groklab.sweep.runner import prepare_sweep_dir

    out = tmp_path / "sweep"
    prepare_sweep_dir(out, parse_spec(SPEC, "a"), SPEC)
    assert (out / "spec.toml").read_text() == SPEC
    prepare_sweep_dir(out, parse_spec(SPEC + "# a comment\n", "a"), SPEC)  # same spec: accepted
    changed = SPEC.replace("seeds = 3", "seeds = 4")
    with pytest.raises(UserError, match="different spec"):
        prepare_sweep_dir(out, parse_spec(changed, "a"), changed)
    assert main(["sweep", str(write(tmp_path, changed, "b.toml")), "--out", str(out)]) == 2
    assert "different spec" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        prepare_sweep_dir(tmp_path / "other", parse_spec(SPEC, "a"), SPEC)


def test_runs_table_rows_and_types(tmp_path: Path) -> None:
    runs = expand(parse_spec(SPEC, "spec.toml"))[:3]
    table = RunsTable(tmp_path, runs)
    summary = {
        "status": "finished", "steps": 50, "wall_s": 1.5, "final": {"train/acc": 1.0, "val/acc": 0.5, "test/acc": 0.25,
        "train/loss": 0.1, "val/loss": 2.0, "test/loss": 3.0}, "steps_to_train_acc_99": 20, "steps_to_val_acc_99": None,
        "grokked": False, "grok_delay": None,
    }  # fmt: skip
    table.update(runs[0].run_id, summary)
    table.update(runs[1].run_id, None, status="failed", error="ValueError: boom")
    table.write()
    got = pq.read_table(tmp_path / "runs.parquet")
    assert got.schema.field("steps_to_val_acc_99").type == pa.int64()  # typed even while all null
    assert got.schema.field("optim.lr").type == pa.float64()
    rows = got.to_pylist()
    assert [r["run_id"] for r in rows] == [r.run_id for r in runs]
    assert rows[0]["status"] == "finished" and rows[0]["test/acc"] == 0.25 and rows[0]["task.op"] == runs[0].config.task.op
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "ValueError: boom"
    assert rows[2]["status"] == "pending" and rows[2]["seed"] == runs[2].config.seed
    assert table.done(runs[0].run_id) and not table.done(runs[1].run_id)


def test_mean_ci_matches_the_t_interval() -> None:
    est = mean_ci([1.0, 2.0, 3.0])
    t_975_2 = 4.302652729911275  # Student t quantile, 2 degrees of freedom (tables)
    assert est.mean == pytest.approx(2.0)
    assert est.hi - est.mean == pytest.approx(t_975_2 * 1.0 / math.sqrt(3))
    assert est.mean - est.lo == pytest.approx(est.hi - est.mean)
    one = mean_ci([4.0, None])  # type: ignore[list-item]
    assert one.n == 1 and one.mean == 4.0 and math.isnan(one.lo)
    assert mean_ci([]).n == 0
    assert mean_ci([5.0]).bounds() == (5.0, 5.0, 5.0)  # one value: a point, not an interval, in tables
    assert all(math.isnan(v) for v in mean_ci([]).bounds())


def test_share_interval_is_wilsons() -> None:
    assert share_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook example
    z2 = 1.959963984540054**2
    assert share_interval(0, 3) == pytest.approx((0.0, (z2 / 3) / (1 + z2 / 3)))  # none of 3: still an interval
    lo, hi = share_interval(3, 3)
    assert hi == 1.0 and lo == pytest.approx(1 - share_interval(0, 3)[1])


def test_censored_runs_are_counted_not_averaged() -> None:
    def row(op: str, seed: int, t: int | None, acc: float, status: str = "finished") -> dict[str, object]:
        return {"task.op": op, "seed": seed, "steps_to_val_acc_99": t, "test/acc": acc, "status": status, "steps": 1000}

    rows = [row("x+y", 0, 100, 1.0), row("x+y", 1, 300, 1.0), row("x+y", 2, None, 0.2), row("x-y", 0, None, 0.1), row("x-y", 1, None, 0.3)]
    rows.append(row("x-y", 2, None, 0.0, status="failed"))
    add, sub = group_stats(rows, ["task.op"])
    assert (add.done, add.grokked, add.censored, add.budget) == (3, 2, 1, 1000)
    assert add.steps_to_grok.mean == 200 and add.steps_to_grok.n == 2  # not (100 + 300 + 1000) / 3
    assert add.median_steps_to_grok == 300  # censored counted as +inf: median of (100, 300, inf)
    assert add.test_acc.mean == pytest.approx((1.0 + 1.0 + 0.2) / 3)
    assert (sub.runs, sub.done, sub.failed, sub.grokked, sub.censored) == (3, 2, 1, 0, 2)
    assert sub.steps_to_grok.n == 0 and sub.median_steps_to_grok is None
    assert censored_median([None, None, 5]) is None


def synthetic_sweep(tmp_path: Path, n: int) -> Path:
    """A sweep dir whose runs.parquet holds n synthetic rows of the real schema."""
    runs = expand(parse_spec(f"seeds = {n}\n", "s.toml"))
    table = RunsTable(tmp_path, runs)
    for i, r in enumerate(runs):
        table.rows[r.run_id].update({"task.op": ["x+y", "x-y", "x*y", "x/y"][i % 4], "task.train_frac": [0.3, 0.5][i % 2]})
        table.update(r.run_id, {"status": "finished", "steps": 1000, "steps_to_val_acc_99": 100 + i % 7, "final": {"test/acc": i / n}})
    table.write()
    return tmp_path


def test_group_by_query_on_1000_runs_is_fast(tmp_path: Path) -> None:
    sweep = synthetic_sweep(tmp_path, 1000)
    t0 = time.perf_counter()
    columns, rows = query(
        sweep, 'SELECT "task.op", "task.train_frac", count(*) AS n, avg(steps_to_val_acc_99) AS t FROM runs GROUP BY ALL ORDER BY ALL'
    )
    elapsed = time.perf_counter() - t0
    assert columns == ["task.op", "task.train_frac", "n", "t"]
    assert len(rows) == 4 and sum(r[2] for r in rows) == 1000
    assert elapsed < 1.0, f"group-by over 1,000 runs took {elapsed:.2f} s"


def test_metrics_view_has_every_run_with_run_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Finished runs come from metrics.parquet, unfinished ones from metrics.jsonl (a torn last line is skipped)."""
    from groklab.runio import write_parquet

    sweep = synthetic_sweep(tmp_path, 3)
    ids = sorted(p.name for p in [tmp_path / "runs" / r for r in pq.read_table(tmp_path / "runs.parquet").column("run_id").to_pylist()])
    for i, rid in enumerate(ids):
        (tmp_path / "runs" / rid).mkdir(parents=True)
        rows = [{"step": s, "val/acc": s / 100 + i} for s in range(0, 50, 10)]
        if i < 2:
            write_parquet(tmp_path / "runs" / rid / "metrics.parquet", rows)
        else:
            text = "".join(json.dumps(r) + "\n" for r in rows[:3]) + '{"step": 30, "val/'
            (tmp_path / "runs" / rid / "metrics.jsonl").write_text(text)
    columns, rows = query(sweep, 'SELECT run_id, count(*), max("val/acc") FROM metrics GROUP BY run_id ORDER BY run_id')
    assert [r[0] for r in rows] == ids
    assert [r[1] for r in rows] == [5, 5, 3]
    assert rows[2][2] == pytest.approx(0.2 + 2)
    assert main(["query", str(sweep), "SELECT count(*) AS n FROM runs JOIN metrics USING (run_id)", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 13}]
    assert main(["query", str(sweep), "SELECT nonsense FROM runs"]) == 2
    assert "query failed" in capsys.readouterr().err
    assert main(["query", str(tmp_path / "nowhere"), "SELECT 1"]) == 2


def test_all_finished_sweep_is_skipped_without_starting_workers(tmp_path: Path, small_config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rerunning a sweep whose runs are all finished only rewrites runs.parquet (no worker process starts)."""
    from groklab.sweep import run_sweep, runner
    from groklab.train import train

    def no_pool(*args: object) -> None:
        raise AssertionError("a worker pool started for a sweep with nothing to run")

    spec = write(
        tmp_path, 'seeds = 2\n[set]\nsteps = 6\neval_every = 3\nthreads = 1\ndevice = "cpu"\n"task.p" = 7\n"task.train_frac" = 0.5\n'
    )
    runs = expand(parse_spec(spec.read_text(), "spec.toml"))
    out = tmp_path / "sweep"
    from groklab.sweep.runner import prepare_sweep_dir

    prepare_sweep_dir(out, parse_spec(spec.read_text(), "spec.toml"), spec.read_text())
    summaries = {r.run_id: train(r.config, out / r.run_dir, progress=False) for r in runs}
    monkeypatch.setattr(runner, "run_local", no_pool)
    result = run_sweep(spec, out, workers=2, progress=False, backend="local")
    assert result.skipped == 2
    rows = pq.read_table(out / "runs.parquet").to_pylist()
    assert [(r["run_id"], r["status"], r["val/acc"]) for r in rows] == [
        (rid, "finished", s["final"]["val/acc"]) for rid, s in summaries.items()
    ]
