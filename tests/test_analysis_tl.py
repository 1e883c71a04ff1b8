"""export-tl: a nanda run as a TransformerLens HookedTransformer (skipped unless the `interp` extra is installed)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from groklab.analysis import tl
from groklab.config import UserError, apply_overrides
from groklab.models import load_model
from groklab.presets import get_preset
from groklab.runio import load_run
from groklab.train import train

HAS_TL = importlib.util.find_spec("transformer_lens") is not None


def small_nanda(tmp_path, **overrides: object):
    base = {"device": "cpu", "threads": 1, "steps": 3, "eval_every": 3, "task.p": 11, "model.d_model": 32, "model.d_mlp": 64}
    config = apply_overrides(get_preset("nanda"), {**base, **overrides})
    train(config, tmp_path / "run", progress=False)
    return tmp_path / "run"


@pytest.mark.skipif(HAS_TL, reason="checks the message shown when TransformerLens is missing")
def test_export_tl_without_transformer_lens_says_how_to_install(tmp_path) -> None:
    with pytest.raises(UserError, match=r"pip install -e \.\[interp\]"):
        tl.export_tl(small_nanda(tmp_path))


def test_export_tl_rejects_the_mlp() -> None:
    with pytest.raises(UserError, match="model.name='transformer', not 'mlp'"):
        tl.tl_config(get_preset("mlp").model, 99, 97, 4)


@pytest.mark.skipif(not HAS_TL, reason="needs the interp extra (transformer-lens)")
@pytest.mark.parametrize(("preset", "norm"), [("nanda", "none"), ("power-fig1", "post"), ("power-fig1", "pre")])
def test_export_tl_logits_match(tmp_path, preset: str, norm: str) -> None:
    base = {"device": "cpu", "threads": 1, "steps": 30, "eval_every": 30, "task.p": 11, "model.d_model": 32, "model.d_mlp": 64}
    train(apply_overrides(get_preset(preset), {**base, "model.norm": norm}), tmp_path / "run", progress=False)
    run_dir = tmp_path / "run"
    hooked, _, diff = tl.to_hooked_transformer(load_run(run_dir))
    assert diff <= 1e-4
    assert tl.export_tl(run_dir, tmp_path / "tl.pt")[0] == tmp_path / "tl.pt"
    reloaded = tl.load_hooked(tmp_path / "tl.pt")
    x = torch.tensor([[1, 11, 2, 12]])  # 1 + 2 = (operand, op token, operand, '=')
    model = load_model(load_run(run_dir)).eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(x)[:, -1], model(x), atol=1e-5)
        # TransformerLens tools see the run: a cache of every activation, the post-LayerNorm stream at the hook points.
        _, cache = reloaded.run_with_cache(x)
    assert cache["blocks.0.attn.hook_pattern"].shape == (1, model.blocks[0].n_heads, 4, 4)
    with torch.no_grad():  # the residual stream at every position after block 0 is groklab's block 0 output
        ours = model.blocks[0](model.embed(x) + model.pos.weight)
    assert torch.allclose(cache["blocks.0.hook_resid_post"], ours, atol=1e-5)
    reloaded.reset_hooks()  # the LayerNorm hooks are permanent: they stay
    with torch.no_grad():
        assert torch.allclose(reloaded(x)[:, -1], model(x), atol=1e-5)
