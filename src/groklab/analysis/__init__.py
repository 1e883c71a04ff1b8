"""Mechanism measurements for a run: Fourier circuits, norms, RQI, sharpness, embeddings and phases.

The submodules hold pure functions (tensors in, numbers out). This module glues them to models and runs:
``analyze_run(run)`` measures one checkpoint of a run directory, ``training_metrics`` produces the extra
metric keys that ``--analysis fourier,norms,rqi,sharpness`` logs during training (`groklab analyze` prints
``analyze_run``'s result).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from groklab.analysis import circuits, collapse, embeddings, fourier, norms, phases, rqi, sharpness, tree
from groklab.config import Config, parse_names
from groklab.data import Dataset, build_task
from groklab.data.permutations import S5_OPS
from groklab.losses import LossFn, make_loss, softmax_collapse_fraction
from groklab.models import load_model

Tensor = torch.Tensor

ANALYSES = ("fourier", "norms", "rqi", "sharpness", "collapse", "circuit", "tree")
"""Measurements `--analysis` can log during training."""
LINEAR_OPS = {"x+y": 1, "x-y": -1}
"""Ops c = a + s·b whose Fourier circuit uses cos(w(a + s·b − c)): restricted/excluded loss and RQI apply."""


def parse_analysis(spec: str) -> list[str]:
    """`"fourier,norms"` -> ["fourier", "norms"], or a UserError naming the value."""
    return parse_names("analysis", spec, ANALYSES)


def is_modular(config: Config) -> bool:
    return config.task.name == "binop" and config.task.op not in S5_OPS


def input_embedding(model: nn.Module, p: int) -> Tensor:
    """The operand-token embedding rows 0..p−1: (p, d_model)."""
    return model.embedding()[:p].detach()  # type: ignore[operator]


@torch.no_grad()
def all_pair_logits(model: nn.Module, data: Dataset, p: int) -> Tensor:
    """Logits of every pair (a, b) of a modular op with all p² pairs: (p, p, n_classes), [a, b, c]."""
    return model(data.x).reshape(p, p, -1)  # data.x holds every pair in row-major (a, b) order


@torch.no_grad()
def neuron_activations(model: nn.Module, data: Dataset, p: int) -> Tensor:
    """Activations of the MLP neurons that feed the output, for every pair (a, b): (p, p, n_neurons), [a, b, neuron].

    Nanda et al.'s neurons: the last transformer block's MLP at the answer position, or the MLP's last hidden layer.
    """
    return model.neurons(data.x).reshape(p, p, -1)  # type: ignore[operator]  # data.x: every pair in row-major (a, b) order


def neuron_fourier(model: nn.Module, data: Dataset, p: int) -> dict[str, Any]:
    """{spectrum, key_frequencies, key_share, state, gini} of the neuron activations over all (a, b), by the embedding's rules."""
    return spectrum_summary(fourier.neuron_spectrum(neuron_activations(model, data, p)))


def spectrum_summary(power: Tensor) -> dict[str, Any]:
    """{spectrum, key_frequencies, key_share, state, gini} of one Fourier spectrum (p//2 + 1,)."""
    keys = fourier.key_frequencies(power)
    return {
        "spectrum": power.tolist(),
        "key_frequencies": keys,
        "key_share": fourier.key_share(power, keys),
        "state": fourier.circuit_state(power, keys),
        "gini": fourier.spectrum_gini(power),
    }


def fourier_measures(model: nn.Module, data: Dataset, config: Config, with_variance: bool = True) -> dict[str, Any]:
    """The `fourier` dict of analyze_run for a modular task (loss fields None for ops that are not a ± b)."""
    p = config.task.p
    out: dict[str, Any] = spectrum_summary(fourier.spectrum(input_embedding(model, p)))
    out.update(restricted_loss=None, excluded_loss=None, full_loss=None, logit_variance_explained=None)
    keys = out["key_frequencies"]
    sign = LINEAR_OPS.get(config.task.op)
    if sign is None:
        return out
    logits = all_pair_logits(model, data, p)
    restricted, excluded = fourier.restricted_excluded_logits(logits, keys, sign)
    y, train = data.y, data.train
    out["full_loss"] = fourier.cross_entropy_on(logits, y, train)
    out["restricted_loss"] = fourier.cross_entropy_on(restricted, y, train)
    out["excluded_loss"] = fourier.cross_entropy_on(excluded, y, train)
    if with_variance:
        out["logit_variance_explained"] = fourier.logit_variance_explained(logits, keys, sign)
    return out


