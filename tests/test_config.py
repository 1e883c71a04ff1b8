"""Config: overrides from strings and TOML values, validation messages, serialization round trip."""

from __future__ import annotations

import hashlib
import json
import typing
from typing import Literal

import pytest

from groklab.config import (
    ADDED_FIELDS,
    Config,
    ModelConfig,
    UserError,
    apply_overrides,
    from_dict,
    get_path,
    leaf_fields,
    to_dict,
    validate,
)
from groklab.presets import PRESETS, get_preset
from groklab.sweep import run_id
from groklab.train import check


def test_every_field_has_a_docstring() -> None:
    fields = leaf_fields()
    assert {"steps", "seed", "split_seed", "eval_every", "task.op", "task.p", "task.train_frac", "optim.lr", "model.init_scale"} <= set(
        fields
    )
    assert all(doc for _, doc in fields.values()), [path for path, (_, doc) in fields.items() if not doc]


def test_overrides_coerce_strings_and_toml_values() -> None:
    cfg = apply_overrides(
        Config(),
        {"task.op": "x*y", "task.p": "101", "task.train-frac": "0.4", "optim.weight_decay": 0.5, "steps": "1_000", "seed": 3.0},
    )
    assert (cfg.task.op, cfg.task.p, cfg.task.train_frac, cfg.optim.weight_decay, cfg.steps, cfg.seed) == ("x*y", 101, 0.4, 0.5, 1000, 3)
    assert apply_overrides(Config(), {"model.name": "transformer"}).model.name == "transformer"
    assert Config().task.op == "x+y"  # frozen defaults untouched


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"task.nope": "1"}, "task.nope"),
        ({"optim.learning_rate": "1"}, "optim.learning_rate"),
        ({"task.p": "seven"}, "task.p='seven'"),
        ({"task.p": "7.5"}, "task.p='7.5'"),
        ({"steps": True}, "steps=True"),
        ({"model.name": "gpt"}, "model.name='gpt'"),
        ({"optim.lr": "fast"}, "optim.lr='fast'"),
        ({"task": "x"}, "task"),
    ],
)
def test_bad_overrides_name_the_value(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(UserError) as err:
        apply_overrides(Config(), overrides)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_unknown_field_suggests_the_dotted_path() -> None:
    with pytest.raises(UserError, match=r"did you mean optim\.lr"):
        apply_overrides(Config(), {"lr": "0.1"})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"task.train_frac": "0"}, "task.train_frac=0"),
        ({"task.train_frac": "1"}, "task.train_frac=1"),
        ({"task.train_frac": "-0.2"}, "task.train_frac=-0.2"),
        ({"task.val_frac": "1.5"}, "task.val_frac=1.5"),
        ({"task.train_frac": "0.8", "task.val_frac": "0.3"}, "task.train_frac + task.val_frac = 1.1"),
        ({"task.train_frac": "0.75", "task.val_frac": "0.25"}, "task.train_frac + task.val_frac = 1"),
        ({"task.op": "x/y", "task.p": "96"}, "task.p=96"),
        ({"task.op": "x/y_or_x-y", "task.p": "1"}, "task.p=1"),
        ({"task.p": "1"}, "task.p=1"),
        ({"task.op": "x**y"}, "task.op='x**y'"),
        ({"optim.lr": "0"}, "optim.lr=0"),
        ({"model.d_model": "130"}, "model.d_model=130"),
        ({"model.init_scale": "-1"}, "model.init_scale=-1"),
        ({"task.name": "parity", "task.k_bits": "50"}, "task.k_bits=50"),
        ({"task.name": "digits", "model.name": "transformer"}, "model.name='transformer'"),
        ({"task.name": "mnist"}, "task.data_dir"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"steps": "0"}, "steps=0"),
    ],
)
def test_validate_rejects_with_one_line(overrides: dict[str, str], named: str) -> None:
    with pytest.raises(UserError) as err:
        check(apply_overrides(Config(), overrides))
    assert named in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_round_trip(name: str) -> None:
    cfg = PRESETS[name].config
    assert validate(cfg) is cfg
    data = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(data) == cfg
    assert PRESETS[name].description and "\n" not in PRESETS[name].description


