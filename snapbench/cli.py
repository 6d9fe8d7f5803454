"""The `snapbench` command line: a thin typer layer over plain functions.

Each command lives in snapbench/commands/<name>.py and registers itself on the app. This module only
turns the project's error type (and usage errors) into one stderr line and exit code 2.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import sys
from types import ModuleType
from typing import Any

import typer

_typer_click: ModuleType | None
_click: ModuleType | None
try:  # typer >= 0.22 raises the exceptions of its bundled click copy; older typer raises click's own
    import typer._click as _typer_click
except ImportError:  # pragma: no cover - older typer
    _typer_click = None
try:
    import click as _click
except ImportError:  # pragma: no cover - newer typer does not depend on click
    _click = None

from snapbench import __version__, interrupts
from snapbench.errors import SnapbenchError
from snapbench.locks import cache_in_use
from snapbench.paths import cache_root
from snapbench.size_limits import size_limits_lifted

NO_SIZE_LIMIT = "--no-size-limit"

# The commands, in the order `snapbench --help` lists them (the pipeline's order).
COMMAND_MODULES: tuple[str, ...] = (
    "snapbench.commands.inspect",
    "snapbench.commands.convert",
    "snapbench.commands.compress",
    "snapbench.commands.profile",
    "snapbench.commands.doctor", "snapbench.commands.farm",
    "snapbench.commands.train", "snapbench.commands.ablate", "snapbench.commands.evolve",
    "snapbench.commands.distill", "snapbench.commands.distill_decoder", "snapbench.commands.sample",
    "snapbench.commands.devices", "snapbench.commands.calibrate",
    "snapbench.commands.report",
    "snapbench.commands.cache",
    "snapbench.commands.selftest",
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
    no_size_limit: bool = typer.Option(
        False, NO_SIZE_LIMIT,
        help="Build networks past the size bound (20 B parameters, one activation of 2^32 elements), which no "
             "real model reaches; it guards against configs that would fill memory. Accepted anywhere on the "
             "command line."),
) -> None:
    """snapbench: per-block Core ML, latency tables, SnapFusion-style evolution, HTML reports."""


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)


def _escape_help_markup(typer_app: typer.Typer) -> None:
    """Help texts say "[default: main]" and "[toy: 8, clip: 1]"; rich markup would read those as style tags
    and print nothing. Escape them once, here, so every command's help shows what it says."""
    import inspect

    from rich.markup import escape

    done: set[int] = set()  # options shared by several commands (--variant, --latent) are escaped once
    for info in typer_app.registered_commands:
        if info.callback is None:
            continue
        if info.help is None and info.callback.__doc__:
            info.help = escape(inspect.cleandoc(info.callback.__doc__))
        elif info.help:
            info.help = escape(info.help)
        for param in inspect.signature(info.callback).parameters.values():
            default = param.default
            if isinstance(default, typer.models.ParameterInfo) and id(default) not in done:
                done.add(id(default))
                if default.help:
                    default.help = escape(default.help)


_escape_help_markup(app)


def _flags_show_no_type(command: Any) -> None:
    """typer prints a type beside every option, "<bool>" beside a flag, which takes no value. Blank it on
    every flag of every command and group, the root's own and the --help option typer adds included."""
    ctx = command.context_class(command)
    for param in [*command.params, command.get_help_option(ctx)]:
        if param is not None and getattr(param, "is_flag", False):
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _flags_show_no_type(sub)

_CLICKS = tuple(m.exceptions for m in (_typer_click, _click) if m is not None)
# Each family's classes: an error raised by either click copy is caught the same way.
USAGE_ERRORS: tuple[type[Exception], ...] = tuple(m.UsageError for m in _CLICKS)
NO_ARGS_IS_HELP: tuple[type[Exception], ...] = tuple(m.NoArgsIsHelpError for m in _CLICKS
                                                     if hasattr(m, "NoArgsIsHelpError"))
