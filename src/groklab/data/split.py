"""Train / val / test splits drawn from their own seed (the test split is locked: never used for selection)."""

from __future__ import annotations

import torch

from groklab.errors import UserError


def split_sizes(n: int, train_frac: float, val_frac: float) -> tuple[int, int]:
    """(n_train, n_val) for fractions of n examples; the test split gets the rest and is never empty."""
    n_train, n_val = round(train_frac * n), round(val_frac * n)
    if n_train < 1 or n_val < 1 or n - n_train - n_val < 1:
        raise UserError(
            f"task.train_frac={train_frac:g}, task.val_frac={val_frac:g} leave an empty split of {n} examples: "
            "each of train, val and test needs at least one"
        )
    return n_train, n_val


def split_indices(n: int, n_train: int, n_val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random permutation of range(n) cut into (train, val, test) index tensors, sorted within each."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, val, test = perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :]
    return train.sort().values, val.sort().values, test.sort().values