def test_from_dict_rejects_unknown_and_mistyped_keys() -> None:
    data = to_dict(Config())
    data["task"]["colour"] = "red"
    with pytest.raises(UserError, match="task.colour"):
        from_dict(data)
    data = to_dict(Config())
    data["task"] = 3
    with pytest.raises(UserError, match="task must be a table"):
        from_dict(data)


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (ModelConfig(norm="mid"), "model.norm='mid'"),  # type: ignore[arg-type]
        (ModelConfig(init="xavier"), "model.init='xavier'"),  # type: ignore[arg-type]
        (ModelConfig(mlp_bias="yes"), "model.mlp_bias='yes'"),  # type: ignore[arg-type]
        (ModelConfig(name="nanda"), "model.norm=none"),  # type: ignore[arg-type]
    ],
)
def test_validate_rejects_model_fields_set_from_python(model: ModelConfig, named: str) -> None:
    with pytest.raises(UserError) as err:
        validate(Config(model=model))
    assert named in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "same"),
    [
        ("power", "model.name=transformer model.norm=post model.mlp_bias=false model.init=torch"),
        ("nanda", "model.name=transformer model.norm=none model.mlp_bias=true model.init=normal model.n_layers=1"),
    ],
)
def test_old_model_names_say_which_fields_build_the_same_model(name: str, same: str) -> None:
    """`--model.name nanda` (schema 1's name) is one line naming the fields, which do build that model."""
    with pytest.raises(UserError) as err:
        apply_overrides(Config(), {"model.name": name})
    assert f"model.name={name!r}" in str(err.value) and same in str(err.value) and "\n" not in str(err.value)
    fields = dict(field.split("=") for field in same.split())
    assert (
        validate(apply_overrides(Config(), fields)).model
        == from_dict({"model": {"name": name, **({} if name == "power" else {"n_layers": 2})}}, schema=1).model
    )


def test_schema_1_configs_keep_their_models() -> None:
    """config.json of schema 1 named the transformers `power` and `nanda` (which always had one block): they load as
    those models, every other field kept; the presets build the same ones."""
    old = to_dict(PRESETS["nanda"].config)
    old["model"] = {k: v for k, v in old["model"].items() if k not in ("norm", "mlp_bias", "init")} | {"name": "nanda", "n_layers": 2}
    assert from_dict(old, schema=1) == PRESETS["nanda"].config
    old = to_dict(PRESETS["power-fig1"].config)
    old["model"] = {k: v for k, v in old["model"].items() if k not in ("norm", "mlp_bias", "init")} | {"name": "power"}
    assert from_dict(old, schema=1) == PRESETS["power-fig1"].config
    with pytest.raises(UserError, match="model.name='power' is not valid any more"):
        from_dict(old)  # a schema-2 file has no `power`


def off_default(path: str, value: object) -> object:
    """A value of the field at `path` other than `value`: another allowed name, the other truth value, or 2."""
    kind = leaf_fields()[path][0]
    if typing.get_origin(kind) is Literal:
        return next(v for v in typing.get_args(kind) if v != value)
    return not value if isinstance(value, bool) else 2


def test_fields_added_since_schema_2_keep_older_run_ids_while_at_their_default() -> None:
    """A run id (and a checkpoint's config digest) is the hash of the config as earlier versions wrote it, without the
    fields added since, so their sweeps and runs resume; setting such a field gives a run of its own."""
    config = get_preset("mlp")
    older = to_dict(config)
    for path in ADDED_FIELDS:
        section, _, name = path.rpartition(".")
        del (older[section] if section else older)[name]
    assert run_id(config) == hashlib.sha256(json.dumps(older, sort_keys=True).encode()).hexdigest()[:10]
    changed = {path: off_default(path, get_path(config, path)) for path in ADDED_FIELDS}
    assert len({run_id(apply_overrides(config, {path: v})) for path, v in changed.items()} | {run_id(config)}) == 1 + len(ADDED_FIELDS)
