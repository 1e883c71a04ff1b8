"""Shared test helpers: small configs that run in a fraction of a second on one CPU thread."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from groklab.config import Config, apply_overrides

torch.set_num_threads(1)


def tiny(config: Config, overrides: dict[str, object] | None = None) -> Config:
    """`config` shrunk for a test: one thread, CPU, few steps, frequent evaluation, then dotted `overrides`."""
    base: dict[str, object] = {"threads": 1, "device": "cpu", "steps": 6, "eval_every": 3, "checkpoint_every": 1000}
    return apply_overrides(config, {**base, **(overrides or {})})


def hash_tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under root (directories as '<dir>'), to prove nothing changed."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def small_config() -> Config:
    """A small MLP on x+y mod 7 that trains in milliseconds."""
    return tiny(
        Config(), {"task.p": 7, "task.train_frac": 0.5, "task.val_frac": 0.25, "model.d_model": 16, "model.width": 32, "model.depth": 1}
    )
