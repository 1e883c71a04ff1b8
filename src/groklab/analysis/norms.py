"""Weight norms: the quantities Omnigrok (total norm), slingshot (last-layer norm) and the sparse-parity
norm competition (per-neuron norm, Merrill et al. 2023) track."""

from __future__ import annotations

import math

import torch
from torch import nn

Tensor = torch.Tensor


def parameter_norms(named: dict[str, Tensor]) -> dict[str, float]:
    """L2 norm of each named parameter tensor (e.g. ``dict(model.named_parameters())``)."""
    return {name: float(t.detach().double().norm()) for name, t in named.items()}


def total_norm(per_parameter: dict[str, float]) -> float:
    """L2 norm of all parameters together, from their separate norms."""
    return math.sqrt(sum(v * v for v in per_parameter.values()))


def neuron_norms(w_in: Tensor, w_out: Tensor, b_in: Tensor | None = None) -> Tensor:
    """Per hidden neuron, the L2 norm of everything it owns: its input row, its bias and its output column.

    w_in: (n_neurons, d_in) weight of the layer producing the neurons; w_out: (d_out, n_neurons) weight of
    the layer reading them; b_in: (n_neurons,) or None. Returns (n_neurons,). A sparse circuit shows as a
    few neurons with norms far above the rest.
    """
    sq = w_in.detach().double().pow(2).sum(1) + w_out.detach().double().pow(2).sum(0)
    if b_in is not None:
        sq = sq + b_in.detach().double().pow(2)
    return sq.sqrt()


def model_norms(model: nn.Module) -> dict[str, object]:
    """{total, per_layer {parameter name: norm}, last_layer, per_neuron [norm of each last-hidden-layer neuron]}."""
    per_layer = parameter_norms(dict(model.named_parameters()))
    w_in, w_out = model.neuron_layers()  # type: ignore[operator]
    return {
        "total": total_norm(per_layer),
        "per_layer": per_layer,
        "last_layer": float(model.readout().weight.detach().double().norm()),  # type: ignore[operator]
        "per_neuron": neuron_norms(w_in.weight, w_out.weight, w_in.bias).tolist(),
    }
