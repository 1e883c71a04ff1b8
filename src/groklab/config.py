"""The one typed, frozen configuration of a run, and the helpers that build it from user input.

Every field is reachable from the CLI as ``--<path> VALUE`` (``--task.train-frac 0.4``) and from a
sweep spec as ``"task.train_frac" = [...]``. Values are checked here, before anything runs, so that a
bad value is one clear line and never a half-written run directory.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from types import MappingProxyType
from typing import Any, Literal

from groklab.errors import UserError

SCHEMA_VERSION = 2
"""Version of config.json's layout. 2: model.name `transformer` with model.norm, model.mlp_bias and model.init replaced
the names `power` and `nanda` of schema 1 (`from_dict` reads both, see LEGACY_MODELS)."""


def _installed_version() -> str:
    """groklab's version as installed (pyproject.toml is the only place it is written)."""
    try:
        return metadata.version("groklab")
    except metadata.PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


VERSION = _installed_version()
"""The version of groklab that is running: `groklab.__version__`, config.json and recipe.json all read it here."""


SEQUENCE_TASKS = ("dyck", "question_formation", "tense_inflection")
"""Task families whose examples are token sequences with targets at many positions (trained with model `lm`)."""


@dataclass(frozen=True)
class TaskConfig:
    name: Literal["binop", "parity", "digits", "mnist", "dyck", "question_formation", "tense_inflection", "addition"] = "binop"
    """Task family: `binop` (a ∘ b tables: modular ops and S5), `addition` (a + b without modulus over the unordered pairs of 0..p−1: Liu et al. 2022's toy task), `parity`, `digits` (sklearn 8×8), `mnist` (IDX files), or a sequence task of structural grokking (Murty et al. 2023, model `lm`): `dyck`, `question_formation`, `tense_inflection`."""
    op: str = "x+y"
    """Binary operation for `binop`: x+y, x-y, x*y, x/y, x/y_or_x-y, x^2+y^2, x^2+xy+y^2, x^2+xy+y^2+x, x^3+xy, x^3+xy^2+y, s5:xy, s5:xyx^-1, s5:xyx, or a name registered with groklab.data.register_op."""
    p: int = 97
    """Modulus of the modular ops (ignored by S5 ops, whose group has 120 elements)."""
    train_frac: float = 0.5
    """Fraction of all examples in the training split."""
    val_frac: float = 0.25
    """Fraction of all examples in the validation split; the rest is the locked test split."""
    n_bits: int = 40
    """Sparse parity: number of input bits n."""
    k_bits: int = 3
    """Sparse parity: number of relevant bits k (the label is their parity)."""
    n_samples: int = 2000
    """Sparse parity: number of distinct examples drawn (split by train_frac / val_frac)."""
    train_size: int = 1000
    """Images: number of training images (Omnigrok uses 1,000); val_frac of all images is validation, the rest test. Sequence tasks: number of training sequences."""
    data_dir: str = ""
    """MNIST: directory holding the standard IDX files (train-images-idx3-ubyte, ... optionally .gz)."""
    eval_size: int = 1000
    """Sequence tasks: in-distribution sequences in the val split, and as many in the locked test split."""
    gen_size: int = 1000
    """Sequence tasks: sequences in the generalization split `gen` (logged as gen/loss, gen/acc; never used for stopping)."""
    n_brackets: int = 20
    """Dyck: number of bracket types k."""
    max_depth: int = 10
    """Dyck: maximum nesting depth m."""
    min_distance: int = 1
    """Dyck: a closing bracket is scored only if at least this many tokens after its opener (1: every one; the paper: 10)."""
    max_len: int = 0
    """Dyck: strings longer than this many tokens are drawn again (0: no limit, as the paper; a limit bounds the padded length)."""


