"""The cache of compiled training steps (groklab.compiled): what its key tells apart, and where it lives. Building and
loading the libraries is tested, slow, in test_fastpath.py (test_compiled_training_matches_eager)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny

from groklab.compiled import cache_root, step_key
from groklab.config import Config, apply_overrides
from groklab.data import build_task
from groklab.models import build_model

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
