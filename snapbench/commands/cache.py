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
def clean_command(
    ctx: typer.Context,
    device: bool = typer.Option(False, "--device", help="Also remove the runner app, and with it every model and "
                                "input it was sent, from each attached iPhone (a free team trusts it again next run)."),
    as_json: bool = JsonOpt,
) -> None:
    """Remove what snapbench keeps in the cache folder (it is rebuilt when needed)."""
    from snapbench.cache_folder import clean_cache
    from snapbench.paths import cache_root

    root = cache_root()
    phones: list[dict[str, str | None]] = []
    if device:  # before the cache goes: its runner stamps say which bundle ids were installed
        phones = _clean_phones(ctx, root)
    removed = clean_cache(root)
    freed = sum(e.bytes for e in removed)
    if as_json:
        print_json({"path": str(root), "removed": [e.name for e in removed], "bytes_freed": freed,
                    "phones": phones})
        return
    out.print(f"{root}: removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'}, "
              f"{fmt_count(freed, 'B')} freed")
    for p in phones:
        out.print(f"{p['phone']}: {p['bundle_id']} " + ("removed with its files" if p["error"] is None
                                                       else f"not removed ({p['error']})"), markup=False)


def _clean_phones(ctx: typer.Context, root) -> list[dict[str, str | None]]:
    from snapbench.errors import SnapbenchError
    from snapbench.profilers.phones import iphones, list_attached
    from snapbench.profilers.readiness import Machine, put_devicectl_on_path
    from snapbench.profilers.runner_build import built_bundle_ids, remove_from_phone

    machine = ctx.obj if isinstance(ctx.obj, Machine) else Machine.this()
    ids = built_bundle_ids(root / "modelrunner")
    if not ids:
        raise SnapbenchError(f"no runner app was built under {root / 'modelrunner'}: nothing to remove from a phone")
    put_devicectl_on_path(machine)
    ready = [p for p in iphones(list_attached(machine.shell)) if p.problem() is None]
    if not ready:
        raise SnapbenchError("no iPhone is attached and ready: plug it in, unlock it; see `snapbench doctor`")
    return [{"phone": p.name, "bundle_id": b, "error": remove_from_phone(machine.shell, p.udid, b)}
            for p in ready for b in ids]


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