@dataclass(frozen=True)
class ModelConfig:
    name: Literal["transformer", "mlp", "lm", "toy"] = "mlp"
    """Model family: `transformer` (decoder-only; its defaults are Power et al.'s, the `nanda` preset sets Nanda et al.'s), `mlp`, `lm`: the same transformer as a causal language model (next-token loss at every position) for the sequence tasks, or `toy`: Liu et al. 2022's (a, b) → Dec(E_a + E_b) with an embedding of d_model dimensions, a decoder of `depth` layers of `width` and fixed random targets of `target_dim` (use `loss = "target_mse"`)."""
    d_model: int = 128
    """Transformer width; for the MLP, the width of each operand's embedding."""
    n_layers: int = 2
    """Transformer blocks."""
    norm: Literal["post", "pre", "none"] = "post"
    """Transformer LayerNorm placement: `post` after each residual addition (Power et al.), `pre` before each block's attention and MLP plus one before the unembedding (GPT-2), `none` (Nanda et al.)."""
    mlp_bias: bool = False
    """Transformer: biases in the blocks' MLP layers (Nanda et al.: true; Power et al.: false). Attention and unembedding have none."""
    init: Literal["torch", "normal", "uniform"] = "torch"
    """Initialization: PyTorch's default per layer; `normal` (transformers, Nanda et al.): every weight matrix and embedding from N(0, 1/d_model), biases 0, LayerNorm gains 1; or `uniform` (Liu et al. 2022's toy code): every embedding from U(−½, ½), other layers PyTorch's default."""
    n_heads: int = 4
    """Attention heads."""
    d_mlp: int = 512
    """Hidden width of the transformer's MLP block."""
    width: int = 256
    """MLP hidden width."""
    depth: int = 2
    """MLP number of hidden layers."""
    activation: Literal["relu", "gelu", "quadratic", "tanh", "silu"] = "relu"
    """Hidden activation (`quadratic` is x², as in the effective-theory papers)."""
    dropout: float = 0.0
    """Dropout probability after attention and MLP blocks (transformers) or hidden layers (MLP)."""
    init_scale: float = 1.0
    """α: every initial weight is multiplied by α (Omnigrok: α > 1 induces grokking)."""
    tie_embeddings: bool = False
    """`lm`: the unembedding is the token embedding (one shared matrix); Murty et al.'s code unties them."""
    target_dim: int = 30
    """`toy`: dimension of the fixed random target vector of each class (Liu et al. 2022: 30)."""


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    """Optimizer. `adam` applies weight decay as L2 in the gradient; `adamw` decouples it."""
    lr: float = 1e-3
    """Peak learning rate."""
    embed_lr: float = 0.0
    """Peak learning rate of the token embedding alone (Liu et al. 2022's representation lr; `lr` then acts as the decoder lr); 0 = same as `lr`."""
    beta1: float = 0.9
    """Adam β1 (also SGD momentum)."""
    beta2: float = 0.98
    """Adam β2."""
    weight_decay: float = 1.0
    """Weight decay."""
    warmup_steps: int = 10
    """Linear learning-rate warm-up from lr/warmup_steps to lr over this many steps."""
    batch_size: int = 512
    """Minibatch size; 0 (or at least the training-set size) means full batch."""
    last_batch: Literal["drop", "keep"] = "drop"
    """Each epoch's last, partial minibatch (when batch_size does not divide the training set): `drop` it, as DataLoader(drop_last=True), or `keep` it as one smaller step, as a default DataLoader does."""
    grokfast: Literal["none", "ema", "ma"] = "none"
    """Grokfast gradient filter (Lee et al. 2024): `ema` adds λ·EMA(gradient), `ma` adds λ·mean of the last `grokfast_window` gradients."""
    grokfast_alpha: float = 0.98
    """Grokfast-EMA momentum α in [0, 1): ema <- α·ema + (1-α)·gradient."""
    grokfast_lamb: float = 2.0
    """Grokfast amplification λ >= 0 of the slow gradient (note: it also raises the effective learning rate about 1+λ times)."""
    grokfast_window: int = 100
    """Grokfast-MA window: number of recent gradients averaged (the filter starts once the window is full)."""
    wd_target: Literal["zero", "init"] = "zero"
    """Weight decay pulls the weights towards zero, or towards their initial values (Power et al.'s intervention)."""
    grad_noise: float = 0.0
    """Standard deviation of Gaussian noise added to every gradient entry before the update (0 = off)."""
    orthograd: bool = False
    """⊥Grad (Prieto et al. 2025): use only each parameter's gradient component orthogonal to the parameter, rescaled to the gradient's norm."""
    norm_constraint: float = 0.0
    """Omnigrok's constrained training: if > 0, rescale all parameters after every step to this factor times their initial total L2 norm (1 = stay on the init sphere; 0 = off)."""
    grad_clip: float = 0.0
    """Clip each step's gradient to this global L2 norm before the update, as torch's clip_grad_norm_ (Murty et al.'s code: 1; 0 = off)."""
    decay_steps: int = 0
    """After the warm-up, decay the learning rate linearly to 0 at this step (Murty et al.'s code: 2,000,000); 0 = constant."""


