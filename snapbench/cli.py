"""The `snapbench` command line: a thin typer layer over plain functions.

Each command lives in snapbench/commands/<name>.py and registers itself on the app. This module only
turns the project's error type (and usage errors) into one stderr line and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import click
import typer

from snapbench import __version__
from snapbench.errors import SnapbenchError

# The commands, in the order `snapbench --help` lists them (the pipeline's order).
COMMAND_MODULES: tuple[str, ...] = (
    "snapbench.commands.inspect",
    "snapbench.commands.convert",
    "snapbench.commands.profile",
    "snapbench.commands.train", "snapbench.commands.ablate", "snapbench.commands.evolve",
    "snapbench.commands.devices", "snapbench.commands.calibrate",
    "snapbench.commands.report",
    "snapbench.commands.validate",
)

app = typer.Typer(
    name="snapbench",
    help="Take a Stable-Diffusion UNet apart for the iPhone: inspect, convert, profile, evolve, report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"snapbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """snapbench: per-block Core ML, latency tables, SnapFusion-style evolution, HTML reports."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def main(argv: list[str] | None = None) -> int:
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="snapbench", standalone_mode=False)
    except SnapbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except click.exceptions.NoArgsIsHelpError as e:
        print(e.format_message() if hasattr(e, "format_message") else str(e), file=sys.stderr)
        return 2
    except click.UsageError as e:
        hint = f" (see 'snapbench {e.ctx.info_name} --help')" if e.ctx and e.ctx.info_name != "snapbench" else ""
        print(f"error: {e.format_message()}{hint}", file=sys.stderr)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


def run() -> None:  # console-script entry point
    sys.exit(main())


if __name__ == "__main__":
    run()
