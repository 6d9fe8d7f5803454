"""The rich progress bar of a conversion (stderr), or nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Reporter(Protocol):
    def start(self, name: str) -> None: ...
    def done(self, name: str) -> None: ...


class _Silent:
    def start(self, name: str) -> None:
        pass

    def done(self, name: str) -> None:
        pass


class _Bar:
    def __init__(self, progress, task) -> None:
        self._progress, self._task = progress, task
        self._running: list[str] = []

    def start(self, name: str) -> None:
        self._running.append(name)
        self._show()

    def done(self, name: str) -> None:
        if name in self._running:
            self._running.remove(name)
        self._show(advance=1)  # one update: the line logged at 100% must not name a block already done

    def _show(self, advance: int = 0) -> None:
        shown = ", ".join(self._running[:3]) + (" ..." if len(self._running) > 3 else "")
        self._progress.update(self._task, advance=advance, description=f"converting {shown}" if shown else "converted")


@contextlib.contextmanager
def reporter(total: int, *, enabled: bool) -> Iterator[Reporter]:
    if not enabled or total == 0:
        yield _Silent()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

    from snapbench.console import err
    from snapbench.progress_log import description_column, make_progress

    with make_progress("convert", description_column(), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), console=err, transient=False) as progress:
        yield _Bar(progress, progress.add_task("converting", total=total))
