"""Sparse parity (Merrill et al. 2023): n random bits, the label is the parity of the first k of them."""

from __future__ import annotations

import torch

from groklab.errors import UserError


def parity_data(n_bits: int, k_bits: int, n_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): x (n_samples, n_bits) float in {−1, +1}, y (n_samples,) long parity of bits 0..k−1.

    Examples are distinct when 2^n_bits is small enough to enumerate; for larger n a collision among
    random 40-bit strings is vanishingly rare, so the bits are drawn directly.
    """
    gen = torch.Generator().manual_seed(seed)
    if n_bits <= 20:
        if n_samples > 2**n_bits:
            raise UserError(f"task.n_samples={n_samples} is not valid: only 2^{n_bits} = {2**n_bits} distinct examples exist")
        codes = torch.randperm(2**n_bits, generator=gen)[:n_samples]
        bits = (codes[:, None] >> torch.arange(n_bits)) & 1
    else:
        bits = torch.randint(0, 2, (n_samples, n_bits), generator=gen)
    y = bits[:, :k_bits].sum(1) % 2
    return (2 * bits - 1).float(), y
