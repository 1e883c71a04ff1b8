"""The cache of compiled training steps (groklab.compiled): what its key tells apart, where it lives, and (slow) runs
that need one build at once. Training on the libraries is tested, slow, in test_fastpath.py
(test_compiled_training_matches_eager)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny
from torch.utils._pytree import tree_flatten

from groklab.compiled import build, build_lock, cache_root, compiled_step, onednn_matmuls, step_key, trace
from groklab.config import Config, apply_overrides, to_dict
from groklab.data import build_task
from groklab.models import build_model
from groklab.steppers import compiled_arguments

SMALL = {"task.p": 23, "model.name": "transformer", "model.d_model": 32, "model.n_heads": 4, "model.d_mlp": 64}


def key(overrides: dict[str, object] | None = None, batch: int = 16, bf16: bool = False) -> str:
    config = apply_overrides(tiny(Config(), SMALL), overrides or {})
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, config.seed)
    return step_key(model, (data.x[data.train[:batch]],), bf16)


def test_the_key_tells_apart_what_the_libraries_depend_on() -> None:
    base = key()
    assert key() == base  # a second run of the same config finds the first one's libraries
    assert key({"seed": 5}) == base  # other weights, same libraries: they take the weights as arguments
    same_shapes = [key({"model.n_heads": 2}), key({"model.activation": "gelu"}), key({"model.norm": "pre"})]
    assert len({base, *same_shapes}) == 4  # settings the weights' shapes do not show
    assert key({"model.d_model": 64}) != base and key(batch=32) != base and key(bf16=True) != base
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)  # the kernels' thread count is fixed when they are compiled
        assert key() != base
    finally:
        torch.set_num_threads(threads)


def test_the_cache_lives_where_the_environment_says(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROKLAB_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("GROKLAB_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "groklab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "groklab"


def test_the_mlp_traces_with_fake_tensors_on_its_plain_path() -> None:
    """--compile traces the model with fake tensors (AOTAutograd) and compiles the graph with AOTInductor: the MLP's
    plain path, which a batch no larger than its vocabulary takes, must put no tensor constant in the graph (indexing
    by a list of positions did, and AOTInductor's compile then failed)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    config = apply_overrides(tiny(Config(), SMALL), {"model.name": "mlp"})
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, config.seed)
    x = data.x[data.train[:8]]
    assert model.embed.num_embeddings >= len(x)  # the plain path
    params = dict(model.named_parameters())

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(model, p, (x,))

    graph = make_fx(forward, tracing_mode="fake")(params, x)
    assert [n.target for n in graph.graph.nodes if n.op == "get_attr"] == []  # no tensor constant for AOTInductor to trip on
    torch.testing.assert_close(graph(params, x), model(x))


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_matmuls_run_on_onednn_with_the_same_values() -> None:
    """The forward and backward graphs of a transformer as build() traces them: every matmul becomes oneDNN's linear
    (none is left to ATen's mm), and the rewritten graphs give the same output and gradients, those of the weights
    included (their operands are transposed views)."""
    config = tiny(Config(), SMALL)
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, config.seed)
    args = compiled_arguments(model, data, 16)(data.x[data.train[:16]])  # the tokens and their distinct shared prefixes
    graphs = [graph for graph, _ in trace(model, args, False).values()]
    forward_graph, backward_graph = graphs
    flat = [*(p.detach() for p in model.parameters()), *model.buffers(), *tree_flatten(args)[0]]
    grad = torch.randn_like(model(*args))

    def run() -> list[torch.Tensor]:
        out, *saved = forward_graph(*flat)
        return [out, *(g for g in backward_graph(*saved, grad) if g is not None)]

    def matmuls() -> list[str]:
        calls = (str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function")
        return [c for c in calls if "mm" in c or "linear" in c]

    before, ops = run(), matmuls()
    assert onednn_matmuls(forward_graph) and onednn_matmuls(backward_graph)
    assert len(matmuls()) == len(ops) > 10 and set(matmuls()) == {"mkldnn._linear_pointwise.default"}, (ops, matmuls())
    after = run()
    assert len(after) == len(list(model.parameters())) + 1
    for a, b in zip(after, before, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_a_run_that_needs_libraries_being_built_waits_for_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs that need the same libraries at once (a sweep's workers): the second waits for the first one's build and
    loads it, never compiling; a build killed half-way leaves nothing behind, and the cache keeps only the libraries."""
    monkeypatch.setenv("GROKLAB_CACHE_DIR", str(tmp_path))
    config = apply_overrides(tiny(Config(), SMALL), {"model.name": "mlp"})
    data = build_task(config.task, config.split_seed)
    model = build_model(config.model, data, config.seed)
    args = (data.x[data.train[:16]],)
    folder = tmp_path / "compiled" / step_key(model, args, False)
    killed = folder.parent / f".building-{folder.name}"
    killed.mkdir(parents=True)
    (killed / "forward.so").write_text("half a library")
    script = (
        "import json, sys, torch\n"
        "from groklab.compiled import compiled_step\n"
        "from groklab.config import from_dict\n"
        "from groklab.data import build_task\n"
        "from groklab.models import build_model\n"
        "config, threads = from_dict(json.loads(sys.argv[1])), int(sys.argv[2])\n"
        "torch.set_num_threads(threads)\n"
        "data = build_task(config.task, config.split_seed)\n"
        "model = build_model(config.model, data, config.seed)\n"
        "x = data.x[data.train[:16]]\n"
        "print('ready', flush=True)\n"
        "out = compiled_step(model, (x,))(x)\n"
        "print(json.dumps({'compiler': 'torch._inductor' in sys.modules, 'out': out.tolist()}))\n"
    )
    command = [sys.executable, "-c", script, json.dumps(to_dict(config)), str(torch.get_num_threads())]
    with build_lock(folder):
        waiter = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=os.environ)
        assert waiter.stdout is not None and waiter.stdout.readline() == "ready\n"  # it asks for the libraries now
        build(model, args, False, folder)
    stdout, _ = waiter.communicate(timeout=600)
    assert waiter.returncode == 0
    seen = json.loads(stdout)
    assert seen["compiler"] is False  # it waited and loaded this build
    torch.testing.assert_close(torch.tensor(seen["out"]), compiled_step(model, args)(*args).detach())
    assert sorted(p.name for p in folder.iterdir()) == ["backward.so", "forward.so"]
    assert sorted(p.name for p in folder.parent.iterdir()) == [f".{folder.name}.lock", folder.name]  # the killed build's folder went
