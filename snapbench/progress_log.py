"""Progress for long work (train, evolve, convert, profile, distill): a rich bar on a terminal, and plain
lines every so often when stderr is not one (CI, nohup, a notebook), where a bar would print nothing for
the whole run.

`make_progress(label, *rich_columns, console=...)` returns a rich `Progress` on a terminal, else a
`LineProgress` with the part of its API that snapbench uses (add_task, update, advance, start, stop, with).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar, cast

if TYPE_CHECKING:  # rich.progress loads only when a bar is drawn
    from types import TracebackType

    from rich.console import Console
    from rich.progress import ProgressColumn, TaskID, TextColumn

_Bar = TypeVar("_Bar", bound="ProgressBar")

# Seconds between two lines without a terminal ($SNAPBENCH_PROGRESS_EVERY_S to change).
DEFAULT_EVERY_S = 30.0


def every_s() -> float:
    try:
        return max(0.0, float(os.environ.get("SNAPBENCH_PROGRESS_EVERY_S", DEFAULT_EVERY_S)))
    except ValueError:
        return DEFAULT_EVERY_S


class ProgressBar(Protocol):
    """What snapbench uses of a progress display: rich's `Progress`, or `LineProgress` without a terminal."""

    def __enter__(self: _Bar) -> _Bar: ...
    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def add_task(self, description: str, /, *, total: float | None = ..., completed: int = ...) -> TaskID: ...
    def advance(self, task_id: TaskID, /, advance: float = ...) -> None: ...
    def update(self, task_id: TaskID, /, *, completed: float | None = ..., advance: float | None = ...,
               description: str | None = ..., total: float | None = ...) -> None: ...


def make_progress(label: str, *columns: ProgressColumn | str, console: Console,
                  transient: bool = False) -> ProgressBar:
    if getattr(console, "is_terminal", False):
        from rich.progress import Progress

        return Progress(*columns, console=console, transient=transient)
    return LineProgress(label, console)


def label_column(label: str, prefix: str = "") -> TextColumn:
    """A bar's bold label: the run's name as written (rich would read "[/bold]" in a spec name as a tag, and
    str.format a "{" in it as a field)."""
    from rich.progress import TextColumn

    text = f"{prefix} {label}" if prefix else label
    return TextColumn(text.replace("{", "{{").replace("}", "}}"), style="bold", markup=False)


def description_column() -> TextColumn:
    """The task's description (a block id, a step), as written."""
    from rich.progress import TextColumn

    return TextColumn("{task.description}", markup=False)


def _clock(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class _Task:
    """One task of a LineProgress: where it stands and when it was last written."""

    description: str
    total: float | None
    completed: float
    start: float  # time.monotonic() when added
    first: float  # completed when added (a resumed run starts part-way)
    last: float | None = None  # time of the last line
    logged_at: float | None = None  # completed at the last line


class LineProgress:
    """One line per task on its first update, then at most one every `every_s()` seconds, and at the end."""

    def __init__(self, label: str, console: Console, every: float | None = None) -> None:
        self.label, self.console = label, console
        self.every = every_s() if every is None else every
        self._tasks: dict[int, _Task] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        pass

    def stop(self) -> None:
        for tid, t in self._tasks.items():
            if t.completed != t.logged_at:
                self._log(tid)

    def add_task(self, description: str = "", total: float | None = None, completed: float = 0,
                 **_: object) -> TaskID:
        tid = len(self._tasks)
        self._tasks[tid] = _Task(description, total, completed, time.monotonic(), completed)
        return cast("TaskID", tid)  # rich's task ids are ints, typed apart (NewType)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def update(self, task: int, *, completed: float | None = None, advance: float | None = None,
               description: str | None = None, total: float | None = None, **_: object) -> None:
        t = self._tasks[task]
        if total is not None:
            t.total = total
        if completed is not None:
            t.completed = completed
        if advance:
            t.completed += advance
        if description is not None:
            t.description = description
        now = time.monotonic()
        done = t.total is not None and t.completed >= t.total
        if (t.last is None or now - t.last >= self.every or done) and t.logged_at != t.completed:
            self._log(task)

    def _log(self, task: int) -> None:
        t = self._tasks[task]
        now = time.monotonic()
        t.last, t.logged_at = now, t.completed
        elapsed = now - t.start
        total, completed = t.total, t.completed
        parts = [f"{self.label}: {completed:g}" + (f"/{total:g} ({completed / total:.0%})" if total else "")]
        if t.description:
            parts.append(str(t.description))
        parts.append(f"{_clock(elapsed)} elapsed")
        rate = (completed - t.first) / elapsed if elapsed > 0 else 0
        if total and rate > 0 and completed < total:
            parts.append(f"about {_clock((total - completed) / rate)} left")
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)
