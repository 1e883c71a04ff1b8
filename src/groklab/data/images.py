"""Small image classification: scikit-learn's 8×8 digits (offline) and MNIST read from standard IDX files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from groklab.errors import UserError

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
MNIST_FILES = [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
]


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (plain or .gz): magic 0x0000TTDD (T = dtype code, D = number of dims), big-endian dims, data."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file: its magic number is wrong")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated: its header promises {ndim} dimensions")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    count = int(np.prod(dims))
    if len(raw) - 4 - 4 * ndim != count * dtype.itemsize:
        raise UserError(f"{path} is truncated: its header promises {dims} values")
    return np.frombuffer(raw, dtype=dtype, count=count, offset=4 + 4 * ndim).reshape(dims)


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def mnist_data(data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All MNIST images found in data_dir (train and/or t10k pairs) as (x (N, 784) float in [0, 1], y (N,) long)."""
    directory = Path(data_dir).expanduser()
    if not directory.is_dir():
        raise UserError(f"task.data_dir={data_dir!r} is not a directory holding MNIST IDX files")
    xs, ys = [], []
    for image_stem, label_stem in MNIST_FILES:
        images, labels = _find(directory, image_stem), _find(directory, label_stem)
        if images and labels:
            xs.append(read_idx(images).reshape(-1, 28 * 28).astype(np.float32) / 255.0)
            ys.append(read_idx(labels).astype(np.int64))
            if len(xs[-1]) != len(ys[-1]):
                raise UserError(f"{images} holds {len(xs[-1])} images but {labels} holds {len(ys[-1])} labels")
    if not xs:
        raise UserError(
            f"task.data_dir={data_dir!r} holds no MNIST pair (train-images-idx3-ubyte + train-labels-idx1-ubyte, optionally .gz)"
        )
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))


def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits as (x (1797, 64) float in [0, 1], y (1797,) long)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target, dtype=torch.long)
