"""What a sweep worker does with one run, the same on every backend: lock the run, set threads, train, report.

Test hook (documented, off unless set): ``GROKLAB_SWEEP_TEST_KILL=STEP:MARKER[:COUNT]`` in the environment of
the ``groklab sweep`` process makes a worker whose run logs a metric row at step >= STEP create the file
MARKER.<i> (holding the run dir) and kill its own process with SIGKILL, for i = 1 .. COUNT (default 1), each
time in a different run. Tests use it to prove that a worker dying mid-run is retried and resumes; the
driver reads the variable and hands it to the workers explicitly, so it works the same for the process
pool and for Ray.
"""

from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groklab.config import Config
from groklab.sweep.locks import holder_of, try_lock
from groklab.train import Hook, train

KILL_HOOK_ENV = "GROKLAB_SWEEP_TEST_KILL"


@dataclass(frozen=True)
class KillHook:
    step: int
    marker: str
    count: int = 1


def kill_hook_from_env() -> KillHook | None:
    value = os.environ.get(KILL_HOOK_ENV)
    if not value:
        return None
    step, _, rest = value.partition(":")
    marker, _, count = rest.partition(":")
    return KillHook(int(step), marker, int(count or 1))


class KillAt(Hook):
    """The training hook of KillHook: once the run logs a row at step >= hook.step, claim a free marker (each run is
    killed once at most, COUNT runs in all) and kill this worker process with SIGKILL."""

    def __init__(self, hook: KillHook, run_dir: str) -> None:
        self.hook, self.run_dir = hook, str(Path(run_dir))

    def logged(self, member: int, row: dict[str, Any]) -> None:
        if row["step"] < self.hook.step:
            return
        markers = [Path(f"{self.hook.marker}.{i}") for i in range(1, self.hook.count + 1)]
        if self.run_dir in {m.read_text() for m in markers if m.exists()}:
            return
        for marker in markers:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
            os.write(fd, self.run_dir.encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)


def run_attempt(config: Config, run_dir: str, lock: str, threads: int, hook: KillHook | None = None) -> tuple[str, Any]:
    """Train `config` into `run_dir` (resuming it if it holds this run): ("ok", summary) or ("failed", error line).

    The run is trained only while this process holds the lock file `lock` (see locks.py); if another live
    process holds it (a second sweep on the same dir), nothing is touched and the
    result is ("busy", "host pid" of the holder). A Python exception is returned, not raised, so a bad run
    never stops the others; only a dead process (which the backend retries) escapes.
    """
    try:
        with try_lock(Path(lock)) as taken:
            return _train(config, run_dir, threads, hook) if taken else ("busy", holder_of(Path(lock)))
    except OSError as err:  # e.g. a filesystem without lock support: fail the run rather than run it unprotected
        return "failed", f"cannot lock {lock}: {err.strerror or err}"


def _train(config: Config, run_dir: str, threads: int, hook: KillHook | None) -> tuple[str, Any]:
    import torch

    if not config.threads:  # the spec's own `threads` wins; otherwise share the cores among workers
        torch.set_num_threads(threads)
    try:
        return "ok", train(config, Path(run_dir), progress=False, hooks=[KillAt(hook, run_dir)] if hook is not None else [])
    except Exception as err:  # noqa: BLE001 - any failure of one run is reported in its row
        last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        where = f" (at {Path(last.filename).name}:{last.lineno})" if last else ""
        return "failed", f"{type(err).__name__}: {err}{where}".replace("\n", " ")
