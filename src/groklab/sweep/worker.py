"""What a sweep worker does with one task (one run, or a pack of runs that differ only in their seed), the same on every
backend: lock each run, set threads, train (a pack as one vmapped ensemble), report each run's result.

Test hook (documented, off unless set): ``GROKLAB_SWEEP_TEST_KILL=STEP:MARKER[:COUNT]`` in the environment of
the ``groklab sweep`` process makes a worker whose run logs a metric row at step >= STEP create the file
MARKER.<i> (holding the run dir, or a pack's run dirs one a line) and kill its own process with SIGKILL, for
i = 1 .. COUNT (default 1), each time in a different task. Tests use it to prove that a worker dying mid-run is retried and resumes; the
driver reads the variable and hands it to the workers explicitly, so it works the same for the process
pool and for Ray.
"""

from __future__ import annotations

import os
import signal
import traceback
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groklab.config import Config
from groklab.runio import RunDir
from groklab.sweep.locks import holder_of, try_lock
from groklab.sweep.table import DONE
from groklab.train import Hook, train, train_pack

KILL_HOOK_ENV = "GROKLAB_SWEEP_TEST_KILL"


@dataclass(frozen=True)
class Member:
    """One run of a worker task."""

    run_id: str
    config: Config
    run_dir: str
    """Absolute path of the run directory (on a cluster: a path every node can reach)."""
    lock: str
    """Absolute path of the run's lock file (see locks.py): held by the worker while it trains the run."""


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
    """The training hook of KillHook: once a member logs a row at step >= hook.step, claim a free marker (each task is
    killed once at most, COUNT tasks in all) and kill this worker process with SIGKILL."""

    def __init__(self, hook: KillHook, run_dirs: list[str]) -> None:
        self.hook, self.task = hook, "\n".join(str(Path(d)) for d in run_dirs)

    def logged(self, member: int, row: dict[str, Any]) -> None:
        if row["step"] < self.hook.step:
            return
        markers = [Path(f"{self.hook.marker}.{i}") for i in range(1, self.hook.count + 1)]
        if self.task in {m.read_text() for m in markers if m.exists()}:
            return
        for marker in markers:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
            os.write(fd, self.task.encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)


Result = tuple[str, str, Any]
"""(run_id, status, payload): ("ok", summary), ("failed", error line) or ("busy", `host pid` of the lock's holder)."""


def run_attempt(members: tuple[Member, ...], threads: int, hook: KillHook | None = None) -> list[Result]:
    """Train the members into their run directories (resuming those that hold their run), a pack as one ensemble.

    A member is trained only while this process holds its lock file (see locks.py); one another live process holds
    (a second sweep on the same dir) is left untouched and reported busy, and the rest train without it. A member that
    has already ended (a retried pack whose member had diverged or stopped early) is reported as it ended. A Python
    exception is returned as every trained member's failure, not raised, so a bad run never stops the others; only a
    dead process (which the backend retries) escapes.
    """
    results: dict[str, tuple[str, Any]] = {}
    with ExitStack() as held:
        todo = []
        for m in members:
            try:
                taken = held.enter_context(try_lock(Path(m.lock)))
            except OSError as err:  # e.g. a filesystem without lock support: fail the run rather than run it unprotected
                results[m.run_id] = ("failed", f"cannot lock {m.lock}: {err.strerror or err}")
                continue
            summary = RunDir(Path(m.run_dir)).read_summary() if taken else None
            if not taken:
                results[m.run_id] = ("busy", holder_of(Path(m.lock)))
            elif summary is not None and summary.get("status") in DONE:
                results[m.run_id] = ("ok", summary)
            else:
                todo.append(m)
        if todo:
            results.update(_train(todo, threads, hook))
    return [(m.run_id, *results[m.run_id]) for m in members]


def _train(members: list[Member], threads: int, hook: KillHook | None) -> dict[str, tuple[str, Any]]:
    import torch

    config, dirs = members[0].config, [m.run_dir for m in members]
    if not config.threads:  # the spec's own `threads` wins; otherwise share the cores among workers
        torch.set_num_threads(threads)
    hooks = [KillAt(hook, dirs)] if hook is not None else []
    try:
        if len(members) == 1:
            summaries = [train(config, Path(dirs[0]), progress=False, hooks=hooks)]
        else:
            summaries = train_pack([m.config for m in members], dirs, progress=False, hooks=hooks)
        return {m.run_id: ("ok", s) for m, s in zip(members, summaries, strict=True)}
    except Exception as err:  # noqa: BLE001 - any failure of a run is reported in its row
        last = traceback.extract_tb(err.__traceback__)[-1] if err.__traceback__ else None
        where = f" (at {Path(last.filename).name}:{last.lineno})" if last else ""
        line = f"{type(err).__name__}: {err}{where}".replace("\n", " ")
        return {m.run_id: ("failed", line) for m in members}
