"""What an interrupted (Ctrl-C) or failed run tells its user, and worker processes that leave Ctrl-C to
their parent.

A command that writes as it goes says once, up front, what an interrupt keeps (`on_interrupt_keep`); the
CLI prints it in the one line it writes on exit 130. Worker processes ignore SIGINT (a Ctrl-C reaches the
whole process group): the parent alone decides, so the user sees one line instead of one traceback per
worker.
"""

from __future__ import annotations

import contextlib
import signal
from concurrent.futures import Executor

_KEPT: list[str] = []

NOTHING_KEPT = "nothing half-written is left (files are written whole or not at all)"


def on_interrupt_keep(what: str) -> None:
    """Say what an interrupt from now on keeps, e.g. "finished packages and manifest.json in build/x"."""
    _KEPT[:] = [what]


def interrupted_line() -> str:
    kept = _KEPT[0] if _KEPT else NOTHING_KEPT
    return f"interrupted; kept: {kept}; run the same command again to resume"


def reset() -> None:
    _KEPT.clear()


def ignore_sigint() -> None:
    """For worker processes (pool initializers): Ctrl-C is the parent's to handle."""
    with contextlib.suppress(ValueError):  # not the main thread: nothing to do
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_pool(pool: Executor) -> None:
    """Stop a ProcessPoolExecutor now: cancel what has not started and end the workers (they ignore
    SIGINT, and a conversion can run for minutes). Their half-written outputs are temporaries that the
    next run removes."""
    pool.shutdown(wait=False, cancel_futures=True)
    # _processes is the executor's own map of worker processes; there is no public way to end them early
    for p in list((getattr(pool, "_processes", None) or {}).values()):
        with contextlib.suppress(Exception):
            p.terminate()
