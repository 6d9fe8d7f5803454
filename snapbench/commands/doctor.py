"""`snapbench doctor`: can this machine measure on an iPhone or this Mac? Every prerequisite, with its fix."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.table import Table

from snapbench.commands.common import JsonOpt, out, print_json
from snapbench.errors import SnapbenchError
from snapbench.profilers.readiness import EVERYWHERE, MEASURING, TEAM_ID_ENV, Machine, run_checks, runnable

_MARK = {True: "ok", False: "FIX", None: "-"}
_WHY_EVERYWHERE = {"estimate": "the Neural Engine cost model runs anywhere",
                   "import": "reads measurements taken elsewhere from a file"}


def doctor_command(
    ctx: typer.Context,
    backend: str = typer.Option("iphone", "--backend", "-b", help="iphone or mac: whose needs decide the exit code."),
    team_id: str | None = typer.Option(None, "--team-id", envvar=TEAM_ID_ENV,
                                          help="Apple Developer team id that will sign coremltools' runner app."),
    as_json: bool = JsonOpt,
) -> None:
    """Check everything `profile --backend iphone|mac` needs (macOS, Xcode, devicectl, signing, the phone,
    coremltools' macOS wheel, disk); exit 0 when the chosen backend's checks pass, 1 otherwise."""
    if backend not in MEASURING:
        raise SnapbenchError(f"--backend {backend!r}: doctor checks iphone or mac ({', '.join(EVERYWHERE)} run anywhere)")
    machine = ctx.obj if isinstance(ctx.obj, Machine) else Machine.this(team_id=team_id)
    checks = run_checks(machine)
    can = runnable(checks)
    ok = can[backend] is None
    if as_json:
        print_json({"backend": backend, "ready": ok, "checks": [asdict(c) for c in checks],
                    "backends": {b: {"runs_here": why is None, "why_not": why} for b, why in can.items()}})
    else:
        t = Table(title=f"snapbench doctor: what profiling with --backend {backend} needs", title_justify="left")
        for col in ("", "check", "found", "fix", "for"):
            t.add_column(col, overflow="fold")
        for c in checks:
            t.add_row(_MARK[c.ok], c.name, c.detail, c.fix if c.ok is False else "", ",".join(c.needed_for))
        out.print(t)
        for b in (*EVERYWHERE, *MEASURING):
            why = can[b]
            out.print(f"  {b:9} " + (f"runs here ({_WHY_EVERYWHERE[b]})" if b in EVERYWHERE and why is None
                                     else "runs here" if why is None else f"cannot run here: {why}"),
                      markup=False, soft_wrap=True)
    if not ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor_command)
