"""groklab: a laboratory for grokking.

from groklab import Config, train, presets, load_run
summary = train(presets["mlp"], "runs/mlp")
"""

from __future__ import annotations

import sys
import types

from groklab.config import VERSION, Config, ModelConfig, OptimConfig, TaskConfig, UserError, apply_overrides

__version__ = VERSION  # from the installed metadata: pyproject.toml is the one place it is written

__all__ = ["Config", "TaskConfig", "ModelConfig", "OptimConfig", "UserError", "apply_overrides", "train", "resume", "presets", "load_run", "load_model"]


def __getattr__(name: str):  # keep `import groklab` light: torch loads on first use of train/load_run/load_model/presets
    if name == "train":
        from groklab.train import train

        return train
    if name == "resume":
        from groklab.train import resume

        return resume
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


class _Package(types.ModuleType):
    """`train` and `presets` name both a public object (the function, the dict of preset configs) and a submodule
    (groklab/train.py, groklab/presets.py). Importing a submodule sets it as an attribute of its package, which would
    hide the public object from `from groklab import train`: that one assignment is ignored, so the names always
    resolve through __getattr__ above (the submodules stay importable as `from groklab.train import ...`)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in ("train", "presets") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
