"""Backends that run a list of tasks (one run, or a pack of runs trained as one ensemble): a local process pool and Ray
core tasks, with one event interface that speaks of runs.

Both retry a task whose worker process died (killed, out of memory, its node lost) up to `max_retries` times; a retried
task resumes every run from its newest checkpoint because train() resumes a directory that holds the same config.
A Python exception inside a run is not retried: it is reported as that run's failure.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Protocol

from groklab.errors import UserError
from groklab.sweep.packs import on_gpu
from groklab.sweep.worker import KillHook, Member, Result, run_attempt


@dataclass(frozen=True)
class Task:
    """What one worker trains at once: one run, or a pack of runs that differ only in their seed."""

    members: tuple[Member, ...]

    @property
    def key(self) -> str:
        return self.members[0].run_id


class Events(Protocol):
    """What the driver hears: `finished` gets ("ok", summary), ("failed", error line) or ("busy", holder)."""

    def started(self, run_id: str) -> None: ...

    def finished(self, run_id: str, status: str, payload: Any) -> None: ...

    def retried(self, run_id: str, reason: str) -> None: ...


@contextmanager
def sigterm_stops() -> Iterator[None]:
    """A SIGTERM to the driver (`kill`, a scheduler's preemption) stops the sweep as a Ctrl-C does: the training runs
    checkpoint and are recorded `interrupted`. Without it the driver alone dies and its workers train on, orphaned."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        conn.send(run_attempt(task.members, threads, hook))


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
    stopping = False

    def died(task: Task, reason: str, retry: bool) -> None:
        for m in task.members:
            if retry:
                events.retried(m.run_id, reason)
            else:
                events.finished(m.run_id, "failed", reason)

    def collect(timeout: float | None) -> bool:
        """Handle whatever finished or died; False if nothing happened within `timeout`."""
        busy = [s for s in slots if s.task is not None]
        ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout)
        for i, slot in enumerate(slots):
            task = slot.task
            if task is None or not (slot.conn in ready or slot.process.sentinel in ready):
                continue
            results: list[Result] | None = None
            if slot.conn.poll():
                try:
                    results = slot.conn.recv()
                except (EOFError, ConnectionError):
                    results = None
            if results is not None:
                slot.task = None
                for result in results:
                    events.finished(*result)
                continue
            slot.process.join(timeout=5)
            code = slot.process.exitcode
            deaths[task.key] = deaths.get(task.key, 0) + 1
            slot.conn.close()
            if stopping:  # no retry and no new worker: the run keeps its last checkpoint for the next sweep to resume
                slot.task = None
                died(task, f"worker died while the sweep stopped (exit code {code}); rerun the sweep to resume it", retry=False)
                continue
            if deaths[task.key] <= max_retries:
                queue.appendleft(task)
                died(task, f"worker died (exit code {code})", retry=True)
            else:
                died(task, f"worker died {deaths[task.key]} times (last exit code {code})", retry=False)
            slots[i] = spawn()
        return bool(ready)

    try:
        while queue or any(s.task is not None for s in slots):
            for slot in slots:
                if slot.task is None and queue:
                    slot.task = queue.popleft()
                    slot.conn.send(slot.task)
                    for m in slot.task.members:
                        events.started(m.run_id)
            collect(None)
    except KeyboardInterrupt:
        # Stop: the running trainings checkpoint and return `interrupted` summaries, which are recorded. A Ctrl-C reached
        # them too (the terminal signals the whole group); a SIGINT sent to this process alone did not, so pass it on
        # (train() takes a second one as the first).
        stopping = True
        queue.clear()
        for slot in slots:
            if slot.task is not None and slot.process.pid is not None:
                os.kill(slot.process.pid, signal.SIGINT)
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
# Ray: the same run_attempt as a core task; Ray itself resubmits a task whose worker process (or node) died.


