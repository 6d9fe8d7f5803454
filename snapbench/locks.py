"""One lock per thing that one process at a time may write: a conversion folder, a run folder (`evolve`,
`train`), a latency table.

A lock is a file holding its owner's pid, locked with flock(2): the kernel drops the lock when its process
dies, so a lock left by a killed run is stale by construction and simply taken over (no guessing from
pids). A live owner either makes the caller wait (a table: its read-merge-write takes milliseconds) or
is refused in one line that names it (a folder a run writes for hours).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.paths import choose_another

FOLDER_LOCK = ".snapbench.lock"


class _Held:
    def __init__(self, path: Path, fd: int) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        # Unlink while still holding it; a waiter that opened the old file notices (inode check) and retries.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)


def _owner_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or "0") or None
    except (OSError, ValueError):
        return None


def try_lock(path: Path) -> _Held | int | None:
    """Take the lock at `path`: a held lock, or the owner's pid (None if unknown) when another process has it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return _owner_pid(path)
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # its owner released (unlinked) it between our open and flock: take the new one
            os.close(fd)
            continue
        # the pid only names the owner in messages; on a full disk the flock alone is the lock
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        return _Held(path, fd)


class FolderBusy(SnapbenchError):
    """Another live snapbench holds the lock of the folder this run would write."""

    def __init__(self, folder: str | os.PathLike, what: str, pid: int | None, flag: str) -> None:
        stop = f" (or stop it: kill {pid})" if pid else ""
        super().__init__(f"{folder}: another snapbench {what}{f' (pid {pid})' if pid else ''} is writing there; "
                         f"wait for it to finish{stop} and run again, or choose another {flag}")
        self.folder, self.pid = Path(folder), pid


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str, flag: str = "--out") -> Iterator[None]:
    """Hold `folder`'s lock (the folder must exist) or refuse: another snapbench is writing there."""
    lock = Path(folder) / FOLDER_LOCK
    held = try_lock(lock)
    if not isinstance(held, _Held):
        raise FolderBusy(folder, what, held, flag)
    try:
        yield
    finally:
        held.release()


def _lock_free(folder: str | os.PathLike, *, wait: bool) -> bool:
    """Whether no live process holds `folder`'s lock, found by taking it shared for a moment (waiting for
    its owner to release it, or die, if `wait`). Creates nothing: no lock file means no owner (or an
    unreadable one, which the real claim reports)."""
    try:
        fd = os.open(Path(folder) / FOLDER_LOCK, os.O_RDONLY)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | (0 if wait else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def refuse_if_locked(folder: str | os.PathLike, what: str, flag: str = "--out") -> None:
    """Refuse now, before minutes of loading and cutting a model, when another live process holds
    `folder`'s lock; the run still takes the lock itself later (this only answers early)."""
    if not _lock_free(folder, wait=False):
        raise FolderBusy(folder, what, _owner_pid(Path(folder) / FOLDER_LOCK), flag)


def wait_while_locked(folder: str | os.PathLike) -> None:
    """Block until no process holds `folder`'s lock (for a folder the cache shares between runs: the
    packages its owner finishes are the waiter's to reuse)."""
    _lock_free(folder, wait=True)


def file_lock_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, what: str, timeout_s: float = 120.0) -> Iterator[None]:
    """Hold the lock of one file (`.NAME.lock` beside it), waiting up to `timeout_s` for its owner."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    lock = file_lock_path(p)
    deadline = time.monotonic() + timeout_s
    while not isinstance(held := try_lock(lock), _Held):
        if time.monotonic() > deadline:
            who = f"pid {held}" if held else "another process"
            raise SnapbenchError(f"{p}: {who} has held this {what} for over {timeout_s:.0f} s; "
                                 "wait for it to finish and run again")
        time.sleep(0.05)
    try:
        yield
    finally:
        held.release()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (for temporaries named after the pid that wrote them)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claimed_run_folder(folder: str | os.PathLike, what: str, flag: str = "--out") -> Iterator[Path]:
    """Create `folder` if needed and hold its lock for a whole run; a folder this call created and the
    run left empty (refused input) is removed again."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise SnapbenchError(f"{p}: exists and is not a folder; choose another {flag}")
    created = not p.exists()
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SnapbenchError(f"{p}: cannot write there ({e.strerror or e}); {choose_another(p, flag)}") from None
    try:
        with folder_lock(p, what, flag):
            yield p
    finally:
        if created:
            with contextlib.suppress(OSError):
                p.rmdir()  # only if empty


CACHE_IN_USE = ".snapbench-in-use.lock"


@contextlib.contextmanager
def cache_in_use(root: Path) -> Iterator[None]:
    """A shared lock on the cache folder for a whole run, so `snapbench cache clean` sees that a run may be
    using what it would delete (a profile reading its packages). Only an existing, writable cache is
    marked: nothing is created for a run that never needed one."""
    fd = None
    while root.is_dir():
        try:
            fd = os.open(root / CACHE_IN_USE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            fd = None
            break
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits out a `cache clean` in progress (milliseconds)
        try:
            same = os.fstat(fd).st_ino == os.stat(root / CACHE_IN_USE).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # a clean removed the file between our open and flock: take the new one
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


@contextlib.contextmanager
def cache_exclusive(root: Path) -> Iterator[None]:
    """Hold the cache alone (for `cache clean`), or refuse in one line while any snapbench run is using it.
    The lock file goes with what clean removes (a run that opened it meanwhile notices and takes a new one)."""
    if not root.is_dir():
        yield
        return
    lock = root / CACHE_IN_USE
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SnapbenchError(f"{root}: another snapbench run is using the cache; wait for it to finish, "
                                 "then clean") from None
        yield
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    finally:
        os.close(fd)
