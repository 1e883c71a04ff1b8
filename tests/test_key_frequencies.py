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


def test_a_peak_exactly_at_the_factor_counts_and_just_below_it_does_not() -> None:
    """Step 3's bar is inclusive: PEAK_FACTOR × the floor's median is a peak, a hair less is not (the jump is there)."""
    power = torch.ones(N_FREQ + 1, dtype=torch.float64)
    power[7] = fourier.PEAK_FACTOR
    assert fourier.key_frequencies(power) == [7]
    power[7] = fourier.PEAK_FACTOR * (1 - 1e-9)
    assert fourier.key_frequencies(power) == []


def test_frequency_zero_is_never_a_key() -> None:
    """The constant term (the mean embedding) may hold nearly all the power; it is neither a peak nor part of the floor."""
    flat = constructed({})
    flat[0] = 1e9
    assert fourier.key_frequencies(flat) == []
    peak = constructed({12: 40.0})
    peak[0] = 1e9
    assert fourier.key_frequencies(peak) == [12]


@pytest.mark.parametrize("p", [8, 98])
def test_the_nyquist_frequency_of_an_even_p_is_found(p: int) -> None:
    """For even p, frequency p/2 is (-1)^k: a cosine without a sine, the last entry of the spectrum."""
    gen = torch.Generator().manual_seed(0)
    k = torch.arange(p, dtype=torch.float64)
    e = 0.01 * torch.randn(p, 16, generator=gen, dtype=torch.float64) + torch.cos(torch.pi * k)[:, None] * torch.randn(
        16, generator=gen, dtype=torch.float64
    )
    power = fourier.spectrum(e)
    assert len(power) == p // 2 + 1
    assert fourier.key_frequencies(power) == [p // 2]


@pytest.mark.parametrize("p", [2, 3])
def test_p_two_or_three_has_one_frequency_and_no_peaks(p: int) -> None:
    """With a single non-constant frequency there is nothing to stand above: no keys, whatever it holds."""
    power = fourier.spectrum(torch.randn(p, 8, generator=torch.Generator().manual_seed(p), dtype=torch.float64))
    assert power.shape == (2,)
    assert fourier.key_frequencies(power) == []


@pytest.mark.parametrize(("n_high", "keys"), [(24, list(range(1, 25))), (25, []), (40, [])])
def test_more_than_half_of_the_frequencies_high_is_dense_not_peaks(n_high: int, keys: list[int]) -> None:
    """Each high frequency 100x a noise floor, with its own noise: at most half of the frequencies can stand above the
    break (a circuit uses a few), so half of them are peaks and one more is a dense spectrum without any."""
    high = 100 * constructed({}, seed=1)
    power = constructed({f: float(high[f]) for f in range(1, n_high + 1)})
    assert fourier.key_frequencies(power) == keys
