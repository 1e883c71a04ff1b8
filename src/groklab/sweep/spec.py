"""The sweep spec (TOML) and its expansion into validated runs.

A spec names a base preset, fixed overrides, axes and a seed count::

    preset = "mlp"
    seeds = 3                 # seed = 0, 1, 2 (split_seed stays fixed unless set)
    [set]                     # fixed overrides, Config dotted paths as in the CLI
    steps = 20000
    [grid]                    # cartesian product of these lists
    "task.op" = ["x+y", "x-y"]
    "task.train_frac" = [0.3, 0.5]
    [zip]                     # lists of equal length, walked together
    "optim.lr" = [1e-3, 3e-3]
    "optim.weight_decay" = [1.0, 0.3]

A recipe's `faithful` spec also lists how it departs from the paper, one string per cut (they are copied into
findings.json)::

    cuts = ["steps: 10^6 -> 3·10^4 (2-core CPU)", "seeds: 3 (the paper's count is not stated)"]

Every run is built and validated here, before anything is written, so that a typo is one line naming
the spec key and value instead of a sweep that fails an hour in.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groklab.config import Config, UserError, apply_overrides, check_overridden_cadence, fingerprint, normalize_path
from groklab.presets import get_preset
from groklab.stats import SEED_COLUMNS
from groklab.train import check

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the same parser, packaged for 3.10
    import tomli as tomllib

TOP_LEVEL_KEYS = ("preset", "seeds", "set", "grid", "zip", "description", "cuts")


@dataclass(frozen=True)
class SweepSpec:
    """A parsed spec: what varies (`grid`, `zip`, `seeds`) and what does not (`preset`, `fixed`)."""

    preset: str
    seeds: tuple[int, ...] | None
    """Seeds to run every point with; None keeps the seed of the preset / [set] / axes."""
    fixed: dict[str, Any]
    grid: dict[str, list[Any]]
    zipped: dict[str, list[Any]]
    raw: dict[str, Any]
    """The parsed TOML, compared on a rerun to refuse a different spec in the same sweep dir."""

    @property
    def axes(self) -> list[str]:
        """The varied fields other than the seeds (seed, split_seed): the grouping keys of the sweep's statistics."""
        return [k for k in [*self.grid, *self.zipped] if k not in SEED_COLUMNS]

    @property
    def replicates(self) -> list[str]:
        """The seed columns of its runs' table: `seed`, and `split_seed` where the spec varies it."""
        return [k for k in SEED_COLUMNS if k == "seed" or k in self.grid or k in self.zipped]


@dataclass(frozen=True)
class PlannedRun:
    run_id: str
    config: Config
    point: dict[str, Any]
    """The axis values (and seed) of this run, for tables."""

    @property
    def run_dir(self) -> str:
        """The run directory, relative to the sweep dir."""
        return f"runs/{self.run_id}"


def run_id(config: Config) -> str:
    """A short, stable hash of the resolved config: the same config always lands in the same run dir."""
    return fingerprint(config, 10)


