"""The consoles print with rich markup off (snapbench/console.py), so a spec named "[/bold] x" prints as
written. A markup tag left in a printed string would then show literally: style with `style=` or `Text`."""

from __future__ import annotations

import re
from pathlib import Path

import snapbench
from snapbench.console import err, out

ROOT = Path(snapbench.__file__).parent
TAG = re.compile(r"\[/?(bold|dim|italic|underline|red|green|yellow|blue|cyan|magenta)\]")


def test_the_consoles_read_no_markup(capsys):
    out.print("[/bold] x")
    err.print("[bold]y")
    captured = capsys.readouterr()
    assert "[/bold] x" in captured.out or "[/bold] x" in captured.err


def test_no_markup_tags_in_printed_strings():
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sorted(ROOT.rglob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if TAG.search(line) and not line.lstrip().startswith("#") and "rich would read" not in line
                 and "must print as written" not in line]
    assert offenders == []