EXITS: tuple[type[Exception], ...] = (typer.Exit, *(m.Exit for m in _CLICKS if hasattr(m, "Exit")))
ABORTS: tuple[type[BaseException], ...] = (typer.Abort, *(m.Abort for m in _CLICKS if hasattr(m, "Abort")))
INTERRUPTS: tuple[type[BaseException], ...] = (*ABORTS, KeyboardInterrupt)


def usage_message(e: Exception) -> str:
    """A usage error as the command's usage line and one `error:` line that keeps click's suggestion
    ("Did you mean 'profile'?", "Possible options: --model") and points at the command's --help."""
    ctx = getattr(e, "ctx", None)
    usage = ctx.get_usage().strip() if ctx is not None else ""
    path = ctx.command_path if ctx is not None else "snapbench"
    lines = [usage] if usage else []
    lines.append(f"error: {e.format_message()} (see '{path} --help')")  # type: ignore[attr-defined]
    return "\n".join(lines)


# What the machine refuses rather than what snapbench got wrong: a full disk, a read-only or forbidden folder.
_FILESYSTEM_HINTS = {
    errno.ENOSPC: "free some space or write elsewhere (--out, --tables, $SNAPBENCH_CACHE), then run the same command "
                  "again; finished work is kept",
    errno.EDQUOT: "over the disk quota; free some space or write elsewhere, then run the same command again",
    errno.EFBIG: "file size limit reached (ulimit -f); raise it or write elsewhere, then run the same command again",
    errno.EROFS: "choose a writable folder (--out, --tables, $SNAPBENCH_CACHE)",
    errno.EACCES: "choose a writable folder (--out, --tables, $SNAPBENCH_CACHE)",
    errno.EPERM: "choose a writable folder (--out, --tables, $SNAPBENCH_CACHE)",
}


def filesystem_error_line(e: OSError) -> str | None:
    """One line for a disk-full / read-only / permission error (None: another OSError, a bug to show)."""
    hint = _FILESYSTEM_HINTS.get(e.errno or 0)
    if hint is None:
        return None
    where = e.filename if e.filename is not None else "writing"
    return f"{where}: {e.strerror or os.strerror(e.errno or 0)}; {hint}"


def main(argv: list[str] | None = None, *, obj: object = None) -> int:
    """Run one command; `obj` reaches commands as `ctx.obj` (tests hand fakes in this way, e.g. `profile`'s
    `ProfileTools`)."""
    command = typer.main.get_command(app)
    _flags_show_no_type(command)
    interrupts.reset()
    args = list(sys.argv[1:] if argv is None else argv)
    # the size bound's switch is read wherever it stands (the refusal says "add --no-size-limit")
    lifted = NO_SIZE_LIMIT in args and "--" not in args[:args.index(NO_SIZE_LIMIT)]
    if lifted:
        args.remove(NO_SIZE_LIMIT)
    try:
        # Not standalone: typer then *returns* exit codes (typer.Exit(1) of a failed run, and 130 for the
        # KeyboardInterrupt it catches itself) instead of raising them.
        # every run but `cache` marks the cache in use, so `cache clean` refuses to delete under it
        in_use = contextlib.nullcontext() if args[:1] == ["cache"] else cache_in_use(cache_root())
        with size_limits_lifted(lifted), in_use:
            rv = command.main(args=args, prog_name="snapbench", standalone_mode=False, obj=obj)
    except SnapbenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except NO_ARGS_IS_HELP:
        return 2  # the help was printed already
    except USAGE_ERRORS as e:
        print(usage_message(e), file=sys.stderr)
        return 2
    except EXITS as e:
        rv = int(getattr(e, "exit_code", 0) or 0)
    except INTERRUPTS:
        print(interrupts.interrupted_line(), file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as e:
        line = filesystem_error_line(e)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 2
    code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
    if code == 130:
        print(interrupts.interrupted_line(), file=sys.stderr)
    return code


def run() -> None:  # console-script entry point
    try:
        code = main()
    except KeyboardInterrupt:  # between typer's handler and ours (e.g. while a finally block cleans up)
        print(interrupts.interrupted_line(), file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    run()