@contextmanager
def ray_connection(address: str | None, cpus: int | None) -> Iterator[Any]:
    """The `ray` module, connected to the cluster at `address` or to a local Ray with `cpus` CPUs started here (and shut
    down at the end); one-line errors when Ray is not installed or nothing answers at `address`."""
    try:
        import ray
    except ImportError:
        raise UserError("--backend ray needs Ray: pip install 'groklab[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            check_reachable(address)
        try:
            quiet = {"log_to_driver": False, "logging_level": logging.WARNING}  # Ray's INFO lines would bury the sweep's own
            if address:
                ray.init(address=address, **quiet)
            else:
                ray.init(num_cpus=cpus or 1, include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as err:
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise UserError(f"--address {address}: no Ray cluster answers there ({reason}); start one with `ray start --head`") from None
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def check_reachable(address: str) -> None:
    """Refuse at once a `host:port` (or ray://host:port) where nothing listens: ray.init would retry it for minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # `auto` and the like: ray.init itself answers quickly
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as err:
        raise UserError(
            f"--address {address}: no Ray cluster answers there ({err.strerror or err}); start one with `ray start --head`"
        ) from None


def _sees(path: str, token: str) -> bool:
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def check_shared(ray: Any, sweep_dir: Path) -> None:
    """Refuse, in one line and before the sweep dir is written, a sweep dir that a node able to run a task cannot see (it
    is not on a shared filesystem): its runs would be written where the driver never looks. A probe file written in the
    sweep dir (or its nearest existing parent) is read back on every such node, then removed."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    anchor = next(p for p in [sweep_dir, *sweep_dir.parents] if p.is_dir())
    probe = anchor / f".groklab-probe-{token}"
    try:
        probe.write_text(token)
    except OSError as err:
        raise UserError(f"--out {sweep_dir} is not writable: {err.strerror}") from None
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        sees = ray.remote(num_cpus=0)(_sees)
        refs = {
            f"{n['NodeManagerAddress']} (id {n['NodeID'][:8]})": sees.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe), token)
            for n in nodes
        }
        blind = [node for node, ref in refs.items() if not ray.get(ref)]
    finally:
        probe.unlink()
    if blind:
        raise UserError(
            f"--out {sweep_dir} is not visible on Ray node(s) {', '.join(blind)}: put the sweep dir on a filesystem "
            "every node mounts at the same path"
        )


def run_ray(
    ray: Any, tasks: list[Task], workers: int | None, threads: int, events: Events, hook: KillHook | None = None, max_retries: int = 3
) -> None:
    """Run `tasks` as Ray tasks on the connected Ray (ray_connection): each reserves one CPU (and one GPU if it trains on
    one); at most `workers` are in flight (default: the cluster's CPU count)."""
    resources = ray.cluster_resources()
    if workers is None:
        workers = max(1, int(resources.get("CPU", 1)))
    remote = ray.remote(num_cpus=1, max_retries=max_retries)(run_attempt)
    queue = deque(tasks)
    pending: dict[Any, Task] = {}

    def collect(ref: Any) -> None:
        task = pending.pop(ref)
        try:
            results: list[Result] = ray.get(ref)
        except ray.exceptions.TaskCancelledError:  # stopped before it started: its runs stay pending for the next sweep
            return
        except ray.exceptions.RayError as err:  # the worker (or its node) died more than max_retries times
            reason = f"{type(err).__name__}: {str(err).splitlines()[0]}"
            results = [(m.run_id, "failed", reason) for m in task.members]
        for result in results:
            events.finished(*result)

    try:
        while queue or pending:
            while queue and len(pending) < workers:
                task = queue.popleft()
                gpus = 1 if on_gpu(task.members[0].config, resources.get("GPU", 0) > 0) else 0  # a task on a GPU has it to itself
                pending[remote.options(num_gpus=gpus).remote(task.members, threads, hook)] = task
                for m in task.members:
                    events.started(m.run_id)
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                collect(ref)
    except KeyboardInterrupt:
        # Stop as the local backend does: Ray delivers a cancel to a running task as SIGINT, which train() takes as a
        # stop (checkpoint, `interrupted` summary); record those. Tasks not started yet are dropped, their runs pending.
        for ref in pending:
            ray.cancel(ref)
        done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=30.0)
        for ref in done:
            collect(ref)
        raise
