"""Write files so that no half-written file is ever taken for a finished one: temp name, then rename."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from snapbench.errors import SnapbenchError


def check_writable(path: str | os.PathLike, fix: str) -> Path:
    """Fail in one line, before any work, when the file `path` cannot be written where it is (its missing
    folders made as needed): it must not be a folder, and the nearest folder above it that exists must take
    new files. The folder is what counts, not an existing file's own permission: a write is a temporary
    sibling renamed over it (and a table's lock file sits beside it). `fix` says how to choose another place
    ("choose another --out"). One check for every command that writes a table or report into a folder the
    user names, instead of failing at the end of a long run."""
    p = Path(path)
    if p.is_dir():
        raise SnapbenchError(f"{p}: is a folder, not a file; {fix}")
    for parent in p.parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise SnapbenchError(f"{p}: cannot write there, {parent} is a file, not a folder; {fix}")
        # a file made and removed again, not os.access(): root passes access() where a read-only or virtual
        # file system (sysfs, a read-only mount) refuses the write itself
        try:
            fd, probe = tempfile.mkstemp(prefix=".snapbench-probe.", dir=parent)
        except OSError as e:
            raise SnapbenchError(f"{p}: cannot write there, {parent} is not writable ({e.strerror or e}); "
                                 f"{fix}") from None
        os.close(fd)
        os.unlink(probe)
        break
    return p


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp creates 0600; a finished file gets the permissions a plain open() would give it
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path (file or folder) to write; rename it to `path` only on success.

    Temporary names start with '.' and end with '.partial' so a resumed run can spot and remove them.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.partial")
    _remove(tmp)
    try:
        yield tmp
        _remove(final)
        os.replace(tmp, final)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
