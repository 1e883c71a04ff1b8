"""`groklab bench`: groklab's training speed beside the peer implementation's, in one process, on this machine.

Every timed step is the one `train()` takes (its stepper, groklab.steppers), and the
peer is the unmodified danielmamay/grokking code in ../shared/peers. Timing windows of the configs alternate
(groklab, peer, groklab, peer, ...) and each figure is the median over windows, so a neighbour's burst of load
hits both sides instead of one. FLOPs are counted op by op on a real batch (matmuls only),
times 3 for forward plus backward; the machine's peak is the best float32 matmul it runs (torch.mm, and on the CPU
oneDNN's, which compiled steps call) at the model's shapes and at 512³.
GFLOP/s and the fraction of peak are reported on the FLOPs a step stands for (the plain computation: a
transformer's at the last position, an MLP's from concatenated embeddings); the FLOPs the fast path executes,
fewer, are reported beside them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from groklab.config import Config, UserError, apply_overrides
from groklab.presets import get_preset
from groklab.stats import GROK_ACC, censored_median, median_interval

PEER_NAME = "danielmamay-grokking"
CONFIG_KEYS = ("power", "bf16", "nanda", "mlp", "lm", "ensemble")

StepFn = Callable[[], Any]


@dataclass
class Case:
    """One timed configuration: a step function, the FLOPs it does, and how many model-steps one call is."""

    name: str
    step: StepFn
    flops: float
    executed_flops: float
    models: int = 1
    peer: StepFn | None = None
    tokens: int = 0
    """Input tokens per model-step (0 where the case has none, the sgemm rows)."""
    times: list[float] = field(default_factory=list)
    peer_times: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Building the timed steps: groklab's exactly as train() runs them, and the peer's as its README says.


def power_config() -> Config:
    """The side-by-side config: Power et al.'s transformer on x+y mod 97 at 50%, batch 512, AdamW lr 1e-3 wd 1."""
    return apply_overrides(get_preset("power-fig1"), {"task.op": "x+y"})


def groklab_case(name: str, config: Config, device: torch.device, compile: bool = False, peer: StepFn | None = None) -> Case:
    """train()'s step for `config` (its very stepper), its FLOPs per step (train_flops) and its input tokens."""
    from groklab.data import build_task
    from groklab.steppers import Single

    data = build_task(config.task, config.split_seed).to(device)
    stepper = Single(dataclasses.replace(config, compile=compile), data, device)
    batch = data.x[data.train[: stepper.sampler.batch_size]]
    return Case(name, stepper.step, *train_flops(stepper.model, batch), peer=peer, tokens=batch.numel())


def lm_config() -> Config:
    """Murty et al.'s language model at depth 6 (width 512, 8 heads, FFN 2048, batch 8) on question formation."""
    return apply_overrides(
        get_preset("question-formation"),
        {"model.n_layers": 6, "model.d_model": 512, "model.n_heads": 8, "model.d_mlp": 2048, "optim.batch_size": 8, "optim.grad_clip": 1.0},
    )


def ensemble_case(name: str, config: Config, device: torch.device, n: int) -> Case:
    """One step of an n-member vmapped ensemble (as `--seeds n` runs it), one member's FLOPs and tokens per step."""
    from groklab.data import build_task
    from groklab.steppers import Ensemble

    data = build_task(config.task, config.split_seed).to(device)
    ens = Ensemble([dataclasses.replace(config, seed=config.seed + k) for k in range(n)], data, device)
    batch = data.x[data.train[: ens.samplers[0].batch_size]]
    return Case(name, ens.step, *train_flops(ens.template, batch), models=n, tokens=batch.numel())