SHARPNESS_EXAMPLES = 1024
"""Sharpness is measured on at most this many training examples (a fixed random subset): seconds, not minutes."""


def train_loss_closure(model: nn.Module, data: Dataset, loss_fn: LossFn, max_examples: int = SHARPNESS_EXAMPLES):  # noqa: ANN201
    """A closure returning the loss of `model` on the train split, or on a fixed subset of `max_examples` of it."""
    idx = data.train
    if len(idx) > max_examples:
        pick = torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))[:max_examples]
        idx = idx[pick.to(idx.device)]
    x, y, mask = data.x[idx], data.y[idx], None if data.mask is None else data.mask[idx]
    return lambda: loss_fn(model(x), y, mask)


def sharpness_measures(model: nn.Module, data: Dataset, loss_fn: LossFn, iters: int = 20) -> dict[str, float]:
    """{top_eigenvalue, eps_sharpness} of the train loss (on up to SHARPNESS_EXAMPLES examples)."""
    params = [q for q in model.parameters() if q.requires_grad]
    closure = train_loss_closure(model, data, loss_fn)
    with torch.enable_grad():
        return {
            "top_eigenvalue": sharpness.top_hessian_eigenvalue(closure, params, iters=iters, tol=1e-3),
            "eps_sharpness": sharpness.eps_sharpness(closure, params),
        }


TREE_SENTENCES = 32
"""Tree-structuredness is averaged over the first this many val (in-distribution) sentences: a fixed sample."""
SENTENCE_ENDS = (".", "</s>", "<pad>")
"""A sequence task's input sentence runs from after `<s>` to the first of these tokens."""


def tree_measure(model: nn.Module, data: Dataset) -> float:
    """Mean tree-structuredness (analysis/tree.py) of a sequence task's model over TREE_SENTENCES val sentences."""
    x = data.x[data.val[:TREE_SENTENCES]]  # (n, seq)
    ends = torch.tensor([data.vocab.index(t) for t in SENTENCE_ENDS if t in data.vocab], device=x.device)
    stop = torch.isin(x, ends)
    stop[:, 0] = False  # position 0 is <s>
    end = torch.where(stop.any(1), stop.int().argmax(1), x.shape[1])
    return tree.tree_structuredness(model, x, [(1, int(e)) for e in end])


def _rqi(model: nn.Module, config: Config) -> float | None:
    if config.task.name != "addition" and (not is_modular(config) or config.task.op != "x+y"):
        return None
    return rqi.rqi(input_embedding(model, config.task.p))


def _effective_loss(model: nn.Module, data: Dataset, config: Config) -> float | None:
    """Liu et al.'s ℓ_eff on the training pairs of the addition task (None for other tasks)."""
    if config.task.name != "addition":
        return None
    return rqi.effective_loss(input_embedding(model, config.task.p), data.x[data.train][:, list(data.operand_positions)])


