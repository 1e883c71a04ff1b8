"""export-tl: a nanda run as a TransformerLens HookedTransformer (skipped unless the `interp` extra is installed)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from groklab.analysis import tl
from groklab.config import UserError, apply_overrides
from groklab.experiments.presets import get_preset
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
        tl.command([str(small_nanda(tmp_path))])


def test_export_tl_rejects_the_power_model() -> None:
    with pytest.raises(UserError, match="post-LayerNorm"):
        tl.tl_config(get_preset("power-fig1").model, 99, 97, 4)


@pytest.mark.skipif(not HAS_TL, reason="needs the interp extra (transformer-lens)")
def test_export_tl_logits_match(tmp_path) -> None:
    run_dir = small_nanda(tmp_path)
    hooked, _, diff = tl.to_hooked_transformer(load_run(run_dir))
    assert diff <= 1e-4
    tl.command([str(run_dir), "--out", str(tmp_path / "tl.pt")])
    saved = torch.load(tmp_path / "tl.pt")
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    reloaded = HookedTransformer(HookedTransformerConfig(**saved["cfg"]))
    reloaded.load_state_dict(saved["state_dict"])
    x = torch.tensor([[1, 11, 2, 12]])  # 1 + 2 = (operand, op token, operand, '=')
    assert torch.allclose(reloaded(x)[:, -1], hooked(x)[:, -1])
