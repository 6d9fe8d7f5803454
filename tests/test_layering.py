"""The command line sits on top of the library: no library module imports `snapbench.commands` (or the CLI)."""

from __future__ import annotations

import ast
from pathlib import Path

import snapbench

ROOT = Path(snapbench.__file__).parent
ENTRY_POINTS = ("cli.py", "__main__.py", "train.py")  # `python -m` starters: they run the CLI


def test_library_code_never_imports_the_commands():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "commands" or rel.as_posix() in ENTRY_POINTS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{rel}:{node.lineno} imports {n}" for n in names
                          if n.startswith(("snapbench.commands", "snapbench.cli"))]
    assert offenders == []