def training_metrics(model: nn.Module, data: Dataset, config: Config, loss_fn: LossFn) -> dict[str, float]:
    """Extra metric keys for one evaluation row: the measurements named by `config.analysis`.

    Keys: fourier/gini, fourier/n_key, fourier/restricted_loss, fourier/excluded_loss (modular tasks);
    norm/layer/<parameter>, norm/last_layer; rqi (x+y, addition), effective_loss (addition: Liu et al.'s ℓ_eff); sharpness/top_eig, sharpness/eps; collapse/train (the
    fraction of training samples whose float32 softmax cross-entropy gradient is exactly zero, Prieto et al.),
    collapse/train_own_loss (the fraction whose correct-class gradient under the run's own loss and precision is
    exactly zero: the first stage of collapse, for StableMax and float64 runs too);
    circuit/sparse, circuit/dense, circuit/sparse_share, circuit/n_sparse (sparse parity with a one-hidden-layer
    MLP: the norms of the neurons reading mostly the k relevant bits vs the rest, Merrill et al.), circuit/n_subnetwork
    (the fewest largest-norm neurons that keep the training accuracy: the paper's pruned circuit size); tree/score (sequence
    tasks: tree-structuredness, Murty et al.). The model is put
    in eval mode for the measurement and restored.
    """
    names = parse_analysis(config.analysis)
    was_training = model.training
    model.eval()
    out: dict[str, float] = {}
    try:
        if "fourier" in names and is_modular(config):
            f = fourier_measures(model, data, config, with_variance=False)
            out["fourier/gini"], out["fourier/n_key"] = f["gini"], len(f["key_frequencies"])
            if f["full_loss"] is not None:
                out["fourier/restricted_loss"], out["fourier/excluded_loss"] = f["restricted_loss"], f["excluded_loss"]
        if "norms" in names:
            n = norms.model_norms(model)
            out.update({f"norm/layer/{k}": v for k, v in n["per_layer"].items()})  # type: ignore[union-attr]
            out["norm/last_layer"] = n["last_layer"]  # type: ignore[assignment]
        if "rqi" in names and (value := _rqi(model, config)) is not None:
            out["rqi"] = value
        if "rqi" in names and (value := _effective_loss(model, data, config)) is not None:
            out["effective_loss"] = value
        if "sharpness" in names:
            s = sharpness_measures(model, data, loss_fn, iters=10)
            out["sharpness/top_eig"], out["sharpness/eps"] = s["top_eigenvalue"], s["eps_sharpness"]
        if "collapse" in names:
            with torch.no_grad():
                logits = model(data.x[data.train])  # (n_train, n_classes)
            out["collapse/train"] = softmax_collapse_fraction(logits, data.y[data.train])
            out["collapse/train_own_loss"] = collapse.correct_gradient_zero_fraction(loss_fn, logits, data.y[data.train])
        if "circuit" in names and config.task.name == "parity" and config.model.depth == 1:  # the neurons read the bits
            w_in, w_out = model.neuron_layers()  # type: ignore[operator]
            c = circuits.circuit_norms(w_in.weight, w_out.weight, w_in.bias, config.task.k_bits)
            with torch.no_grad():
                neurons = model.neurons(data.x[data.train])  # type: ignore[operator]
            c["n_subnetwork"] = float(circuits.subnetwork_size(neurons, w_in.weight, w_out, data.y[data.train]))
            out.update({f"circuit/{k}": v for k, v in c.items()})
        if "tree" in names and data.mask is not None:  # sequence tasks: the model reads whole sentences
            out["tree/score"] = tree_measure(model, data)
    finally:
        model.train(was_training)
    return out


def analyze_run(run: Any, step: int | None = None, sharpness: bool = True) -> dict[str, Any]:
    """Every measurement of one model checkpoint of `run` (from groklab.runio.load_run), as a JSON-able dict.

    step picks the weights-only checkpoint (default: the newest). Keys: step, fourier, norms, rqi,
    sharpness, phase, phase_boundaries, embeddings, neuron_fourier, tree_structuredness (sequence tasks; see the README's Analysis section).
    """
    config: Config = run.config
    if step is None:
        from groklab.runio import checkpoint_steps

        available = checkpoint_steps(run.path / "checkpoints", "model")
        step = available[-1] if available else None
    model = load_model(run, step)
    model.eval()
    data = build_task(config.task, config.split_seed)
    modular = is_modular(config)
    rows = run.metrics
    col = lambda key: [r.get(key) for r in rows]  # noqa: E731
    steps = col("step")
    result: dict[str, Any] = {
        "step": step,
        "fourier": fourier_measures(model, data, config) if modular else None,
        "norms": norms.model_norms(model),
        "rqi": _rqi(model, config),
        "effective_loss": _effective_loss(model, data, config),
        "sharpness": sharpness_measures(model, data, make_loss(config.loss, config.loss_dtype)) if sharpness else None,
        "phase": phases.classify_phase(steps, col("train/acc"), col("val/acc")),
        "phase_boundaries": phases.phase_boundaries(
            steps,
            col("train/acc"),
            col("val/acc"),
            col("val/loss"),
            col("fourier/gini") if any("fourier/gini" in r for r in rows) else None,
        ),
        "embeddings": embeddings.embedding_summary(input_embedding(model, config.task.p)) if modular else None,
        # Ops defined on every pair only (x/y skips y = 0): the 2-D transform needs the full (a, b) grid.
        "neuron_fourier": neuron_fourier(model, data, config.task.p) if modular and len(data.x) == config.task.p**2 else None,
        "tree_structuredness": tree_measure(model, data) if data.mask is not None else None,
    }
    return _jsonable(result)


def _jsonable(obj: Any) -> Any:
    """Non-finite floats become None so the result is strict JSON."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


__all__ = ["ANALYSES", "analyze_run", "parse_analysis", "training_metrics"]
