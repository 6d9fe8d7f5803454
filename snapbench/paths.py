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
    """`--tables DIR`, else $SNAPBENCH_TABLES, else ./latency_tables, unless that is the shipped folder
    itself (a clone's top-level `latency_tables` links to it): then `clone_tables_dir()`, so that figures
    a user makes never land among the shipped ones unasked (naming that folder with --tables still writes there:
    that is how the shipped tables are made)."""
    if tables is not None:
        return Path(tables)
    chosen = os.environ.get(TABLES_ENV)
    if chosen:
        return Path(chosen)
    return clone_tables_dir() if default_tables_are_shipped() else Path(USER_TABLES_DEFAULT)


def default_tables_are_shipped() -> bool:
    """Whether ./latency_tables is (or lies inside) the package's shipped tables folder."""
    here = Path(USER_TABLES_DEFAULT)
    if not here.exists():
        return False
    shipped = shipped_tables_dir().resolve()
    return here.resolve() == shipped or shipped in here.resolve().parents


def clone_tables_dir() -> Path:
    """Where a user's tables go when ./latency_tables is the shipped folder: the user's data folder."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("snapbench", appauthor=False)) / "latency_tables"


def tables_redirect_note(tables: str | Path | None) -> str | None:
    """One line for a run that writes a table: why it is not under ./latency_tables (None: it is)."""
    if tables is not None or os.environ.get(TABLES_ENV) or not default_tables_are_shipped():
        return None
    return (f"./{USER_TABLES_DEFAULT} here is the tables shipped with snapbench (a clone's link), so your table goes "
            f"to {clone_tables_dir()} and is read from there; choose with --tables DIR or ${TABLES_ENV}")


def table_name(model: str) -> str:
    """A model reference as a table file's stem: a preset stays as it is, a path gives its last part."""
    name = Path(model.rstrip("/\\")).stem if ("/" in model or "\\" in model or model.endswith(".json")) else model
    return safe_file_name(name)  # `..`, `<script>`: never a path of its own


def user_table_path(device_id: str, model: str, tables: str | Path | None = None) -> Path:
    """Where `profile` writes the table of `model` on `device_id`."""
    return user_tables_dir(tables) / safe_file_name(device_id, "device") / f"{table_name(model)}.csv"


def tables_hint(table: str | Path | None) -> str:
    """How to fix a latency table that cannot be written: another --table where one was named, else another
    folder of tables."""
    if table is not None:
        return "choose a writable --table"
    return f"choose a writable folder with --tables DIR or ${TABLES_ENV}"


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
