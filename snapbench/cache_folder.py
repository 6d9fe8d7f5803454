"""What is in the cache folder (snapbench.paths.cache_root) and how to empty it.

Only the parts snapbench writes are removed by `clean`: the folder may be one a user pointed
$SNAPBENCH_CACHE at, holding other things.
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from snapbench.locks import CACHE_IN_USE, cache_exclusive
from snapbench.paths import cache_root

# top-level name (glob) -> what it holds
CACHE_PARTS: dict[str, str] = {
    "packages": "Core ML packages converted for profiling (one folder per model and settings)",
    "reference_ops": "op records of the calibration programs (estimator)",
    "latency": "latency tables with estimates filled in, per evolution cost model",
    "toy-digits-classifier-v*.npz": "the toy's digit classifier (trained once)",
}


@dataclass(frozen=True)
class CacheEntry:
    name: str
    bytes: int
    what: str  # the part's role, or "" for something snapbench did not write

    @property
    def ours(self) -> bool:
        return bool(self.what)


def _size(p: Path) -> int:
    if p.is_symlink() or p.is_file():
        return p.lstat().st_size
    total = 0
    for f in p.rglob("*"):
        with contextlib.suppress(OSError):  # removed while we walked
            total += f.lstat().st_size
    return total


def _role(name: str) -> str:
    return next((what for pattern, what in CACHE_PARTS.items() if fnmatch(name, pattern)), "")


def cache_entries(root: Path | None = None) -> list[CacheEntry]:
    root = root if root is not None else cache_root()
    if not root.is_dir():
        return []
    # the in-use lock is how runs tell `clean` they are there; it is neither content nor removed
    return [CacheEntry(p.name, _size(p), _role(p.name)) for p in sorted(root.iterdir()) if p.name != CACHE_IN_USE]


def clean_cache(root: Path | None = None) -> list[CacheEntry]:
    """Remove what snapbench wrote into the cache folder; return what was removed. Other files stay."""
    root = root if root is not None else cache_root()
    removed = []
    with cache_exclusive(root):  # refused while a run holds the cache (it may be reading a package)
        for e in cache_entries(root):
            if not e.ours:
                continue
            p = root / e.name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(e)
    return removed
