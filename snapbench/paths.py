"""Where snapbench keeps files between runs: the cache folder and the latency tables.

- Cache (converted packages, op records, the toy's trained-once classifier): $SNAPBENCH_CACHE, else the
  platform's user cache folder (`~/.cache/snapbench` on Linux, `~/Library/Caches/snapbench` on macOS).
  `snapbench cache info|clean` shows and empties it.
- Latency tables: the user's folder ($SNAPBENCH_TABLES or `--tables DIR`, else `latency_tables/` in the
  working folder) is read first and is where `profile` writes; the tables shipped inside the package
  (`snapbench/latency_tables/`) are read when the user has none for that device and model, so a plain
  install finds them from any working folder.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from snapbench.names import safe_file_name

CACHE_ENV = "SNAPBENCH_CACHE"
TABLES_ENV = "SNAPBENCH_TABLES"
USER_TABLES_DEFAULT = "latency_tables"


def cache_root() -> Path:
    """The cache folder: $SNAPBENCH_CACHE, else the platform's user cache folder for snapbench."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("snapbench", appauthor=False))


def choose_another(folder: str | Path, flag: str = "--out") -> str:
    """How to fix an unwritable `folder`: another `flag`, or, for a folder inside the cache (which no flag
    names), another $SNAPBENCH_CACHE."""
    try:
        Path(folder).absolute().relative_to(cache_root().absolute())
    except ValueError:
        return f"choose another {flag}"
    return f"it is in the cache folder; set ${CACHE_ENV} to a writable folder"


def shipped_tables_dir() -> Path:
    """The latency tables that travel inside the package (estimates; see its README.md)."""
    return Path(str(resources.files("snapbench") / "latency_tables"))


def user_tables_dir(tables: str | Path | None = None) -> Path:
    """`--tables DIR`, else $SNAPBENCH_TABLES, else ./latency_tables."""
    if tables is not None:
        return Path(tables)
    return Path(os.environ.get(TABLES_ENV) or USER_TABLES_DEFAULT)


def table_name(model: str) -> str:
    """A model reference as a table file's stem: a preset stays as it is, a path gives its last part."""
    name = Path(model.rstrip("/\\")).stem if ("/" in model or "\\" in model or model.endswith(".json")) else model
    return safe_file_name(name)  # `..`, `<script>`: never a path of its own


def user_table_path(device_id: str, model: str, tables: str | Path | None = None) -> Path:
    """Where `profile` writes the table of `model` on `device_id`."""
    return user_tables_dir(tables) / safe_file_name(device_id, "device") / f"{table_name(model)}.csv"


def shipped_table_path(device_id: str, model: str) -> Path:
    return shipped_tables_dir() / device_id / f"{table_name(model)}.csv"


def table_to_read(device_id: str, model: str, tables: str | Path | None = None) -> Path | None:
    """The user's table if there is one, else the shipped one, else None."""
    for p in (user_table_path(device_id, model, tables), shipped_table_path(device_id, model)):
        if p.is_file():
            return p
    return None


def display_path(path: Path) -> str:
    """A path as a user reads it: a shipped table as `snapbench/latency_tables/...`, not its install path."""
    try:
        return str(Path("snapbench") / "latency_tables" / path.resolve().relative_to(shipped_tables_dir().resolve()))
    except ValueError:
        return str(path)
