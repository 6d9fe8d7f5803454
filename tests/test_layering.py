"""The layers hold: no library module imports `snapbench.commands` (or the CLI); `snapbench.profilers`
(the estimator and the device backends) is a leaf that imports nothing above it; `snapbench.training` (shared
by evolution and distillation) imports neither of them; and the packages (and top-level modules) of snapbench
import each other without a loop, so every import points down the pipeline: a family's conversion and
profiling sit with the converters and the latency table (`converters/convert_dit.py`,
`latency/dit_profile.py`), and `--model` is read through the backbones' seam (`backbones.resolve_model`),
not by `model/` reaching up into a family.

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
                        "snapbench.devices", "snapbench.extras", "snapbench.formatting", "snapbench.console",
                        "snapbench.json_types")


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


def _part(module: str) -> str | None:
    """The room a module belongs to: its package under snapbench (`snapbench.dit.cut` -> `dit`), or the
    top-level module itself (`snapbench.paths` -> `paths`); None outside snapbench and for the package face."""
    parts = module.split(".")
    return parts[1] if parts[0] == "snapbench" and len(parts) > 1 else None


def _part_graph(modules: dict[str, ast.Module]) -> dict[str, dict[str, str]]:
    """part -> {imported part: where (file:line)}, every import counted (lazy and TYPE_CHECKING ones too)."""
    graph: dict[str, dict[str, str]] = {}
    for rel, tree in modules.items():
        src = _part("snapbench." + rel.removesuffix(".py").replace("/", "."))
        if src is None or src in ("commands", "cli", "__main__", "__init__"):
            continue
        for line, name in _imports(tree):
            dst = _part(name)
            if dst is not None and dst != src and dst != "__init__":
                graph.setdefault(src, {}).setdefault(dst, f"{rel}:{line}")
    return graph


def _loops(graph: dict[str, dict[str, str]]) -> list[str]:
    """Each import that closes a loop between parts (depth-first search: an edge back to a part on the
    path), as 'a -> b (file:line)'."""
    found: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str) -> None:
        state[node] = 1
        for nxt, where in sorted(graph.get(node, {}).items()):
            if state.get(nxt) == 1:
                found.append(f"{node} -> {nxt} ({where})")
            elif nxt not in state:
                visit(nxt)
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_packages_import_each_other_without_a_loop():
    modules = {str(p.relative_to(ROOT)): ast.parse(p.read_text()) for p in sorted(ROOT.rglob("*.py"))}
    assert _loops(_part_graph(modules)) == []


def test_the_loop_check_sees_a_lazy_import_back_up():
    # model/ reaching up into a family (the DiT) that builds on it: a loop, even when the import is lazy
    modules = {"model/loading.py": ast.parse("def f():\n    from snapbench.dit.source import resolve_dit\n"),
               "dit/source.py": ast.parse("from snapbench.model.loading import ModelSource\n"),
               "dit/cut.py": ast.parse("from snapbench.dit.source import build_meta\n")}
    assert _loops(_part_graph(modules)) == ["model -> dit (model/loading.py:2)"]
    modules["model/loading.py"] = ast.parse("from snapbench.errors import SnapbenchError\n")
    assert _loops(_part_graph(modules)) == []
