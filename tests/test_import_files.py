"""Import files (`profile --backend import --from FILE`) as people write them: the example in docs/formats.md,
a spreadsheet's byte-order mark, and the mistakes that used to pass silently or with a puzzling message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from snapbench.errors import SnapbenchError
from snapbench.latency.importer import read_import

DOCS = Path(__file__).resolve().parents[1] / "docs" / "formats.md"


def _docs_example() -> str:
    text = DOCS.read_text()
    section = text[text.index("block,latency_ms,p90_ms,samples,device"):]
    return section[:section.index("```")]


def test_the_documented_example_reads(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text(_docs_example())
    rows = read_import(f)
    assert [r.ref for r in rows] == ["CA[Down-1, 1]", "up1_ca2", "text_encoder"]
    assert rows[0].latency_ms == 61.2 and rows[0].p90_ms == 63.0 and rows[0].samples == 20


def test_a_byte_order_mark_is_read(tmp_path):
    f = tmp_path / "m.csv"
    f.write_bytes(b"\xef\xbb\xbf" + _docs_example().encode())
    assert read_import(f)[0].ref == "CA[Down-1, 1]"


@pytest.mark.parametrize("text, words", [
    ("block,latency_ms\nCA[Down-1, 1],61.2\n", 'quote it ("CA[Down-1, 1]")'),
    ("block,latency_ms\nup1_ca2,1e308\n", "over an hour for one prediction"),
    ("block,latency_ms,p90_ms\nup1_ca2,60,50\n", "p90 50 ms is below the median 60 ms"),
    ("block,latency_ms,latency_us\nup1_ca2,60,\ndown1_ca1,,61000\n", "latency_ms and latency_us both give"),
])
def test_mistakes_are_one_line_that_says_what_to_fix(tmp_path, text, words):
    f = tmp_path / "m.csv"
    f.write_text(text)
    with pytest.raises(SnapbenchError) as e:
        read_import(f)
    assert words in str(e.value) and "\n" not in str(e.value)
    assert re.match(re.escape(str(f)), str(e.value))
