"""Every file the code and the docs cite exists in the repository, and nothing cites a file that is not
part of it (the old `DESIGN.md`, `../shared/...`)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Repository paths as the text spells them: docs/x.md, snapbench/a/b.py, benchmarks/x.py, tests/x.py ...
CITED = re.compile(r"(?<![\w/.<-])((?:docs|snapbench|benchmarks|tests)/[\w./-]*\.(?:md|py|json|csv|j2|css))\b")


def _texts() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("snapbench", "benchmarks"):
        for pattern in ("*.py", "*.json", "*.md", "*.j2"):
            files += sorted((ROOT / folder).rglob(pattern))
    return [f for f in files if f.is_file()]


def test_every_cited_file_exists():
    missing = []
    cited = 0
    for f in _texts():
        for m in CITED.finditer(f.read_text(errors="replace")):
            cited += 1
            if not (ROOT / m.group(1)).exists():
                missing.append(f"{f.relative_to(ROOT)} cites {m.group(1)}")
    assert cited > 30  # the pattern finds what it should
    assert not missing, "\n".join(missing)


def test_nothing_cites_files_outside_the_repository():
    bad = []
    for f in _texts():
        text = f.read_text(errors="replace")
        for word in ("DESIGN.md", "../shared/"):
            if word in text:
                bad.append(f"{f.relative_to(ROOT)}: {word}")
    assert not bad, "\n".join(bad)


def test_docs_cover_each_file_format_with_its_versioned_name():
    formats = (ROOT / "docs" / "formats.md").read_text()
    from snapbench.converters.manifest import FORMAT as MANIFEST
    from snapbench.evolution.evolve import STATE_FORMAT
    from snapbench.latency.document import FORMAT as PROFILE
    from snapbench.specs.arch_spec import FORMAT as ARCH

    for name in (ARCH, MANIFEST, PROFILE, STATE_FORMAT, "snapbench.trajectory/1", "snapbench.latency-table/1"):
        assert f"`{name}`" in formats, name
    # the example table header is the table's real column set
    from snapbench.latency.table import COLUMNS

    assert ",".join(COLUMNS) in formats
