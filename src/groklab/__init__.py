"""groklab: a laboratory for grokking.

from groklab import Config, train, presets, load_run
summary = train(presets["mlp"], "runs/mlp")
"""

from __future__ import annotations

from groklab.config import VERSION, Config, ModelConfig, OptimConfig, TaskConfig, UserError, apply_overrides

__version__ = VERSION  # from the installed metadata: pyproject.toml is the one place it is written

__all__ = ["Config", "TaskConfig", "ModelConfig", "OptimConfig", "UserError", "apply_overrides", "train", "presets", "load_run", "load_model"]


def __getattr__(name: str):  # keep `import groklab` light: torch loads on first use of train/load_run/load_model/presets
    if name == "train":
        from groklab.train import train

        return train
    if name == "load_run":
        from groklab.runio import load_run

        return load_run
    if name == "load_model":
        from groklab.models import load_model

        return load_model
    if name == "presets":
        from groklab.presets import PRESETS

        return {key: preset.config for key, preset in PRESETS.items()}
    raise AttributeError(name)
