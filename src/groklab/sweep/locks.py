"""Lock files that let two sweep processes share one sweep dir: per-run locks and a lock around runs.parquet.

Locks are `flock(2)` locks on files under DIR/locks/ (``<run_id>.lock`` per run, ``runs.parquet.lock``
for the table). The kernel drops a flock lock the moment its holder process dies (kill -9, out of memory,
a crashed node's lease running out), so a lock never outlives its holder and needs no staleness guess;
the files themselves stay (deleting a lock file while another process waits on it would let two holders
in) and hold the last holder's ``host pid`` for messages only.

On one machine this is exact. On a cluster filesystem (NFS v4, Lustre, CephFS mounted with locking), Linux
turns flock into a POSIX byte-range lock that the server arbitrates between nodes; a dead node's locks are
freed when its lease expires (about 90 s on NFS), so a run held by a node that died is taken over on the
next sweep after that. On a filesystem without file locks the sweep stops with a one-line error (from the
runs.parquet lock, before any run starts) rather than run unprotected.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from groklab.errors import UserError

LOCK_DIR = "locks"
TABLE_LOCK = "runs.parquet.lock"


def run_lock_path(sweep_dir: Path, run_id: str) -> Path:
    return sweep_dir / LOCK_DIR / f"{run_id}.lock"


def holder_of(path: Path) -> str:
    """The `host pid` the last holder of the lock at `path` wrote into it ("unknown" if unreadable)."""
    try:
        return path.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `path` for the block if no live process holds it; yields whether it was taken.

    The holder writes `host pid` into the file so that the one that finds it taken can say who has it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        yield True
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (a file, or a directory opened read-only) for the block, waiting for it.

    NFS cannot lock a directory (it emulates flock with write locks, which need a file open for writing); there
    the block runs unlocked, which only matters for two sweeps creating the same new sweep dir at one instant.
    """
    is_dir = path.is_dir()
    if not is_dir:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY if is_dir else os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            if not is_dir:
                raise UserError(f"cannot lock {path}: {err.strerror}; the sweep dir must be on a filesystem with file locks") from None
        yield
    finally:
        os.close(fd)
