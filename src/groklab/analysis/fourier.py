"""Fourier analysis of Z_p tasks (Nanda et al. 2023, "Progress measures for grokking via mechanistic interpretability").

A network that groks modular addition represents each token by cos(w·k), sin(w·k) for a few *key
frequencies* w = 2πf/p and combines them with trig identities, so its logits are close to
Σ_f A_f cos(w_f (a + b − c)). These functions measure how far a model is along that road. They take
tensors and return numbers or tensors; they never read files.

Conventions: the real Fourier basis of Z_p has p orthonormal rows ordered
``[const, cos 1, sin 1, cos 2, sin 2, ..., ]`` (plus the Nyquist cosine ``cos p/2`` when p is even);
frequency f of that basis is the integer f in 0..p//2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

PEAK_FACTOR = 3.0
"""Key-frequency rule: a peak stands at least 3× above the median power of the frequencies that are not peaks."""
BREAK_FACTOR = 1.25
"""Key-frequency rule: at a natural break the weakest peak has ≥ 1.25× the power of the strongest non-peak."""
SPARSE_SHARE = 0.9
"""A spectrum is sparse (Nanda's cleanup reached) when its key frequencies hold ≥ 90% of the non-constant power."""


def fourier_basis(p: int, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """The real orthonormal Fourier basis of Z_p: (basis (p, p) with one basis vector per row, freq (p,) its integer frequency)."""
    k = torch.arange(p, dtype=dtype)
    rows, freqs = [torch.ones(p, dtype=dtype) / math.sqrt(p)], [0]
    for f in range(1, p // 2 + 1):
        angle = 2 * math.pi * f * k / p
        if 2 * f == p:  # Nyquist: only the cosine exists, (−1)^k
            rows.append(torch.cos(angle) / math.sqrt(p))
            freqs.append(f)
            continue
        rows += [torch.cos(angle) * math.sqrt(2 / p), torch.sin(angle) * math.sqrt(2 / p)]
        freqs += [f, f]
    return torch.stack(rows), torch.tensor(freqs)


def spectrum(values: Tensor) -> Tensor:
    """Power per frequency 0..p//2 of `values` (p, ...) along its first (token) axis: sum of squared Fourier coefficients.

    For an embedding matrix (p, d_model) this is the embedding's Fourier spectrum; by Parseval the entries
    sum to the squared Frobenius norm of `values`.
    """
    p = values.shape[0]
    basis, freqs = fourier_basis(p, torch.float64)
    coeffs = basis.to(values.device) @ values.reshape(p, -1).double()  # (p, rest)
    power = coeffs.pow(2).sum(1)
    return torch.zeros(p // 2 + 1, dtype=torch.float64, device=values.device).index_add_(0, freqs.to(values.device), power).cpu()


def neuron_spectrum(acts: Tensor) -> Tensor:
    """Power per frequency 0..p//2 of neuron activations over all pairs, acts (p, p, n_neurons) indexed [a, b, neuron].

    The 2-D Fourier transform over (a, b); a term's frequency is the larger of its two (a 2-D term
    cos(w a)·cos(w' b) counts toward max(f, f')), so a neuron that reads cos(w(a+b)) lands on f.
    """
    p = acts.shape[0]
    basis, freqs = fourier_basis(p, torch.float64)
    basis, freqs = basis.to(acts.device), freqs.to(acts.device)
    # One axis at a time: 2·p³·n multiply-adds instead of the p⁴·n of a three-operand einsum.
    coeffs = torch.einsum("jb,ibn->ijn", basis, torch.einsum("ia,abn->ibn", basis, acts.double()))  # (p, p, n)
    power = coeffs.pow(2).sum(-1)  # (p, p)
    pair_freq = torch.maximum(freqs[:, None], freqs[None, :]).flatten()
    return torch.zeros(p // 2 + 1, dtype=torch.float64, device=acts.device).index_add_(0, pair_freq, power.flatten()).cpu()


def key_frequencies(power: Tensor, factor: float = PEAK_FACTOR) -> list[int]:
    """The peaks of a spectrum: the non-constant frequencies a reader of its bar chart calls peaks, ascending.

    power: (p//2 + 1,) from `spectrum` or `neuron_spectrum`. The rule, on the log power of frequencies
    1..p//2 (frequency 0, the mean embedding, says nothing about which token it is):

    1. split the frequencies into an upper and a lower class at the natural break: the cut in the sorted log
       power that maximises the between-class variance (Otsu's rule), with at most half of them above it,
       since a Fourier circuit uses a few frequencies and the rest are its floor;
    2. the cut is a break only where the sorted spectrum jumps: the upper class's weakest frequency has at
       least BREAK_FACTOR × the power of the lower class's strongest (otherwise there are no peaks);
    3. the key frequencies are those of the upper class whose power is at least `factor` × the lower
       class's median power.

    A ratio to a fixed statistic of all frequencies fails both ways: peaks that are 8× the median before
    cleanup fall below a 10× bar, and a circuit with many peaks lifts the median itself. A random embedding
    has no natural break: each frequency sums 2·d_model squared Gaussians, so neighbours in the sorted
    spectrum lie within a few percent of each other and step 2 finds no jump.
    """
    nonconst = power[1:].double()
    n = len(nonconst)
    if n < 2 or float(nonconst.max()) <= 0:
        return []
    # Exactly-zero frequencies go far below the weakest positive one: they are floor, whatever else is.
    logs = nonconst.clamp_min(1e-12 * float(nonconst[nonconst > 0].min())).log()
    order = torch.argsort(logs, descending=True)
    ranked = logs[order]
    cuts = torch.arange(1, n // 2 + 1)
    upper_mean = ranked.cumsum(0)[cuts - 1] / cuts
    lower_mean = (ranked.sum() - ranked.cumsum(0)[cuts - 1]) / (n - cuts)
    between = cuts * (n - cuts) * (upper_mean - lower_mean).pow(2)  # Otsu's between-class variance, × n²
    k = int(cuts[int(torch.argmax(between))])
    if float(ranked[k - 1] - ranked[k]) < math.log(BREAK_FACTOR):
        return []
    floor = float(ranked[k:].median())
    return sorted(int(f) + 1 for f, x in zip(order[:k], ranked[:k], strict=True) if float(x) - floor >= math.log(factor))


def key_share(power: Tensor, keys: list[int]) -> float:
    """Share of the non-constant power held by the key frequencies `keys`: 1 when the spectrum is only its peaks."""
    total = float(power[1:].double().sum())
    return float(power.double()[keys].sum()) / total if total > 0 and keys else 0.0


def circuit_state(power: Tensor, keys: list[int]) -> str:
    """A spectrum in words: "sparse" (cleanup reached), "not yet sparse (cleanup not reached)" or "no peaks".

    Nanda et al.'s cleanup removes the memorizing weights, leaving the key frequencies with almost all the
    power; between circuit formation and cleanup the peaks are there but the floor still holds much of it.
    """
    if not keys:
        return "no peaks"
    return "sparse" if key_share(power, keys) >= SPARSE_SHARE else "not yet sparse (cleanup not reached)"


def gini(values: Tensor) -> float:
    """Gini coefficient of non-negative values: 0 when all equal, → 1 when one value holds everything."""
    x = torch.sort(values.double().flatten()).values
    n, total = len(x), float(x.sum())
    if n == 0 or total <= 0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float((2 * (ranks * x).sum()) / (n * total) - (n + 1) / n)


def spectrum_gini(power: Tensor) -> float:
    """Nanda's sparsity measure: the Gini of the per-frequency norms sqrt(power) over frequencies 1..p//2."""
    return gini(power[1:].clamp_min(0).sqrt())


def _sum_directions(p: int, sign: int, freqs: list[int], device: torch.device) -> Tensor:
    """Orthonormal directions cos(w(a + sign·b)), sin(w(a + sign·b)) over the (a, b) grid: (2·len(freqs), p²)."""
    a = torch.arange(p, dtype=torch.float64, device=device)
    s = (a[:, None] + sign * a[None, :]).flatten()  # (p²,) the integer a + sign·b
    dirs = []
    for f in freqs:
        angle = 2 * math.pi * f * s / p
        dirs += [torch.cos(angle), torch.sin(angle)]
    out = torch.stack(dirs) if dirs else torch.zeros(0, p * p, dtype=torch.float64, device=device)
    return out / out.norm(dim=1, keepdim=True).clamp_min(1e-12)


def restricted_excluded_logits(logits: Tensor, freqs: list[int], sign: int = 1) -> tuple[Tensor, Tensor]:
    """Logits kept to / stripped of the key frequencies' cos, sin(w(a + sign·b)) terms, as in Nanda et al.

    logits: (p, p, n_classes) for every pair (a, b). For each output class c the (a, b) map of logits is
    projected onto the 2·len(freqs) directions cos(w(a ± b)), sin(w(a ± b)) (which span
    cos(w(a ± b − c)) and sin(w(a ± b − c)) for any c). Restricted logits keep the projection plus each
    class's mean over (a, b); excluded logits are the original minus the projection. Returns both,
    shaped like `logits`, in float64.
    """
    p, n = logits.shape[0], logits.shape[-1]
    flat = logits.reshape(p * p, n).double()  # (p², n_classes)
    dirs = _sum_directions(p, sign, freqs, logits.device)  # (2K, p²)
    projection = dirs.T @ (dirs @ flat)  # (p², n_classes)
    restricted = projection + flat.mean(0, keepdim=True)
    excluded = flat - projection
    return restricted.reshape(logits.shape), excluded.reshape(logits.shape)


def logit_variance_explained(logits: Tensor, freqs: list[int], sign: int = 1) -> float:
    """Fraction of the logits' variance (over every (a, b, c), each pair centered over c) carried by Σ_f cos/sin(w_f(a ± b − c)).

    logits: (p, p, p) with a modular answer c in 0..p−1. Centering over c removes what softmax ignores.
    The directions cos(w(a ± b − c)), sin(...) are orthogonal over Z_p³ for distinct non-zero f < p/2.
    """
    p = logits.shape[0]
    centered = logits.double() - logits.double().mean(-1, keepdim=True)
    total = float(centered.pow(2).sum())
    if total <= 0 or not freqs:
        return 0.0
    a = torch.arange(p, device=logits.device)
    phase = (a[:, None, None] + sign * a[None, :, None] - a[None, None, :]) % p  # (p, p, p) integer angles
    explained = 0.0
    for f in freqs:
        angle = 2 * math.pi * f * torch.arange(p, dtype=torch.float64, device=logits.device) / p
        for table in (torch.cos(angle), torch.sin(angle)):
            direction = table[phase]
            norm2 = float(direction.pow(2).sum())
            if norm2 > 0:  # the Nyquist sine of an even p is identically zero
                explained += float((centered * direction).sum()) ** 2 / norm2
    return explained / total


def cross_entropy_on(logits: Tensor, labels: Tensor, idx: Tensor) -> float:
    """Mean cross-entropy of flattened pair logits (p², n_classes) at rows `idx` (e.g. the train split)."""
    flat = logits.reshape(-1, logits.shape[-1])
    return float(F.cross_entropy(flat[idx].double(), labels[idx]))
