"""The command line sits on top of the library: no library module imports `snapbench.commands` (or the CLI).

`python -m snapbench.x` starters (a module of imports and an `if __name__ == "__main__":` that runs the CLI)
are the CLI's, not the library's."""

from __future__ import annotations

import ast
from pathlib import Path

import snapbench

ROOT = Path(snapbench.__file__).parent


def _is_entry_point(tree: ast.Module) -> bool:
    def starter(node: ast.stmt) -> bool:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            return True
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # docstring
            return True
        return isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
    return all(starter(n) for n in tree.body)


def test_library_code_never_imports_the_commands():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text())
        if rel.parts[0] == "commands" or rel.name in ("cli.py", "__main__.py") or _is_entry_point(tree):
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{rel}:{node.lineno} imports {n}" for n in names
                          if n.startswith(("snapbench.commands", "snapbench.cli"))]
    assert offenders == []


def test_the_check_sees_an_offender():
    bad = ast.parse('"""doc"""\nfrom snapbench.commands.common import err\n\ndef f():\n    return err\n')
    assert not _is_entry_point(bad)
    assert _is_entry_point(ast.parse('"""doc"""\nimport sys\nfrom snapbench.cli import main\n'
                                     'if __name__ == "__main__":\n    sys.exit(main())\n'))
