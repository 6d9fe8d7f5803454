"""README figures that the code prints are checked against the code, so they cannot drift: each block between
`<!-- figures: NAME -->` and `<!-- /figures -->` must equal what `FIGURES[NAME]()` renders now.

After a change that moves a figure, rewrite the blocks with
    SNAPBENCH_UPDATE_README=1 .venv/bin/python -m pytest tests/test_readme_figures.py
and say in the commit why the figures moved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- figures: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /figures -->)", re.S)


def calibrate_report() -> str:
    """`snapbench calibrate --report` as a Markdown table (the same rounding the command prints)."""
    from snapbench.calibration.fit import calibration_report, load_points
    from snapbench.profilers.estimate.params import load_params

    params = load_params()
    table = calibration_report(params, load_points(None))
    lines = [f"`snapbench calibrate --report`, parameters v{params.version} (all figures estimated; published "
             "figures from the SnapFusion paper and Apple's ml-stable-diffusion README):", "",
             "| reference | settings | published ms | estimated ms | error |", "|---|---|---|---|---|"]
    lines += [f"| {r.reference} | {r.settings} | {r.published_ms:g} | {r.estimated_ms:.1f} | {r.error_pct:+.1f}% |"
              for r in table.itertuples()]
    lines += ["", f"mean |error| {table['error_pct'].abs().mean():.1f}%"]
    return "\n".join(lines) + "\n"


FIGURES: dict[str, Callable[[], str]] = {"calibrate-report": calibrate_report}


def test_readme_figures_are_what_the_code_prints():
    text = README.read_text()
    blocks = {m["name"]: m for m in BLOCK.finditer(text)}
    assert set(blocks) == set(FIGURES), "each generated block appears once in the README"
    rendered = {name: make() for name, make in FIGURES.items()}
    if os.environ.get("SNAPBENCH_UPDATE_README"):
        README.write_text(BLOCK.sub(lambda m: m.group(1) + rendered[m["name"]] + m.group(4), text))
        return
    for name, m in blocks.items():
        assert m["body"] == rendered[name], f"README block {name!r} drifted; now:\n{rendered[name]}"


@pytest.mark.slow
def test_the_default_report_headline_in_the_readme(tmp_path):
    """`snapbench report` (the README's "Default report") prints the speedups and seconds per image the README
    quotes (it said 44.3x while the code printed 44.2x)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "snapbench", "report", "--out", str(tmp_path / "r.html")],
                       capture_output=True, text=True, timeout=900, cwd=tmp_path,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr[-2000:]
    m = re.search(r"(\d+\.\dx end to end, \d+\.\dx per UNet step)", r.stderr)
    assert m, r.stderr[-2000:]
    text = README.read_text()
    assert f"; {m.group(1)};" in text
    for model, seconds in re.findall(r"^(\w+) on iphone14pro: .*?, ([\d.]+) s per image", r.stderr, re.M):
        assert re.search(rf"^\| {model} \|.*\| {re.escape(seconds)} \(", text, re.M), (model, seconds)