def train_flops(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Matmul FLOPs of one training step on batch x, (stands for, executed): a forward's, counted op by op, times 3
    (backward ≈ 2× forward).

    A step stands for the plain computation: for a transformer every block at every position from the embeddings,
    the last block's query, MLP and logits at the answer position alone; for an MLP on tokens, the embeddings
    concatenated and multiplied by the first layer. The fast paths (token tables, shared prefix; models/) execute
    fewer FLOPs for the same result, which shows as more GFLOP/s here rather than as less work.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from groklab.models.fast import FastMLP, FastTransformer

    def count(forward: Callable[[], Any]) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            forward()
        return 3.0 * counter.get_total_flops()

    executed = count(lambda: model(x))
    if isinstance(model, (FastTransformer, FastMLP)):
        return count(lambda: model.plain(x)), executed
    return executed, executed


def peer_dir(explicit: str | None) -> Path | None:
    """The peer's folder: --peer, else $GROKLAB_PEER_DIR, else ../shared/peers/<name> from here or from the repository."""
    if explicit:
        candidates = [explicit]
    elif "GROKLAB_PEER_DIR" in os.environ:  # an explicit choice too: no further search (an empty value means none)
        candidates = [os.environ["GROKLAB_PEER_DIR"]]
    else:
        repo = Path(__file__).resolve().parents[2]
        candidates = [str(Path.cwd().parent / "shared" / "peers" / PEER_NAME), str(repo.parent / "shared" / "peers" / PEER_NAME)]
    for candidate in candidates:
        if candidate and (Path(candidate) / "training_step.py").is_file():
            return Path(candidate)
    if explicit:
        raise UserError(f"--peer {explicit} is not the peer's folder: it has no training_step.py")
    return None


def peer_modules(folder: Path) -> tuple[ModuleType, ModuleType]:
    """The peer's own `data` and `training_step` modules, imported from its folder."""
    sys.path.insert(0, str(folder))
    try:
        import data as peer_data
        import training_step as peer_training
    finally:
        sys.path.remove(str(folder))
    return peer_data, peer_training


def peer_model(peer_training: ModuleType, device: torch.device) -> tuple[Any, Any, Any, Any]:
    """The peer's (model, AdamW, LinearLR warm-up, loss) for Power et al.'s transformer: 2 layers, d 128, 4 heads, p 97,
    lr 1e-3, weight decay 1."""
    return peer_training.setup_model(2, 128, 4, 97, 1e-3, 1.0, device)


def peer_step(folder: Path, device: torch.device) -> StepFn:
    """The peer's train_step plus scheduler.step() on random batches of 512 of its own 50% x+y mod 97 train rows."""
    peer_data, peer_training = peer_modules(folder)
    model, optimizer, scheduler, criterion = peer_model(peer_training, device)
    inputs, labels = peer_data.operation_mod_p_data("x+y", 97, 97, 98)
    gen = torch.Generator().manual_seed(0)
    train_rows = torch.randperm(len(inputs), generator=gen)[: len(inputs) // 2]
    inputs, labels = inputs[train_rows].to(device), labels[train_rows].to(device)

    def step() -> None:
        idx = torch.randint(len(inputs), (512,), generator=gen).to(device)
        peer_training.train_step(model, inputs[idx], labels[idx], optimizer, criterion)
        scheduler.step()

    return step


# ---------------------------------------------------------------------------------------------
# Timing.


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def window(fn: StepFn, n: int, device: torch.device) -> float:
    """Seconds per call of fn over n calls."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


def calls_per_window(fn: StepFn, seconds: float, device: torch.device) -> int:
    """Warm fn up (allocator, caches) and size a window to about `seconds`."""
    window(fn, 2, device)
    return max(1, round(seconds / max(window(fn, 2, device), 1e-6)))


def time_interleaved(cases: list[Case], repeats: int, seconds: float, device: torch.device) -> None:
    """Fill each case's times (and peer_times) with `repeats` windows, alternating between all of them."""
    sizes = {id(c): calls_per_window(c.step, seconds, device) for c in cases}
    peer_sizes = {id(c): calls_per_window(c.peer, seconds, device) for c in cases if c.peer is not None}
    for _ in range(repeats):
        for c in cases:
            c.times.append(window(c.step, sizes[id(c)], device))
            if c.peer is not None:
                c.peer_times.append(window(c.peer, peer_sizes[id(c)], device))


def sgemm_case(name: str, shapes: list[tuple[int, int, int]], device: torch.device, onednn: bool = False) -> Case:
    """(m, k, n) float32 matmuls, timed together: the best this machine's BLAS does on these shapes (`torch.mm`), or
    with `onednn` oneDNN's (the kernels compiled steps call on the CPU, compiled.py)."""
    mats = [(torch.randn(m, k, device=device), torch.randn(k, n, device=device)) for m, k, n in shapes]

    def step() -> None:
        for a, b in mats:
            if onednn:
                torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
            else:
                torch.mm(a, b)

    flops = float(sum(2 * m * k * n for m, k, n in shapes))
    return Case(name, step, flops, flops)


def power_shapes(config: Config) -> list[tuple[int, int, int]]:
    """The Power transformer's forward matmuls at batch 512 (4 tokens): qkv, proj, MLP in and out, unembed."""
    rows, d, d_mlp = config.optim.batch_size * 4, config.model.d_model, config.model.d_mlp
    return [(rows, d, 3 * d), (rows, d, d), (rows, d, d_mlp), (rows, d_mlp, d), (config.optim.batch_size, d, 99)]


# ---------------------------------------------------------------------------------------------
# Time to grok: fresh processes, groklab's `groklab train` and the peer's own modules in our loop, at the same
# hyperparameters and evaluation cadence, seed by seed, alternating which side goes first.


@dataclass(frozen=True)
class GrokCase:
    """One time-to-grok measurement: `groklab train` arguments, the peer's operation at the same hyperparameters
    (None: groklab alone, against the preset's own target), the val accuracy that counts as grokked, the steps allowed,
    and whether groklab also runs it with `--compile` when the bench times compiled variants."""

    key: str
    name: str
    args: tuple[str, ...]
    peer_op: str | None = None
    target: float = GROK_ACC
    max_steps: int = 10_000
    seeds_factor: int = 1
    compiles: bool = False


POWER_ARGS = ("--preset", "power-fig1", "--eval-spacing", "linear", "--eval-every", "100", "--optim.last-batch", "keep")
"""Power et al.'s transformer at the peer's hyperparameters (lr 1e-3, betas (0.9, 0.98), wd 1, batch 512, 10 warm-up
steps, 50% train), evaluated every 100 steps and with each epoch's last, partial batch kept, as the peer loop below
(its DataLoader) does."""
GROK_CASES = (
    GrokCase("power", "power x+y", (*POWER_ARGS, "--task.op", "x+y"), peer_op="x+y", compiles=True),
    GrokCase("power", "power x/y", (*POWER_ARGS, "--task.op", "x/y"), peer_op="x/y", compiles=True),
    GrokCase("mlp", "mlp", ("--preset", "mlp"), max_steps=3000, compiles=True),
    GrokCase("fast-grok", "fast-grok", ("--preset", "fast-grok"), target=0.95, max_steps=2000, seeds_factor=2, compiles=True),
)
GROK_KEYS = tuple(dict.fromkeys(c.key for c in GROK_CASES))
PEER_EVAL_EVERY = 100
COMPILED = "groklab --compile"
"""The side name of groklab's runs with `--compile` (a case with `compiles`, when the bench times compiled variants)."""
RATIO_SUFFIX = {"groklab": "vs_peer", COMPILED: "compiled_vs_peer"}
"""Each groklab side's suffix in the names of its ratios to the peer (`ratio_vs_peer`, `paired_ratio_compiled_vs_peer`, ...)."""


def train_command(case: GrokCase, out: Path, threads: int, *args: str) -> list[str]:
    """`groklab train` of `case` into `out`, quiet, with `args` and (when set) `threads`, as a subprocess argv."""
    return [sys.executable, "-m", "groklab", "train", *case.args, *args, "--out", str(out), "--quiet"] + (["--threads", str(threads)] if threads else [])


def groklab_to_grok(case: GrokCase, seed: int, threads: int, extra: tuple[str, ...] = ()) -> dict[str, float | None]:
    """Launch `groklab train` for `case` at `seed` (its split seed too: each seed is a fresh split, as the peer's
    is), with `extra` arguments; steps to the first evaluation at val acc >= target, seconds from launch to it
    (start-up included), and the steps the run took before it stopped."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = train_command(case, out, threads, *extra, "--seed", str(seed), "--split-seed", str(seed), "--steps", str(case.max_steps))
        if case.target >= GROK_ACC:  # stop once grokked (one more evaluation: the rule needs val acc held a step)
            cmd += ["--stop-patience", "1"]
        t0 = time.perf_counter()
        with open(Path(tmp) / "stderr", "w+") as err:  # a file, not a pipe: nothing blocks while this polls
            run = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
            if case.target < GROK_ACC:  # a lower target than the run's own stopping rule: Ctrl-C it at the first such row
                while run.poll() is None and target_row(out / "metrics.jsonl", case.target) is None:
                    time.sleep(0.05)
                run.send_signal(signal.SIGINT)
            if run.wait() not in (0, 130):
                err.seek(0)
                raise subprocess.CalledProcessError(run.returncode, cmd, stderr=err.read())
        total = time.perf_counter() - t0
        summary = json.loads((out / "summary.json").read_text())
        grok = target_row(out / "metrics.jsonl", case.target)
    # total - wall_s is the start-up (and the final writes: a slight overestimate); time_s counts from the loop's start.
    seconds = None if grok is None else round(total - summary["wall_s"] + grok["time_s"], 2)
    return {"steps": None if grok is None else grok["step"], "seconds": seconds, "ran_steps": summary["steps"]}


def target_row(metrics: Path, target: float) -> dict[str, Any] | None:
    """The first metrics row written so far (whole lines only: the run may be appending) with val acc >= target."""
    text = metrics.read_text() if metrics.exists() else ""
    lines = text.splitlines()[: text.count("\n")]
    return next((row for line in lines if (row := json.loads(line))["val/acc"] >= target), None)


def peer_to_grok(case: GrokCase, seed: int, threads: int, folder: Path) -> dict[str, float | None]:
    """The same for the peer: its data, model, optimizer, warm-up and train step in `peer_loop`, in a fresh process."""
    assert case.peer_op is not None
    code = "import sys, json; from groklab.bench import peer_loop; print(json.dumps(peer_loop(*json.loads(sys.argv[1]))))"
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, json.dumps([str(folder), case.peer_op, seed, case.max_steps, threads])],
                          check=True, capture_output=True, text=True)  # fmt: skip
    total = time.perf_counter() - t0
    found = json.loads(done.stdout.splitlines()[-1])
    return {"steps": found["steps"], "seconds": None if found["steps"] is None else round(total - found["wall_s"] + found["grok_s"], 2)}


def peer_loop(folder: str, op: str, seed: int, max_steps: int, threads: int) -> dict[str, float | None]:
    """The peer's training as its own loop runs it (shuffled epochs of its DataLoader, batch 512, train_step, then the
    LinearLR warm-up's step), evaluated with its `evaluate` on its whole validation half every PEER_EVAL_EVERY steps
    from step 0; stops at the first evaluation with val acc >= 0.99. Seconds count from the loop's start."""
    if threads:
        torch.set_num_threads(threads)
    peer_data, peer_training = peer_modules(Path(folder))
    torch.manual_seed(seed)  # the peer's split (random_split) and initialisation both draw from the global generator
    train_loader, val_loader = peer_data.get_data_loaders(op, 97, 0.5, 512)
    val = val_loader.dataset
    val_inputs, val_labels = val.dataset.tensors[0][val.indices], val.dataset.tensors[1][val.indices]
    model, optimizer, scheduler, criterion = peer_model(peer_training, torch.device("cpu"))
    t0, step = time.perf_counter(), 0
    while True:
        for inputs, labels in train_loader:
            if step % PEER_EVAL_EVERY == 0:
                at = time.perf_counter() - t0  # as groklab's metrics rows time an evaluation: from its start
                _, acc = peer_training.evaluate(model, val_inputs, val_labels, criterion)
                if acc >= GROK_ACC:
                    return {"steps": step, "grok_s": at, "wall_s": time.perf_counter() - t0}
            if step >= max_steps:
                return {"steps": None, "grok_s": None, "wall_s": time.perf_counter() - t0}
            peer_training.train_step(model, inputs, labels, optimizer, criterion)
            scheduler.step()
            step += 1


def spread(results: list[dict[str, float | None]], key: str) -> dict[str, Any]:
    """Median (censored runs, None, as never) and the range over seeds of one side's `key` (steps or seconds)."""
    values = [r[key] for r in results]
    done = [v for v in values if v is not None]
    return {"median": censored_median(values), "min": min(done, default=None), "max": max(done, default=None), "censored": len(values) - len(done)}


FIRST_COMPILE_STEPS = 1
"""Steps of the run that compiles before a compiled side's seeds: one is enough, as a compiled run builds (or loads)
the forward and backward of every batch size it will meet before its first step."""


def first_compile_seconds(case: GrokCase, threads: int) -> float:
    """Seconds of a short `groklab train --compile` of `case` (FIRST_COMPILE_STEPS), launch to exit: the compiles the
    timed runs would otherwise pay at their first seed (building the compiled libraries when groklab's cache has none of
    that model yet; later runs load them)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = train_command(case, Path(tmp) / "run", threads, "--compile", "--steps", str(FIRST_COMPILE_STEPS))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return round(time.perf_counter() - t0, 2)


def time_to_grok(
    cases: list[GrokCase], seeds: int, threads: int, folder: Path | None, say: Callable[[str], None], compile: bool = False
) -> list[dict[str, Any]]:
    """Every case at seeds 0 .. seeds*seeds_factor - 1: groklab, the peer and (`compile`, for a case that `compiles`)
    groklab with --compile, taking turns at going first seed by seed, so drift of the machine's speed hits every side;
    per case, every seed's numbers, medians and ranges. The compiled side's first compile happens before the seeds
    (`first_compile_s`), as a user's later runs find it cached."""
    results = []
    for case in cases:
        runs = []
        sides = ["groklab", "peer"] if case.peer_op is not None and folder is not None else ["groklab"]
        extra: dict[str, Any] = {}
        if compile and case.compiles:
            sides.append(COMPILED)
            extra["first_compile_s"] = first_compile_seconds(case, threads)
        for seed in range(seeds * case.seeds_factor):
            run: dict[str, Any] = {"seed": seed}
            turn = seed % len(sides)
            for side in sides[turn:] + sides[:turn]:
                if side == "peer":
                    run[side] = peer_to_grok(case, seed, threads, folder)  # type: ignore[arg-type]
                else:
                    run[side] = groklab_to_grok(case, seed, threads, ("--compile",) if side == COMPILED else ())
            runs.append(run)
            say(f"{case.name} seed {seed}: " + ", ".join(f"{side} {fmt_grok(run[side])}" for side in sides))
        entry: dict[str, Any] = {"name": case.name, "target_val_acc": case.target, "max_steps": case.max_steps, "seeds": runs, **extra}
        for side in sides:
            entry[side] = {"steps": spread([r[side] for r in runs], "steps"), "seconds": spread([r[side] for r in runs], "seconds")}
        results.append(entry | peer_ratios(entry))
    return results


def peer_ratios(entry: dict[str, Any]) -> dict[str, Any]:
    """Each groklab side's ratios to the peer in a time-to-grok entry: `ratio_<suffix>`, `paired_ratio_<suffix>` and
    `paired_ratio_<suffix>_interval`, with the suffix of RATIO_SUFFIX (None where the peer did not run)."""
    ratios: dict[str, Any] = {}
    for side, suffix in RATIO_SUFFIX.items():
        if side in entry:
            ratios[f"ratio_{suffix}"] = seconds_ratio(entry, side)
            ratios[f"paired_ratio_{suffix}"] = paired_ratio(entry, side)
            ratios[f"paired_ratio_{suffix}_interval"] = paired_interval(entry, side)
    return ratios


def seconds_ratio(entry: dict[str, Any], side: str) -> float | None:
    """The peer's median seconds to grok over `side`'s (None without both)."""
    mine, theirs = (entry.get(s, {}).get("seconds", {}).get("median") for s in (side, "peer"))
    return round(theirs / mine, 2) if mine and theirs else None


def paired_ratios(entry: dict[str, Any], side: str) -> list[float]:
    """The peer's seconds to grok over `side`'s, seed by seed (seeds where either never grokked left out)."""
    return [
        r["peer"]["seconds"] / r[side]["seconds"]
        for r in entry["seeds"]
        if "peer" in r and r["peer"]["seconds"] is not None and r[side]["seconds"] is not None
    ]


def paired_ratio(entry: dict[str, Any], side: str) -> float | None:
    """The median over seeds of `paired_ratios` (None without any): the two runs of a seed ran one right after the
    other, so the machine's drift over the whole measurement mostly cancels, which the ratio of the medians
    (`seconds_ratio`) does not do."""
    ratios = paired_ratios(entry, side)
    return round(statistics.median(ratios), 2) if ratios else None


def paired_interval(entry: dict[str, Any], side: str) -> list[float] | None:
    """[lo, hi, coverage]: the distribution-free interval of the median paired ratio between two order statistics
    (`stats.median_interval`: coverage at least 95% from 6 paired seeds on; with 5, their min and max, 94%), or None
    with fewer than 3 paired seeds."""
    interval = median_interval(paired_ratios(entry, side))
    return None if interval is None else [round(x, 2) for x in interval]


def fmt_grok(result: dict[str, float | None]) -> str:
    return "never" if result["steps"] is None else f"step {result['steps']:,} in {result['seconds']:.1f} s"


# ---------------------------------------------------------------------------------------------
# The whole measurement (`groklab bench` prints it).


def run_bench(*, quick: bool, compile: bool, threads: int, folder: Path | None, only: set[str] | None = None) -> dict[str, Any]:
    """Measure every config; return the JSON-ready result."""
    from groklab.train import keep_freed_memory, resolve_device

    if threads:
        torch.set_num_threads(threads)
    device = resolve_device("auto")
    keep_freed_memory(device)  # as train() does: both sides of the comparison get the same allocator
    repeats, seconds = (2, 0.1) if quick else (7, 1.5)
    power = power_config()
    mlp = get_preset("mlp")
    peer_fn = peer_step(folder, device) if folder is not None and (only is None or {"power", "bf16"} & only) else None

    # Built only when chosen (--only): each builds its data and model; compiled variants as `--compile` trains.
    builders: list[tuple[str, Callable[[], Case]]] = []
    # --bf16 (the forward in bfloat16) beside the peer, which runs in float32: a different precision, so rows of their own
    bf16 = dataclasses.replace(power, bf16=True)
    for suffix, compiled in [("", False), (" --compile", True)] if compile else [("", False)]:
        builders += [
            ("power", lambda c=compiled, n=suffix: groklab_case("power" + n, power, device, c, peer=peer_fn)),
            ("nanda", lambda c=compiled, n=suffix: groklab_case("nanda full batch" + n, get_preset("nanda"), device, c)),
            ("mlp", lambda c=compiled, n=suffix: groklab_case("mlp batch 512" + n, mlp, device, c)),
            ("lm", lambda c=compiled, n=suffix: groklab_case("lm depth 6 width 512 batch 8" + n, lm_config(), device, c)),
            ("bf16", lambda c=compiled, n=suffix: groklab_case(f"power --bf16{n} (the peer in float32)", bf16, device, c, peer=peer_fn)),
        ]
    for n in (8, 64, 256) if device.type == "cuda" else (8,):
        for name, config in (("mlp", mlp), ("power", power)):
            builders.append(("ensemble", lambda n=n, name=name, config=config: ensemble_case(f"ensemble {name} N={n} (per model)", config, device, n)))
    sgemm = {"sgemm 512x512x512": [(512, 512, 512)], "sgemm Power shapes": power_shapes(power)}
    cases = [sgemm_case(name, shapes, device) for name, shapes in sgemm.items()]
    if device.type == "cuda":  # 512³ is too small to keep a GPU busy: its peak needs a large product
        cases.append(sgemm_case("sgemm 4096x4096x4096", [(4096, 4096, 4096)], device))
    elif torch.backends.mkldnn.is_available():  # the matmuls training runs: on some CPUs far faster than torch.mm
        cases += [sgemm_case(f"{name} oneDNN", shapes, device, onednn=True) for name, shapes in sgemm.items()]
    cases += [build() for key, build in builders if only is None or key in only]
    time_interleaved(cases, repeats, seconds, device)

    peak = max(c.flops / statistics.median(c.times) for c in cases if c.name.startswith("sgemm")) / 1e9
    configs = []
    for c in cases:
        ms = 1000 * statistics.median(c.times) / c.models
        gflops = c.flops / (ms / 1000) / 1e9
        peer_ms = 1000 * statistics.median(c.peer_times) if c.peer_times else None
        configs.append({
            "name": c.name, "ms_per_step": round(ms, 3), "steps_per_s": round(1000 / ms, 2), "gflops": round(gflops, 1),
            "fraction_of_peak": round(gflops / peak, 3), "peer_ms_per_step": None if peer_ms is None else round(peer_ms, 3),
            "ratio_vs_peer": None if peer_ms is None else round(peer_ms / ms, 2),
            "executed_gflop_per_step": round(c.executed_flops / 1e9, 3),
            "tokens_per_s": round(c.tokens * 1000 / ms) if c.tokens else None,
        })  # fmt: skip
    return {"device": describe(device), "threads": torch.get_num_threads(), "peak_gflops": round(peak, 1), "configs": configs}


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores visible)"
