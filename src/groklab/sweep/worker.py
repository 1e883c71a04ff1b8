"""What a sweep worker does with one run, the same on every backend: set threads, train, report.

Test hook (documented, off unless set): ``GROKLAB_SWEEP_TEST_KILL=STEP:MARKER`` in the environment of
the ``groklab sweep`` process makes the first worker whose run logs a metric row at step >= STEP create
the file MARKER and kill its own process with SIGKILL, exactly once per MARKER. Tests use it to prove
that a worker dying mid-run is retried and resumes; the driver reads the variable and hands it to the
workers explicitly, so it works the same for the process pool and for Ray.
"""

from __future__ import annotations

import os
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groklab.config import Config

KILL_HOOK_ENV = "GROKLAB_SWEEP_TEST_KILL"


@dataclass(frozen=True)
class KillHook:
    step: int
    marker: str


def kill_hook_from_env() -> KillHook | None:
    value = os.environ.get(KILL_HOOK_ENV)
    if not value:
        return None
    step, _, marker = value.partition(":")
    return KillHook(int(step), marker)


def _install_kill_hook(hook: KillHook) -> None:
    """Wrap RunDir.append_metrics in this worker process so that it dies at the hook's step."""
    from groklab.runio import RunDir

    original = RunDir.append_metrics
    if getattr(original, "_kill_hook", False):
        return

    def append_metrics(self: RunDir, row: dict[str, Any]) -> None:
        if row["step"] >= hook.step:
            try:
                os.close(os.open(hook.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass  # already killed once: behave normally
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        original(self, row)

    append_metrics._kill_hook = True  # type: ignore[attr-defined]
    RunDir.append_metrics = append_metrics  # type: ignore[method-assign]


def run_attempt(config: Config, run_dir: str, threads: int, hook: KillHook | None = None) -> tuple[str, Any]:
    """Train `config` into `run_dir` (resuming it if it holds this run): ("ok", summary) or ("failed", error line).

    A Python exception is returned, not raised, so a bad run never stops the others; only a dead process
    (which the backend retries) escapes.
    """
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
