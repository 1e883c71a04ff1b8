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


def _install_kill_hook(hook: KillHook) -> None:
    """Wrap RunDir.append_metrics in this worker process so that it dies at the hook's step."""
    from groklab.runio import RunDir

    original = RunDir.append_metrics
    if getattr(original, "_kill_hook", False):
        return

    def append_metrics(self: RunDir, row: dict[str, Any]) -> None:
        if row["step"] >= hook.step:
            markers = [Path(f"{hook.marker}.{i}") for i in range(1, hook.count + 1)]
            if str(self.path) not in {m.read_text() for m in markers if m.exists()}:  # each run is killed once at most
                for marker in markers:
                    try:
                        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                    except FileExistsError:
                        continue
                    os.write(fd, str(self.path).encode())
                    os.close(fd)
                    os.kill(os.getpid(), signal.SIGKILL)
        original(self, row)

    append_metrics._kill_hook = True  # type: ignore[attr-defined]
    RunDir.append_metrics = append_metrics  # type: ignore[method-assign]


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

    from groklab.train import train

    if hook is not None:
        _install_kill_hook(hook)
    if not config.threads:  # the spec's own `threads` wins; otherwise share the cores among workers
        torch.set_num_threads(threads)
    try:
        return "ok", train(config, Path(run_dir), progress=False)
    except Exception as err:  # noqa: BLE001 - any failure of one run is reported in its row
        last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        where = f" (at {Path(last.filename).name}:{last.lineno})" if last else ""
        return "failed", f"{type(err).__name__}: {err}{where}".replace("\n", " ")
