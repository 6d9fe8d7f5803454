"""The layers hold: no library module imports `snapbench.commands` (or the CLI); `snapbench.profilers`
(the estimator and the device backends) is a leaf that imports nothing above it; `snapbench.training` (shared
by evolution and distillation) imports neither of them.

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


# What the profilers may import besides themselves: the support modules at the bottom of the house. Not the
# converters, the latency table, calibration, evolution, the report or the CLI: they all sit above it.
PROFILERS_MAY_IMPORT = ("snapbench.profilers", "snapbench.errors", "snapbench.atomic", "snapbench.paths",
                        "snapbench.settings", "snapbench.names", "snapbench.versions", "snapbench.user_files",
                        "snapbench.devices", "snapbench.extras", "snapbench.formatting", "snapbench.console")


def _imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import of the tree, those inside functions and TYPE_CHECKING blocks too."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module or ""))
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _upward_from_profilers(rel: Path, tree: ast.Module) -> list[str]:
    return [f"{rel}:{line} imports {name}" for line, name in _imports(tree)
            if name.startswith("snapbench.") and not _within(name, PROFILERS_MAY_IMPORT)]


def test_library_code_never_imports_the_commands():
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text())
        if rel.parts[0] == "commands" or rel.name in ("cli.py", "__main__.py") or _is_entry_point(tree):
            continue
        offenders += [f"{rel}:{line} imports {name}" for line, name in _imports(tree)
                      if _within(name, ("snapbench.commands", "snapbench.cli"))]
    assert offenders == []


def test_profilers_import_nothing_above_them():
    offenders = []
    for path in sorted((ROOT / "profilers").rglob("*.py")):
        offenders += _upward_from_profilers(path.relative_to(ROOT), ast.parse(path.read_text()))
    assert offenders == []


def test_training_sits_below_evolution_and_distillation():
    above = ("snapbench.evolution", "snapbench.distillation", "snapbench.report", "snapbench.commands")
    offenders = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in sorted((ROOT / "training").rglob("*.py"))
                 for line, name in _imports(ast.parse(path.read_text())) if _within(name, above)]
    assert offenders == []


def test_the_profilers_check_sees_an_offender():
    # a lazy import inside a function counts as much as one at the top
    bad = ast.parse("from snapbench.errors import SnapbenchError\nfrom snapbench import __version__\n"
                    "def f():\n    from snapbench.latency.table import Settings\n    return Settings\n")
    assert _upward_from_profilers(Path("profilers/x.py"), bad) == ["profilers/x.py:4 imports snapbench.latency.table"]
    assert _upward_from_profilers(Path("p.py"), ast.parse("import snapbench.profilersx\n")) == \
        ["p.py:1 imports snapbench.profilersx"]


def test_the_check_sees_an_offender():
    bad = ast.parse('"""doc"""\nfrom snapbench.commands.common import err\n\ndef f():\n    return err\n')
    assert not _is_entry_point(bad)
    assert _is_entry_point(ast.parse('"""doc"""\nimport sys\nfrom snapbench.cli import main\n'
                                     'if __name__ == "__main__":\n    sys.exit(main())\n'))
