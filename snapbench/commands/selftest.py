"""`snapbench selftest`: the SD-scale commands, end to end, on a tiny random pipeline and CLIP."""

from __future__ import annotations

import typer
from rich.text import Text

from snapbench.commands.common import JsonOpt, err, out, print_json


def selftest_command(
    keep: str | None = typer.Option(None, "--keep", help="Work in this (new or empty) folder and leave it "
                                       "behind: fixtures, outputs, one log per stage. (default: a temporary folder)"),
    processes: int | None = typer.Option(None, "--processes", help="Training processes through `accelerate "
                                            "launch` (one per GPU, or per CPU core with gloo). (default: 2 where "
                                            "there are two, else 1)"),
    as_json: bool = JsonOpt,
) -> None:
    """Run every Stable-Diffusion-scale stage (inspect, convert, profile, train, ablate, evolve, distill,
    distill-decoder, report) on tiny random checkpoints, each timed: a checklist. Exit 0 only when all passed."""
    from snapbench.selftest import selftest

    def started(name: str) -> None:
        err.print(Text.assemble(("running", "dim"), f" {name} ..."))

    def finished(r) -> None:
        cpu = f", {r.cpu_seconds:.1f} s CPU" if r.cpu_seconds is not None else ""
        line = Text.assemble(("ok", "green") if r.ok else ("FAILED", "red"), f" {r.name}  ",
                             (f"{r.seconds:.1f} s{cpu}", "dim"), f"  {r.error}" if r.error else "")
        (out if not as_json else err).print(line)

    result = selftest(keep=keep, processes=processes, on_stage=finished, on_start=started)
    if as_json:
        print_json(result.to_dict())
    else:
        passed = sum(s.ok for s in result.stages)
        out.print(f"{passed}/{len(result.stages)} stages passed in {sum(s.seconds for s in result.stages):.0f} s"
                  + (f"; outputs and logs in {result.work}" if result.kept else ""), highlight=False)
    if not result.ok:
        if result.kept:
            err.print(f"logs: {result.work / 'logs'}", highlight=False)
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("selftest")(selftest_command)
