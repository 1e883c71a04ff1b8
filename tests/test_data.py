"""Tasks: every op table against an independent pure-Python computation, splits, parity, images."""

from __future__ import annotations

import gzip
import itertools
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from groklab.config import TaskConfig, UserError
from groklab.data import build_task, op_table, register_op
from groklab.data.images import mnist_data, read_idx

# ---------------------------------------------------------------------------------------------
# Modular ops: the reference is written from the paper's definitions with plain ints.


def _ref_div(x: int, y: int, p: int) -> int:
    return x * pow(y, -1, p) % p


MOD_REFERENCE = {
    "x+y": lambda x, y, p: (x + y) % p,
    "x-y": lambda x, y, p: (x - y) % p,
    "x*y": lambda x, y, p: (x * y) % p,
    "x/y": _ref_div,
    "x/y_or_x-y": lambda x, y, p: _ref_div(x, y, p) if y % 2 == 1 else (x - y) % p,
    "x^2+y^2": lambda x, y, p: (x**2 + y**2) % p,
    "x^2+xy+y^2": lambda x, y, p: (x**2 + x * y + y**2) % p,
    "x^2+xy+y^2+x": lambda x, y, p: (x**2 + x * y + y**2 + x) % p,
    "x^3+xy": lambda x, y, p: (x**3 + x * y) % p,
    "x^3+xy^2+y": lambda x, y, p: (x**3 + x * y**2 + y) % p,
}
DIVIDING = {"x/y", "x/y_or_x-y"}


def reference_table(op: str, p: int) -> list[tuple[int, int, int]]:
    """Every valid (a, b, c) in row-major order of (a, b), from the reference definition."""
    rows = []
    for a in range(p):
        for b in range(p):
            if op == "x/y" and b == 0:
                continue
            rows.append((a, b, MOD_REFERENCE[op](a, b, p)))
    return rows


