"""Backends that run a list of tasks: a local process pool and Ray core tasks, with one event interface.

Both retry a run whose worker process died (killed, out of memory) up to `max_retries` times; a retried
run resumes from its newest checkpoint because train() resumes a directory that holds the same config.
A Python exception inside a run is not retried: it is reported as that run's failure.
"""

from __future__ import annotations

import multiprocessing as mp
import signal
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from groklab.config import Config, UserError
from groklab.sweep.worker import KillHook, run_attempt


@dataclass(frozen=True)
class Task:
    run_id: str
    config: Config
    run_dir: str
    """Absolute path of the run directory (on a cluster: a path every node can reach)."""
    lock: str
    """Absolute path of the run's lock file (see locks.py): held by the worker while it trains the run."""


class Events(Protocol):
    """What the driver hears: `finished` gets ("ok", summary), ("failed", error line) or ("busy", holder)."""

    def started(self, run_id: str) -> None: ...

    def finished(self, run_id: str, status: str, payload: Any) -> None: ...

    def retried(self, run_id: str, reason: str) -> None: ...


# ---------------------------------------------------------------------------------------------
# Local: a pool of spawned worker processes, each fed one run at a time through its own pipe, so the
# driver always knows which run a dead worker was holding (a ProcessPoolExecutor only says "broken").


def _worker_main(conn: Connection, threads: int, hook: KillHook | None) -> None:
    # Ctrl-C reaches the whole process group: while idle a worker ignores it and waits for the driver;
    # while training, train() catches it, checkpoints and returns an `interrupted` summary.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        task: Task | None = conn.recv()
        if task is None:
            return
        conn.send((task.run_id, *run_attempt(task.config, task.run_dir, task.lock, threads, hook)))


@dataclass
class _Slot:
    process: Any  # multiprocessing SpawnProcess
    conn: Connection
    task: Task | None = None


def run_local(tasks: list[Task], workers: int, threads: int, events: Events, hook: KillHook | None = None, max_retries: int = 3) -> None:
    """Run `tasks` on `workers` spawned processes with `threads` torch threads each."""
    ctx = mp.get_context("spawn")  # fork after torch has started threads can deadlock; spawn is portable

    def spawn() -> _Slot:
        parent, child = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child, threads, hook), daemon=True)
        process.start()
        child.close()
        return _Slot(process, parent)

    queue = deque(tasks)
    deaths: dict[str, int] = {}
    slots = [spawn() for _ in range(min(workers, len(tasks)))]

    def collect(timeout: float | None) -> bool:
        """Handle whatever finished or died; False if nothing happened within `timeout`."""
        busy = [s for s in slots if s.task is not None]
        ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout)
        for i, slot in enumerate(slots):
            task = slot.task
            if task is None or not (slot.conn in ready or slot.process.sentinel in ready):
                continue
            message = None
            if slot.conn.poll():
                try:
                    message = slot.conn.recv()
                except (EOFError, ConnectionError):
                    message = None
            if message is not None:
                slot.task = None
                events.finished(task.run_id, message[1], message[2])
                continue
            slot.process.join(timeout=5)
            code = slot.process.exitcode
            deaths[task.run_id] = deaths.get(task.run_id, 0) + 1
            if deaths[task.run_id] <= max_retries:
                queue.appendleft(task)
                events.retried(task.run_id, f"worker died (exit code {code})")
            else:
                events.finished(task.run_id, "failed", f"worker died {deaths[task.run_id]} times (last exit code {code})")
            slot.conn.close()
            slots[i] = spawn()
        return bool(ready)

    try:
        while queue or any(s.task is not None for s in slots):
            for slot in slots:
                if slot.task is None and queue:
                    slot.task = queue.popleft()
                    slot.conn.send(slot.task)
                    events.started(slot.task.run_id)
            collect(None)
    except KeyboardInterrupt:
        # Running trainings caught the same Ctrl-C and are checkpointing: record their summaries, then stop.
        queue.clear()
        while any(s.task is not None for s in slots) and collect(30.0):
            pass
        raise
    finally:
        for slot in slots:
            try:
                slot.conn.send(None)
            except (OSError, ValueError):
                pass
        for slot in slots:
            slot.process.join(timeout=10)
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join()


# ---------------------------------------------------------------------------------------------
# Ray: the same run_attempt as a core task; Ray itself resubmits a task whose worker process died.


def run_ray(
    tasks: list[Task],
    workers: int | None,
    threads: int,
    events: Events,
    hook: KillHook | None = None,
    max_retries: int = 3,
    address: str | None = None,
) -> None:
    """Run `tasks` as Ray tasks: a local Ray with `workers` CPUs, or the cluster at `address`.

    At most `workers` tasks are in flight (default on a cluster: its CPU count), each reserving one CPU.
    """
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'groklab[ray]'") from None

    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or 1, include_dashboard=False, log_to_driver=False)
    try:
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        remote: Callable[..., Any] = ray.remote(num_cpus=1, max_retries=max_retries)(run_attempt).remote
        queue = deque(tasks)
        pending: dict[Any, Task] = {}
        while queue or pending:
            while queue and len(pending) < workers:
                task = queue.popleft()
                pending[remote(task.config, task.run_dir, task.lock, threads, hook)] = task
                events.started(task.run_id)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    status, payload = ray.get(ref)
                except ray.exceptions.RayError as err:  # the worker died more than max_retries times
                    status, payload = "failed", f"{type(err).__name__}: {str(err).splitlines()[0]}"
                events.finished(task.run_id, status, payload)
    finally:
        if started_here:
            ray.shutdown()