@dataclass(frozen=True)
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    """The data."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """The optimizer."""
    steps: int = 10_000
    """Total optimizer steps."""
    seed: int = 0
    """Seed of initialization, batch order and dropout."""
    split_seed: int = 0
    """Seed of the train / val / test split (separate, so seeds vary the model on the same data)."""
    loss: Literal["cross_entropy", "mse", "stablemax", "hinge", "target_mse"] = "cross_entropy"
    """Training loss: cross-entropy on logits, MSE between logits and one-hot targets (Omnigrok), StableMax cross-entropy (Prieto et al.), the multi-class hinge (Merrill et al.'s parity), or `target_mse`: the `toy` model's MSE to its class's fixed target vector (Liu et al. 2022)."""
    loss_dtype: Literal["float32", "float64"] = "float32"
    """Precision of the loss computation (float64 delays softmax collapse)."""
    eval_every: int = 100
    """Evaluate the train, val and test splits (and any task-defined ones) every this many steps (`linear` spacing)."""
    eval_spacing: Literal["linear", "log"] = "linear"
    """`log`: evaluate at about 20 log-spaced steps per decade instead, so 10⁶-step runs stay cheap."""
    eval_train_size: int = 0
    """Measure train/loss and train/acc on a fixed sample of this many training examples, drawn once with split_seed (0: the whole split). For training sets far larger than the held-out splits (the structural tasks' 10⁵ sequences), where an evaluation of every training example costs more than the training between two evaluations."""
    stop_patience: int = 0
    """If > 0, stop once val acc ≥ 0.99 has held for this many steps (val only: the test split stays locked)."""
    checkpoint_every: int = 5000
    """Save a resumable checkpoint every this many steps (and at least every checkpoint_seconds)."""
    checkpoint_seconds: float = 60.0
    """Save a resumable checkpoint when this much wall time has passed since the last one."""
    device: str = "auto"
    """`auto` (cuda, then mps, then cpu), `cpu`, `cuda`, `cuda:N` or `mps`."""
    threads: int = 0
    """CPU threads for torch; 0 keeps torch's default."""
    compile: bool = False
    """Compile the training forward and backward: on the CPU ahead of time into two libraries kept in groklab's cache (a minute or two per batch size at a model's first compiled run, milliseconds in later ones; `GROKLAB_CACHE_DIR`, else ~/.cache/groklab), with Adam or AdamW (one parameter group, no intervention) the optimizer's update inside the backward's; elsewhere torch.compile; falls back to eager with a warning where unavailable."""
    bf16: bool = False
    """Run the forward passes (training and evaluation) under torch.autocast to bfloat16: matrix multiplies in bfloat16 where the hardware has it (CPUs with AVX512-BF16 or AMX, recent GPUs); weights, gradients, the optimizer and the loss stay in float32 (or `loss_dtype`). Numbers differ from a float32 run's by bfloat16 rounding; `analysis` measurements run in float32."""
    analysis: str = ""
    """Measurements logged into metrics.jsonl during training, comma-separated: fourier, norms, rqi, sharpness, collapse (softmax-collapse fraction), circuit (sparse-parity circuit norms), tree (tree-structuredness of a sequence task's LM) (e.g. `fourier,norms`)."""
    analysis_every: int = 10
    """Log the `analysis` measurements every this many evaluations (they cost more than an evaluation)."""
    log: str = ""
    """Also mirror metrics.jsonl, comma-separated: `tensorboard` (event files in RUN/tensorboard), `wandb` (offline run in RUN/wandb); optional extras, the run dir stays the source of truth."""


# ---------------------------------------------------------------------------------------------
# Field introspection: docstrings and types of every dotted path.


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal after each field) of a dataclass."""
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = str(nxt.value.value)  # type: ignore[union-attr]
    return docs


@functools.cache
def leaf_fields(cls: type = Config, prefix: str = "") -> Mapping[str, tuple[Any, str]]:
    """Every settable dotted path -> (type, docstring); computed once (every config read and sweep table needs it)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[Any, str]] = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(leaf_fields(tp, f"{prefix}{f.name}."))  # type: ignore[arg-type]
        else:
            out[prefix + f.name] = (tp, field_docs(cls).get(f.name, ""))
    return MappingProxyType(out)


