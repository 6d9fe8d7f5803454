"""The two consoles every part of snapbench writes to: results on stdout, messages and progress on stderr.

Library code (converters, evolution, latency, report) imports these from here, never from the command
modules: the CLI sits on top of the library, not the other way round.
"""

from __future__ import annotations

import sys

from rich.console import Console

# Piped output gets a width that fits the stage tables instead of rich's 80-column default.
# markup=False: what is printed quotes user strings (spec names, paths, block ids), and a name such as
# "[/bold] x" must print as written, not be read as a style tag. Styling is explicit: `style=`, `Text`.
out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, markup=False)


def say(message: str) -> None:
    """One plain message line on stderr (no rich markup: messages quote user paths and block ids)."""
    err.print(message, markup=False, soft_wrap=True)