def as_rows(table: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> list[tuple[int, int, int]]:
    a, b, c = table
    assert a.dtype == b.dtype == c.dtype == torch.long
    assert a.dim() == b.dim() == c.dim() == 1
    return list(zip(a.tolist(), b.tolist(), c.tolist(), strict=True))


@pytest.mark.parametrize("p", [2, 3, 7, 13, 97])
@pytest.mark.parametrize("op", list(MOD_REFERENCE))
def test_modular_op_table_matches_reference(op: str, p: int) -> None:
    assert as_rows(op_table(op, p)) == reference_table(op, p)


@pytest.mark.parametrize("p", [4, 6, 9, 15])
@pytest.mark.parametrize("op", [op for op in MOD_REFERENCE if op not in DIVIDING])
def test_non_dividing_ops_accept_composite_moduli(op: str, p: int) -> None:
    assert as_rows(op_table(op, p)) == reference_table(op, p)


@pytest.mark.parametrize("p", [2, 3, 7, 13, 97])
def test_pair_counts(p: int) -> None:
    assert len(op_table("x+y", p)[0]) == p * p
    assert len(op_table("x/y", p)[0]) == p * (p - 1)
    assert len(op_table("x/y_or_x-y", p)[0]) == p * p


@pytest.mark.parametrize("op", sorted(DIVIDING))
@pytest.mark.parametrize("p", [4, 9, 15, 100])
def test_dividing_ops_reject_composite_p(op: str, p: int) -> None:
    with pytest.raises(UserError, match=rf"task\.p={p}.*prime"):
        op_table(op, p)


@pytest.mark.parametrize("p", [1, 0, -3])
def test_p_below_two_is_rejected(p: int) -> None:
    with pytest.raises(UserError, match=rf"task\.p={p}"):
        op_table("x+y", p)


def test_unknown_op_is_rejected() -> None:
    with pytest.raises(UserError, match=r"task\.op='x\*\*y'"):
        op_table("x**y", 7)


# ---------------------------------------------------------------------------------------------
# S5: elements are indices into itertools.permutations(range(5)); (x∘y)[i] = x[y[i]].

PERMS = list(itertools.permutations(range(5)))
INDEX = {perm: i for i, perm in enumerate(PERMS)}


def compose(x: tuple[int, ...], y: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x[y[i]] for i in range(5))


def invert(x: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * 5
    for i, xi in enumerate(x):
        inv[xi] = i
    return tuple(inv)


S5_REFERENCE = {
    "s5:xy": lambda x, y: compose(x, y),
    "s5:xyx^-1": lambda x, y: compose(compose(x, y), invert(x)),
    "s5:xyx": lambda x, y: compose(compose(x, y), x),
}


@pytest.mark.parametrize("op", list(S5_REFERENCE))
def test_s5_op_table_matches_reference(op: str) -> None:
    expected = [(i, j, INDEX[S5_REFERENCE[op](x, y)]) for i, x in enumerate(PERMS) for j, y in enumerate(PERMS)]
    assert as_rows(op_table(op, 97)) == expected
    assert as_rows(op_table(op, 2)) == expected  # p is ignored for S5


def test_s5_composition_order_is_apply_y_first() -> None:
    # A concrete, hand-checkable case: x swaps 0<->1, y swaps 1<->2; (x∘y)[i] = x[y[i]] = (1, 2, 0, 3, 4).
    x, y = (1, 0, 2, 3, 4), (0, 2, 1, 3, 4)
    a, b, c = op_table("s5:xy", 97)
    row = INDEX[x] * 120 + INDEX[y]
    assert (int(a[row]), int(b[row])) == (INDEX[x], INDEX[y])
    assert PERMS[int(c[row])] == (1, 2, 0, 3, 4)


# ---------------------------------------------------------------------------------------------
# User ops.


def test_register_op_user_function() -> None:
    register_op("test:2x+3y", lambda x, y, p: (2 * x + 3 * y) % p)
    for p in (2, 5, 12):
        expected = [(a, b, (2 * a + 3 * b) % p) for a in range(p) for b in range(p)]
        assert as_rows(op_table("test:2x+3y", p)) == expected
    ds = build_task(TaskConfig(op="test:2x+3y", p=11), split_seed=0)
    assert ds.x.shape == (121, 4) and ds.n_classes == 11


def test_register_op_flags_and_bad_output() -> None:
    register_op(
        "test:x/y+1", lambda x, y, p: (x * torch.tensor([pow(int(v), -1, p) if v else 0 for v in y]) + 1) % p, divides=True, nonzero_y=True
    )
    assert as_rows(op_table("test:x/y+1", 5)) == [(a, b, (a * pow(b, -1, 5) + 1) % 5) for a in range(5) for b in range(1, 5)]
    with pytest.raises(UserError, match="prime"):
        op_table("test:x/y+1", 6)
    register_op("test:out-of-range", lambda x, y, p: x + y)
    with pytest.raises(UserError, match="outside"):
        op_table("test:out-of-range", 5)
    with pytest.raises(UserError, match="built in"):
        register_op("x+y", lambda x, y, p: x)


# ---------------------------------------------------------------------------------------------
# Sequence format and splits.


def test_binop_sequences_are_a_op_b_eq() -> None:
    ds = build_task(TaskConfig(op="x-y", p=13), split_seed=0)
    a, b, c = op_table("x-y", 13)
    assert ds.x.shape == (169, 4) and ds.x.dtype == torch.long
    assert torch.equal(ds.x[:, 0], a) and torch.equal(ds.x[:, 2], b) and torch.equal(ds.y, c)
    assert set(ds.x[:, 1].tolist()) == {13} and set(ds.x[:, 3].tolist()) == {14}
    assert ds.vocab_size == 15 and ds.n_classes == 13 and ds.operand_positions == (0, 2)
    s5 = build_task(TaskConfig(op="s5:xyx"), split_seed=0)
    assert s5.x.shape == (14400, 4) and s5.vocab_size == 122 and s5.n_classes == 120


@pytest.mark.parametrize(("p", "train_frac", "val_frac"), [(97, 0.5, 0.25), (13, 0.3, 0.3), (7, 0.1, 0.8)])
def test_split_sizes_disjoint_and_cover(p: int, train_frac: float, val_frac: float) -> None:
    ds = build_task(TaskConfig(op="x*y", p=p, train_frac=train_frac, val_frac=val_frac), split_seed=3)
    n = p * p
    assert len(ds.train) == round(train_frac * n) and len(ds.val) == round(val_frac * n)
    assert len(ds.train) + len(ds.val) + len(ds.test) == n
    train, val, test = set(ds.train.tolist()), set(ds.val.tolist()), set(ds.test.tolist())
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == set(range(n))


def test_split_is_deterministic_per_split_seed() -> None:
    task = TaskConfig(op="x+y", p=31)
    first, again, other = build_task(task, 5), build_task(task, 5), build_task(task, 6)
    for name in ("train", "val", "test"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert not torch.equal(first.train, other.train)


def test_model_seed_does_not_move_the_split() -> None:
    """The split depends on split_seed alone: training with another `seed` sees the same train/val/test."""
    from groklab.config import Config
    from groklab.models import build_model

    task = TaskConfig(op="x+y", p=31)
    ds = build_task(task, split_seed=2)
    build_model(Config().model, ds, seed=99)  # seeding the model's RNG must not affect a later split
    again = build_task(task, split_seed=2)
    assert torch.equal(ds.train, again.train) and torch.equal(ds.test, again.test)
    # ...and the split_seed does not move the initialization.
    other_split = build_task(task, split_seed=7)
    assert not torch.equal(ds.train, other_split.train)
    a, b = build_model(Config().model, ds, seed=3).state_dict(), build_model(Config().model, other_split, seed=3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_empty_split_is_rejected() -> None:
    with pytest.raises(UserError, match="empty split"):
        build_task(TaskConfig(op="x+y", p=2, train_frac=0.1, val_frac=0.1), split_seed=0)


# ---------------------------------------------------------------------------------------------
# Sparse parity.


def test_parity_labels_and_shapes() -> None:
    ds = build_task(TaskConfig(name="parity", n_bits=12, k_bits=3, n_samples=500), split_seed=1)
    assert ds.x.shape == (500, 12) and ds.x.dtype == torch.float32
    assert set(ds.x.unique().tolist()) == {-1.0, 1.0}
    bits = (ds.x > 0).long()
    assert torch.equal(ds.y, bits[:, :3].sum(1) % 2)
    assert len({tuple(row) for row in bits.tolist()}) == 500  # distinct examples
    assert ds.n_classes == 2 and ds.vocab_size == 0
    assert 0.35 < ds.y.float().mean() < 0.65


def test_parity_large_n_labels() -> None:
    ds = build_task(TaskConfig(name="parity", n_bits=40, k_bits=5, n_samples=300), split_seed=0)
    bits = (ds.x > 0).long()
    assert ds.x.shape == (300, 40) and torch.equal(ds.y, bits[:, :5].sum(1) % 2)


def test_parity_too_many_samples() -> None:
    with pytest.raises(UserError, match="n_samples=100"):
        build_task(TaskConfig(name="parity", n_bits=6, k_bits=2, n_samples=100), split_seed=0)


# ---------------------------------------------------------------------------------------------
# Images.


def test_digits_shapes_and_split() -> None:
    ds = build_task(TaskConfig(name="digits", train_size=1000, val_frac=0.2), split_seed=0)
    assert ds.x.shape == (1797, 64) and ds.x.dtype == torch.float32
    assert float(ds.x.min()) == 0.0 and float(ds.x.max()) == 1.0
    assert ds.n_classes == 10 and ds.y.shape == (1797,)
    assert len(ds.train) == 1000 and len(ds.val) == round(0.2 * 1797) and len(ds.test) == 1797 - 1000 - 359
    assert not set(ds.train.tolist()) & set(ds.test.tolist())


def test_digits_train_size_too_large() -> None:
    with pytest.raises(UserError, match="train_size=1500"):
        build_task(TaskConfig(name="digits", train_size=1500, val_frac=0.2), split_seed=0)


def idx_bytes(array: np.ndarray, type_code: int) -> bytes:
    """An IDX file written independently of the reader: magic 0, 0, type, ndim; big-endian u32 dims; data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(directory: Path, n: int, gz: bool, stem: str = "train", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    for name, data in ((f"{stem}-images-idx3-ubyte", idx_bytes(images, 0x08)), (f"{stem}-labels-idx1-ubyte", idx_bytes(labels, 0x08))):
        (directory / (name + suffix)).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_reader(tmp_path: Path, gz: bool) -> None:
    images, labels = write_mnist(tmp_path, 30, gz)
    x, y = mnist_data(str(tmp_path))
    assert x.shape == (30, 784) and x.dtype == torch.float32 and y.dtype == torch.long
    assert np.allclose(x.numpy(), images.reshape(30, -1) / 255.0)
    assert np.array_equal(y.numpy(), labels)
    ds = build_task(TaskConfig(name="mnist", data_dir=str(tmp_path), train_size=10, val_frac=0.2), split_seed=0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 6, 14)


def test_mnist_reader_concatenates_train_and_test(tmp_path: Path) -> None:
    _, train_labels = write_mnist(tmp_path, 12, gz=False, stem="train", seed=1)
    _, test_labels = write_mnist(tmp_path, 5, gz=True, stem="t10k", seed=2)
    _, y = mnist_data(str(tmp_path))
    assert np.array_equal(y.numpy(), np.concatenate([train_labels, test_labels]))


def test_read_idx_other_dtypes(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(data, 0x0C))
    assert np.array_equal(read_idx(tmp_path / "a.idx"), data)
    floats = np.linspace(-1, 1, 6)
    (tmp_path / "b.idx.gz").write_bytes(gzip.compress(idx_bytes(floats, 0x0E)))
    assert np.array_equal(read_idx(tmp_path / "b.idx.gz"), floats)


def test_bad_idx_files(tmp_path: Path) -> None:
    bad_magic = tmp_path / "magic.idx"
    bad_magic.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(UserError, match="magic"):
        read_idx(bad_magic)
    unknown_type = tmp_path / "type.idx"
    unknown_type.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 3) + b"abc")
    with pytest.raises(UserError, match="magic"):
        read_idx(unknown_type)
    truncated = tmp_path / "short.idx"
    truncated.write_bytes(idx_bytes(np.zeros((4, 28, 28), np.uint8), 0x08)[:-10])
    with pytest.raises(UserError, match="truncated"):
        read_idx(truncated)
    short_header = tmp_path / "header.idx"
    short_header.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(UserError, match="truncated"):
        read_idx(short_header)
    empty = tmp_path / "empty.idx"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="magic"):
        read_idx(empty)


def test_mnist_missing_dir_and_mismatch(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a directory"):
        mnist_data(str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="no MNIST pair"):
        mnist_data(str(tmp_path))
    images, _ = write_mnist(tmp_path, 8, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(5, np.uint8), 0x08))
    with pytest.raises(UserError, match="8 images but"):
        mnist_data(str(tmp_path))
