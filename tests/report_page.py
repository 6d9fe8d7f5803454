"""What the report's browser tests share: headless Chromium's path, flags and marks, and the check that every
number a page prints is the number its JSON holds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from snapbench.report.render import FORMATTERS

CHROMIUM = "/usr/bin/chromium"
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"{CHROMIUM} missing (`make browser` installs Debian's chromium)"),
]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
CELLS_JS = "els => els.map(e => [e.dataset.json, e.dataset.value, e.dataset.fmt, e.innerText.trim()])"


def json_at(data: Any, path: str) -> Any:
    """The value at a data-json path; None where the path passes through a missing part (a DiT's budget)."""
    for part in path.split("."):
        if data is None:
            return None
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def assert_cells_match(cells: list[list[str]], data: Any) -> None:
    """Each [data-json path, data-value, data-fmt, text] cell shows its JSON value, formatted as it says."""
    for path, value, fmt, text in cells:
        expected = json_at(data, path)
        if expected is None:
            assert value == "" and text == "\u2014", path
            continue
        assert math.isclose(float(value), float(expected), rel_tol=1e-12), path
        assert text == FORMATTERS[fmt](expected), (path, text)
