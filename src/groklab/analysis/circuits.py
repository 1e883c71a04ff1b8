"""The two circuits of sparse parity (Merrill et al. 2023): a sparse circuit of neurons that read only the k
relevant bits competes, by weight norm, with a dense circuit that memorizes through all n bits. Generalization
comes when the sparse circuit's norm overtakes the dense one's. The paper sizes the circuit by pruning:
`subnetwork_size` is the fewest largest-norm neurons that keep the network's training accuracy.
"""

from __future__ import annotations

import torch

from groklab.analysis.norms import neuron_norms

Tensor = torch.Tensor


def relevant_fraction(w_in: Tensor, k: int) -> Tensor:
    """Per neuron, the share of its squared input weight on the first `k` input bits: w_in (n_neurons, n_bits) -> (n_neurons,).

    At a random init it is about k / n; a neuron of the sparse circuit has most of its weight on the k bits.
    """
    sq = w_in.detach().double().pow(2)
    return sq[:, :k].sum(1) / sq.sum(1).clamp_min(1e-300)


def circuit_norms(w_in: Tensor, w_out: Tensor, b_in: Tensor | None, k: int, threshold: float = 0.5) -> dict[str, float]:
    """{sparse, dense, sparse_share, n_sparse}: L2 norms of the sparse and dense circuits of a one-hidden-layer MLP.

    w_in (n_neurons, n_bits) with the k relevant bits first, w_out (n_classes, n_neurons), b_in (n_neurons,) or
    None. A neuron is sparse when more than `threshold` of its squared input weight is on the relevant bits; each
    circuit's norm is the L2 norm of its neurons' norms (input row, bias and output column, as in norms.neuron_norms).
    sparse_share is the sparse circuit's share of the total squared norm.
    """
    per_neuron = neuron_norms(w_in, w_out, b_in).pow(2)  # (n_neurons,)
    sparse = relevant_fraction(w_in, k) > threshold
    s, d = float(per_neuron[sparse].sum()), float(per_neuron[~sparse].sum())
    return {"sparse": s**0.5, "dense": d**0.5, "sparse_share": s / max(s + d, 1e-300), "n_sparse": float(sparse.sum())}


def subnetwork_size(neurons: Tensor, w_in: Tensor, out: torch.nn.Linear, y: Tensor) -> int:
    """The fewest neurons, taken in order of their input-weight norm, that alone give the network its accuracy on (x, y).

    neurons (n_samples, n_neurons): the hidden activations on x; w_in (n_neurons, n_inputs) the layer producing them;
    out reads them into logits. Keeping the k largest-norm neurons zeroes the others' activations (the output bias
    stays); the answer is the smallest k whose count of correct predictions equals the whole network's, as in
    Merrill et al.'s pruning search (they report 6-8 neurons of 1,000 after grokking).
    """
    order = w_in.detach().norm(dim=1).argsort(descending=True)
    # (n_samples, n_neurons, n_classes): each neuron's share of the logits, summed in norm order
    parts = neurons.detach().double()[:, order, None] * out.weight.detach().double().T[order][None]
    logits = parts.cumsum(1) + (0.0 if out.bias is None else out.bias.detach().double())
    correct = (logits.argmax(-1) == y[:, None]).sum(0)  # (n_neurons,): correct answers keeping the first k + 1
    return int(torch.nonzero(correct == correct[-1])[0]) + 1


__all__ = ["circuit_norms", "relevant_fraction", "subnetwork_size"]