def parse_spec(text: str, where: str) -> SweepSpec:
    """Parse spec TOML text; `where` (the file name) prefixes every error."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UserError(f"{where} is not valid TOML: {err}") from None
    unknown = [k for k in raw if k not in TOP_LEVEL_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}: expected {', '.join(TOP_LEVEL_KEYS)}")
    cuts = raw.get("cuts", [])
    if not isinstance(cuts, list) or not all(isinstance(c, str) for c in cuts):
        raise UserError(f"{where}: cuts={cuts!r} is not valid: expected a list of strings, one per departure from the paper")
    preset = raw.get("preset", "mlp")
    if not isinstance(preset, str):
        raise UserError(f"{where}: preset={preset!r} is not valid: expected a preset name (see `groklab presets`)")

    seeds_raw = raw.get("seeds")
    if seeds_raw is None:
        seeds = None
    elif isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and seeds_raw >= 1:
        seeds = tuple(range(seeds_raw))
    elif isinstance(seeds_raw, list) and seeds_raw and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds_raw):
        seeds = tuple(seeds_raw)
    else:
        raise UserError(f"{where}: seeds={seeds_raw!r} is not valid: expected an integer >= 1 or a list of seeds >= 0")

    sections: dict[str, dict[str, Any]] = {}
    for name in ("set", "grid", "zip"):
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise UserError(f"{where}: {name} must be a table ([{name}]), got {table!r}")
        sections[name] = {}
        for key, value in table.items():
            if isinstance(value, dict):  # an unquoted dotted key (task.op = ...) parses as a nested table
                raise UserError(f'{where}: [{name}] {key}: quote dotted keys, e.g. "task.op" = ..., got a table {value!r}')
            path = normalize_path(key)
            if name == "set" and isinstance(value, list):
                raise UserError(f"{where}: [set] {key}={value!r} is a list: put axes in [grid] or [zip]")
            if name != "set" and (not isinstance(value, list) or not value):
                raise UserError(f"{where}: [{name}] {key}={value!r} is not valid: expected a non-empty list of values")
            for other, seen in sections.items():
                if path in seen:
                    raise UserError(f"{where}: {key} appears in both [{other}] and [{name}]: give each field once")
            sections[name][path] = value
    lengths = {len(v) for v in sections["zip"].values()}
    if len(lengths) > 1:
        shown = ", ".join(f"{k} has {len(v)}" for k, v in sections["zip"].items())
        raise UserError(f"{where}: [zip] lists must have equal lengths: {shown}")
    if seeds is not None and "seed" in {*sections["set"], *sections["grid"], *sections["zip"]}:
        raise UserError(f"{where}: seeds = {seeds_raw!r} and a seed field are both given: use one of them")
    return SweepSpec(preset, seeds, sections["set"], sections["grid"], sections["zip"], raw)


def load_spec(path: Path) -> SweepSpec:
    try:
        text = path.read_text()
    except OSError as err:
        raise UserError(f"cannot read sweep spec {path}: {err.strerror}") from None
    return parse_spec(text, path.name)


def expand(spec: SweepSpec, where: str = "spec") -> list[PlannedRun]:
    """Every run of the spec as a validated Config: zip index, then grid product, then seeds innermost."""
    try:
        base = apply_overrides(get_preset(spec.preset), spec.fixed)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None
    # Check each axis value alone first, so the error names the section, key and value at fault.
    for section, table in (("grid", spec.grid), ("zip", spec.zipped)):
        for key, values in table.items():
            for value in values:
                try:
                    apply_overrides(base, {key: value})
                except UserError as err:
                    raise UserError(f"{where}: [{section}] {err}") from None

    zip_points = [dict(zip(spec.zipped, values, strict=True)) for values in zip(*spec.zipped.values(), strict=True)] or [{}]
    grid_points = [dict(zip(spec.grid, values, strict=True)) for values in itertools.product(*spec.grid.values())]
    seeds: list[dict[str, Any]] = [{"seed": s} for s in spec.seeds] if spec.seeds is not None else [{}]
    runs: list[PlannedRun] = []
    seen: dict[str, dict[str, Any]] = {}
    for zp, gp, sp in itertools.product(zip_points, grid_points, seeds):
        point = {**zp, **gp, **sp}
        config = apply_overrides(base, point)
        try:
            check(config)
            check_overridden_cadence(config, [*spec.fixed, *point])
        except UserError as err:
            shown = ", ".join(f"{k}={v!r}" for k, v in point.items()) or "the base config"
            raise UserError(f"{where}: run {shown}: {err}") from None
        rid = run_id(config)
        if rid in seen:
            raise UserError(f"{where}: runs {seen[rid]} and {point} resolve to the same config: remove the duplicate value")
        seen[rid] = point
        runs.append(PlannedRun(rid, config, {**point, "seed": config.seed}))
    return runs
