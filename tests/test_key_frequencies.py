"""The key-frequency rule on constructed spectra: the peaks a reader of the bar chart sees, and nothing in noise."""

from __future__ import annotations

import pytest
import torch

from groklab.analysis import fourier

N_FREQ = 48  # frequencies 1..p//2 for p = 97


def constructed(peaks: dict[int, float], seed: int = 0, dof: int = 64) -> torch.Tensor:
    """A spectrum (p//2 + 1,): a noise floor of median ≈ 1 (chi-square with `dof` degrees, scaled), the given peak powers, a big constant term."""
    gen = torch.Generator().manual_seed(seed)
    floor = torch.randn(N_FREQ, dof, generator=gen, dtype=torch.float64).pow(2).mean(1)
    power = torch.cat([torch.tensor([50.0], dtype=torch.float64), floor])
    for f, height in peaks.items():
        power[f] = height
    return power


def test_one_peak() -> None:
    power = constructed({17: 40.0})
    keys = fourier.key_frequencies(power)
    assert keys == [17]
    assert fourier.circuit_state(power, keys) == "not yet sparse (cleanup not reached)"  # 40 of ~87: the floor still holds half


def test_six_peaks_after_cleanup_are_sparse() -> None:
    peaks = {f: 500.0 for f in (4, 9, 20, 31, 38, 47)}
    power = constructed(peaks)
    keys = fourier.key_frequencies(power)
    assert keys == sorted(peaks)
    assert fourier.key_share(power, keys) > 0.98
    assert fourier.circuit_state(power, keys) == "sparse"


def test_peaks_eight_times_the_median_are_found() -> None:
    # The case the old 10×-median bar missed: ten peaks at 8× the floor, before cleanup.
    peaks = {f: 8.0 for f in (2, 6, 11, 18, 23, 30, 33, 36, 44, 45)}
    power = constructed(peaks)
    keys = fourier.key_frequencies(power)
    assert keys == sorted(peaks)
    assert fourier.circuit_state(power, keys) == "not yet sparse (cleanup not reached)"


def test_peaks_of_unequal_heights_all_count() -> None:
    peaks = {3: 200.0, 14: 60.0, 25: 9.0}
    assert fourier.key_frequencies(constructed(peaks)) == [3, 14, 25]


@pytest.mark.parametrize("seed", range(20))
def test_flat_noise_has_no_peaks(seed: int) -> None:
    power = constructed({}, seed=seed)
    keys = fourier.key_frequencies(power)
    assert keys == []
    assert fourier.circuit_state(power, keys) == "no peaks"


@pytest.mark.parametrize("d_model", [8, 128])
def test_random_embeddings_have_no_peaks(d_model: int) -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        assert fourier.key_frequencies(fourier.spectrum(torch.randn(97, d_model, generator=gen))) == []


def test_degenerate_spectra() -> None:
    assert fourier.key_frequencies(torch.zeros(N_FREQ + 1)) == []
    assert fourier.key_frequencies(torch.tensor([1.0, 2.0])) == []
    exact = torch.zeros(N_FREQ + 1, dtype=torch.float64)
    exact[[5, 9]] = 1.0  # a noiseless two-frequency circuit: the floor is exactly zero
    assert fourier.key_frequencies(exact) == [5, 9]
    assert fourier.circuit_state(exact, [5, 9]) == "sparse"
