"""`snapbench cache info|clean`: where the cache folder is, what it holds, and emptying it."""

from __future__ import annotations

import typer
from rich.table import Table

from snapbench.commands.common import JsonOpt, fmt_count, out, print_json

cache_app = typer.Typer(help="The cache folder: converted packages, op records, trained-once artefacts.",
                        no_args_is_help=True)


@cache_app.command("info")
def info_command(as_json: bool = JsonOpt) -> None:
    """Where the cache folder is ($SNAPBENCH_CACHE overrides it) and what each part takes."""
    from snapbench.cache_folder import cache_entries
    from snapbench.paths import CACHE_ENV, cache_root

    root = cache_root()
    entries = cache_entries(root)
    total = sum(e.bytes for e in entries)
    if as_json:
        print_json({"path": str(root), "bytes": total,
                    "entries": [{"name": e.name, "bytes": e.bytes, "what": e.what} for e in entries]})
        return
    out.print(f"cache folder: {root} (set ${CACHE_ENV} to move it); {fmt_count(total, 'B')} in all")
    if entries:
        t = Table(title_justify="left")
        for col in ("entry", "size", "what"):
            t.add_column(col, justify="right" if col == "size" else "left")
        for e in entries:
            t.add_row(e.name, fmt_count(e.bytes, "B"), e.what or "(not snapbench's; `clean` leaves it)")
        out.print(t)


@cache_app.command("clean")
def clean_command(as_json: bool = JsonOpt) -> None:
    """Remove what snapbench keeps in the cache folder (it is rebuilt when needed)."""
    from snapbench.cache_folder import clean_cache
    from snapbench.paths import cache_root

    root = cache_root()
    removed = clean_cache(root)
    freed = sum(e.bytes for e in removed)
    if as_json:
        print_json({"path": str(root), "removed": [e.name for e in removed], "bytes_freed": freed})
        return
    out.print(f"{root}: removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, "
              f"{fmt_count(freed, 'B')} freed")


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
