"""Seed packing: runs of a sweep that differ only in their seed, grouped into packs that train as one vmapped ensemble.

A pack is one worker task; each member is still an ordinary run directory with its own run id, lock, metrics,
summary and checkpoints (train.train_pack), so runs.parquet and a later resume cannot tell a packed run from an
unpacked one. Packing is on by default where the runs would train on a GPU (many small models share it far
better than one at a time) and off on a CPU, where an ensemble gives about a single run's per-model speed.
"""

from __future__ import annotations

from groklab.config import Config, flatten, to_dict
from groklab.errors import UserError
from groklab.steppers import ENSEMBLE_REFUSED, refused_field
from groklab.sweep.spec import PlannedRun

GPU_PACK = 64
"""Members per pack when packing is on by default (a GPU): the ensemble size measured at 16x one model's throughput."""


def on_gpu(config: Config, gpu_here: bool) -> bool:
    """Whether `config` trains on a CUDA device where the runs go (`gpu_here`: that place has one)."""
    return config.device.startswith("cuda") or (config.device == "auto" and gpu_here)


def seed_groups(runs: list[PlannedRun]) -> list[list[PlannedRun]]:
    """The runs grouped by everything but their seed, in planned order."""
    groups: dict[str, list[PlannedRun]] = {}
    for run in runs:
        key = repr(sorted((k, v) for k, v in flatten(to_dict(run.config)).items() if k != "seed"))
        groups.setdefault(key, []).append(run)
    return list(groups.values())


def check_pack(pack: int | None) -> None:
    if pack is not None and pack < 1:
        raise UserError(f"--pack {pack} is not valid: expected an integer >= 1 (1 trains every run on its own)")


def plan_packs(runs: list[PlannedRun], pack: int | None, gpu_here: bool) -> list[list[PlannedRun]]:
    """The runs as worker tasks: packs of up to `pack` runs that differ only in their seed (None: GPU_PACK for runs that
    train on a GPU, 1 elsewhere). An explicit pack > 1 of runs an ensemble cannot reproduce (ENSEMBLE_REFUSED) is refused
    in one line; by default those runs simply train one by one."""
    check_pack(pack)
    tasks: list[list[PlannedRun]] = []
    for group in seed_groups(runs):
        size = pack if pack is not None else (GPU_PACK if on_gpu(group[0].config, gpu_here) else 1)
        refused = refused_field(group[0].config)
        if refused is not None and size > 1 and len(group) > 1:
            if pack is not None:
                name, value = refused
                raise UserError(
                    f"--pack {pack} is not valid for runs with {name}={value}: {ENSEMBLE_REFUSED[name]}; drop --pack to train them one by one"
                )
            size = 1
        tasks.extend(group[i : i + size] for i in range(0, len(group), size))
    return tasks