def _allowed(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def coerce(path: str, value: Any, tp: Any) -> Any:
    """Convert a CLI string or TOML value to the field's type, or raise a UserError naming both."""
    bad = UserError(f"{path}={value!r} is not valid: expected {_allowed(tp)}")
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise bad
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                raise bad from None
            if number.is_integer():
                return int(number)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        try:
            return float(value)
        except (TypeError, ValueError):
            raise bad from None
    if tp is str:
        if isinstance(value, (dict, list, tuple)):
            raise bad
        return str(value)
    raise bad


def get_path(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def replace_path(config: Any, path: str, value: Any) -> Any:
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(config, **{head: value})
    return dataclasses.replace(config, **{head: replace_path(getattr(config, head), rest, value)})


def normalize_path(path: str) -> str:
    return path.replace("-", "_")


def apply_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Set dotted fields (`task.train_frac`, `task.train-frac`) from strings or TOML values."""
    fields = leaf_fields()
    for raw_path, value in overrides.items():
        path = normalize_path(raw_path)
        if path not in fields:
            close = [p for p in fields if p.split(".")[-1] == path.split(".")[-1]]
            hint = f" (did you mean {', '.join(close)}?)" if close else " (see `groklab train --help`)"
            raise UserError(f"unknown config field {raw_path!r}{hint}")
        if path == "model.name":
            check_legacy_model(value)
        config = replace_path(config, path, coerce(path, value, fields[path][0]))
    return config


def check_overridden_cadence(config: Config, overridden: Iterable[str]) -> None:
    """A UserError where the user set eval_every (one of the `overridden` fields) on a config that evaluates at
    log-spaced steps, which would ignore it without a word."""
    if "eval_every" in map(normalize_path, overridden) and config.eval_spacing == "log":
        raise UserError(
            f"eval_every={config.eval_every} has no effect while eval_spacing is 'log' (about 20 evaluations per decade of "
            "steps, as this preset sets it): set eval_spacing to 'linear' as well"
        )


# ---------------------------------------------------------------------------------------------
# Serialization.


def to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


ADDED_FIELDS = ("optim.grad_clip", "optim.decay_steps", "eval_train_size", "bf16", "optim.last_batch")
"""Fields added since schema 2 was first released: left out of a config's fingerprint while they hold their default, so
that runs and sweeps made before them keep their run ids and their checkpoints' digests."""


def fingerprint(config: Config, length: int) -> str:
    """A stable hash of the resolved config (`length` hex digits): sweep run ids, checkpoints' config digests."""
    tree = to_dict(config)
    default = flatten(to_dict(Config()))
    for path in ADDED_FIELDS:
        section, _, name = path.rpartition(".")
        node = tree[section] if section else tree
        if node[name] == default[path]:
            del node[name]
    return hashlib.sha256(json.dumps(tree, sort_keys=True).encode()).hexdigest()[:length]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'task': {'op': 'x+y'}} -> {'task.op': 'x+y'}: the dotted field paths, as runs.parquet's columns name them."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_names(field: str, spec: str, allowed: tuple[str, ...]) -> list[str]:
    """A comma-separated config value of names (`"fourier, norms"`) -> the names, or a UserError naming the value."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if any(name not in allowed for name in names):
        raise UserError(f"{field}={spec!r} is not valid: expected a comma-separated list of {', '.join(allowed)} (or empty)")
    return names


LEGACY_MODELS: dict[str, dict[str, Any]] = {
    "power": {"model.name": "transformer", "model.norm": "post", "model.mlp_bias": False, "model.init": "torch"},
    "nanda": {"model.name": "transformer", "model.norm": "none", "model.mlp_bias": True, "model.init": "normal", "model.n_layers": 1},
}
"""Schema 1's transformer names and the fields that build the same model (the `nanda` model ignored n_layers)."""


def check_legacy_model(name: Any) -> None:
    """A one-line UserError saying which fields replace a schema-1 model name; nothing for any other value."""
    if name in LEGACY_MODELS:
        same = " ".join(f"{key}={str(value).lower()}" for key, value in LEGACY_MODELS[name].items())
        raise UserError(f"model.name={name!r} is not valid any more: set {same} for the same model")


def from_dict(data: dict[str, Any], schema: int = SCHEMA_VERSION) -> Config:
    """Rebuild a Config from `to_dict` output (e.g. config.json) of layout version `schema`, rejecting unknown or mistyped keys."""
    flat: dict[str, Any] = {}
    sections = {path.rsplit(".", 1)[0] for path in leaf_fields() if "." in path}  # task, model, optim

    def walk(d: Any, prefix: str) -> None:
        if not isinstance(d, dict):
            raise UserError(f"{prefix.rstrip('.') or 'config'} must be a table of fields, got {d!r}")
        for key, value in d.items():
            if isinstance(value, dict) or prefix + key in sections:
                walk(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value

    walk(data, "")
    if schema < 2 and flat.get("model.name") in LEGACY_MODELS:
        flat.update(LEGACY_MODELS[flat["model.name"]])
    return validate(apply_overrides(Config(), flat))


# ---------------------------------------------------------------------------------------------
# Validation of values that types alone do not catch.


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


def validate(config: Config) -> Config:
    """Check value ranges and cross-field rules; return the config unchanged or raise UserError.

    Names that live with their implementations (ops, loggers, analyses) are checked by groklab.train.check, which
    every entry point calls before it writes a file.
    """
    t, m, o = config.task, config.model, config.optim
    _check(0 < t.train_frac < 1, f"task.train_frac={t.train_frac} is not valid: expected a number in (0, 1)")
    _check(0 < t.val_frac < 1, f"task.val_frac={t.val_frac} is not valid: expected a number in (0, 1)")
    _check(
        t.train_frac + t.val_frac < 1,
        f"task.train_frac + task.val_frac = {t.train_frac + t.val_frac:g} is not valid: must be below 1 "
        "so the locked test split is not empty",
    )
    if t.name == "parity":
        _check(t.n_bits >= 1, f"task.n_bits={t.n_bits} is not valid: expected an integer >= 1")
        _check(1 <= t.k_bits <= t.n_bits, f"task.k_bits={t.k_bits} is not valid: expected 1 <= k_bits <= n_bits={t.n_bits}")
        _check(t.n_samples >= 3, f"task.n_samples={t.n_samples} is not valid: expected an integer >= 3")
    if t.name in ("digits", "mnist"):
        _check(t.train_size >= 1, f"task.train_size={t.train_size} is not valid: expected an integer >= 1")
    if t.name == "mnist":
        _check(bool(t.data_dir), "task.data_dir is empty: the mnist task needs the directory holding the IDX files")
    if t.name in SEQUENCE_TASKS:
        _check(m.name == "lm", f"model.name={m.name!r} is not valid for task.name={t.name!r} (a sequence task): expected lm")
        for name in ("train_size", "eval_size", "gen_size", "n_brackets", "max_depth", "min_distance"):
            value = getattr(t, name)
            _check(value >= 1, f"task.{name}={value} is not valid: expected an integer >= 1")
        _check(t.max_len == 0 or t.max_len >= 4, f"task.max_len={t.max_len} is not valid: expected 0 (no limit) or an integer >= 4")
    elif t.name == "addition":
        _check(m.name in ("toy", "mlp"), f"model.name={m.name!r} is not valid for task.name='addition': expected toy or mlp")
        _check(t.p >= 2, f"task.p={t.p} is not valid: expected an integer >= 2")
    elif t.name != "binop":
        _check(m.name == "mlp", f"model.name={m.name!r} is not valid for task.name={t.name!r}: expected mlp")
    else:
        _check(
            m.name != "lm", f"model.name='lm' is not valid for task.name={t.name!r}: expected transformer or mlp (lm is for sequence tasks)"
        )
    _check(
        (config.loss == "target_mse") == (m.name == "toy"),
        f"loss={config.loss!r} is not valid for model.name={m.name!r}: the toy model trains with loss target_mse and only it can",
    )
    _check(m.target_dim >= 1, f"model.target_dim={m.target_dim} is not valid: expected an integer >= 1")
    _check(
        not m.tie_embeddings or m.name == "lm",
        f"model.tie_embeddings=true is not valid for model.name={m.name!r}: only an lm predicts its own tokens",
    )
    _check(
        m.init != "normal" or m.name in ("transformer", "lm"),
        f"model.init='normal' is not valid for model.name={m.name!r}: Nanda et al.'s initialization is for transformers (expected torch or uniform)",
    )
    check_legacy_model(m.name)
    hints = typing.get_type_hints(ModelConfig)
    for name in ("name", "norm", "init"):  # Literal fields a Python caller may have set to anything
        value = getattr(m, name)
        _check(value in typing.get_args(hints[name]), f"model.{name}={value!r} is not valid: expected {_allowed(hints[name])}")
    for name in ("mlp_bias", "tie_embeddings"):
        value = getattr(m, name)
        _check(isinstance(value, bool), f"model.{name}={value!r} is not valid: expected true or false")
    for name in ("d_model", "n_layers", "n_heads", "d_mlp", "width", "depth"):
        value = getattr(m, name)
        _check(value >= 1, f"model.{name}={value} is not valid: expected an integer >= 1")
    _check(
        m.name == "toy" or m.d_model % m.n_heads == 0,  # the toy model has no attention to split d_model into heads
        f"model.d_model={m.d_model} is not valid: must be divisible by model.n_heads={m.n_heads}",
    )
    _check(0 <= m.dropout < 1, f"model.dropout={m.dropout} is not valid: expected a number in [0, 1)")
    _check(m.init_scale > 0 and math.isfinite(m.init_scale), f"model.init_scale={m.init_scale} is not valid: expected a number > 0")
    _check(o.lr > 0 and math.isfinite(o.lr), f"optim.lr={o.lr} is not valid: expected a number > 0")
    _check(
        o.embed_lr >= 0 and math.isfinite(o.embed_lr),
        f"optim.embed_lr={o.embed_lr} is not valid: expected a number >= 0 (0 = same as optim.lr)",
    )
    _check(
        o.embed_lr == 0 or t.name in ("binop", "addition"),
        f"optim.embed_lr={o.embed_lr} is not valid for task.name={t.name!r}: only token tasks (binop, addition) have an embedding; use 0",
    )
    _check(0 <= o.beta1 < 1, f"optim.beta1={o.beta1} is not valid: expected a number in [0, 1)")
    _check(0 <= o.beta2 < 1, f"optim.beta2={o.beta2} is not valid: expected a number in [0, 1)")
    _check(o.weight_decay >= 0, f"optim.weight_decay={o.weight_decay} is not valid: expected a number >= 0")
    _check(o.warmup_steps >= 0, f"optim.warmup_steps={o.warmup_steps} is not valid: expected an integer >= 0")
    _check(
        o.decay_steps == 0 or o.decay_steps > o.warmup_steps,
        f"optim.decay_steps={o.decay_steps} is not valid: expected 0 (no decay) or an integer > optim.warmup_steps={o.warmup_steps}",
    )
    _check(o.grad_clip >= 0 and math.isfinite(o.grad_clip), f"optim.grad_clip={o.grad_clip} is not valid: expected a number >= 0 (0 = off)")
    _check(o.batch_size >= 0, f"optim.batch_size={o.batch_size} is not valid: expected an integer >= 0 (0 = full batch)")
    _check(0 <= o.grokfast_alpha < 1, f"optim.grokfast_alpha={o.grokfast_alpha} is not valid: expected a number in [0, 1)")
    _check(
        o.grokfast_lamb >= 0 and math.isfinite(o.grokfast_lamb),
        f"optim.grokfast_lamb={o.grokfast_lamb} is not valid: expected a number >= 0",
    )
    _check(o.grokfast_window >= 1, f"optim.grokfast_window={o.grokfast_window} is not valid: expected an integer >= 1")
    _check(o.grad_noise >= 0 and math.isfinite(o.grad_noise), f"optim.grad_noise={o.grad_noise} is not valid: expected a number >= 0")
    _check(
        o.norm_constraint >= 0 and math.isfinite(o.norm_constraint),
        f"optim.norm_constraint={o.norm_constraint} is not valid: expected a number >= 0 (a factor of the initial norm; 0 = off)",
    )
    _check(config.steps >= 1, f"steps={config.steps} is not valid: expected an integer >= 1")
    _check(config.seed >= 0, f"seed={config.seed} is not valid: expected an integer >= 0")
    _check(config.split_seed >= 0, f"split_seed={config.split_seed} is not valid: expected an integer >= 0")
    _check(config.eval_every >= 1, f"eval_every={config.eval_every} is not valid: expected an integer >= 1")
    _check(config.eval_train_size >= 0, f"eval_train_size={config.eval_train_size} is not valid: expected an integer >= 0 (0: the whole training split)")
    _check(config.stop_patience >= 0, f"stop_patience={config.stop_patience} is not valid: expected an integer >= 0")
    _check(config.checkpoint_every >= 1, f"checkpoint_every={config.checkpoint_every} is not valid: expected an integer >= 1")
    _check(config.checkpoint_seconds > 0, f"checkpoint_seconds={config.checkpoint_seconds} is not valid: expected a number > 0")
    _check(config.analysis_every >= 1, f"analysis_every={config.analysis_every} is not valid: expected an integer >= 1")
    _check(config.threads >= 0, f"threads={config.threads} is not valid: expected an integer >= 0 (0 = torch default)")
    _check(
        config.device == "auto" or config.device in ("cpu", "cuda", "mps") or config.device.startswith("cuda:"),
        f"device={config.device!r} is not valid: expected auto, cpu, cuda, cuda:N or mps",
    )
    return config
