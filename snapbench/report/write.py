"""Write a report's HTML (and, on request, its data as JSON beside it), atomically and with clear errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

from snapbench.atomic import atomic_write_text, check_writable
from snapbench.errors import SnapbenchError
from snapbench.report.data import ReportData
from snapbench.report.render import render_html


def check_out_path(out: str | Path) -> Path:
    """Fail before any work is done if the report cannot be written where asked."""
    p = Path(out)
    if p.is_dir() or str(out).endswith(("/", os.sep)):
        raise SnapbenchError(f"{out}: --out is a folder; give a file name such as {Path(out) / 'report.html'}")
    if p.suffix.lower() == ".json":
        raise SnapbenchError(f"{out}: --out names the HTML file; --json writes the data beside it as .json")
    check_writable(p, "choose another --out")
    if p.exists() and not os.access(p, os.W_OK) and not os.access(p.parent, os.W_OK):
        raise SnapbenchError(f"{out}: file is not writable")
    return p


def write_report(data: ReportData, out: str | Path, *, with_json: bool = False) -> tuple[Path, Path | None]:
    """Render first, then write: a failed render leaves no file behind, a write never leaves half a file."""
    p = check_out_path(out)
    html = render_html(data)
    text = json.dumps(data.to_dict(), indent=2, default=str) + "\n" if with_json else None
    json_path = p.with_suffix(".json") if with_json else None
    try:
        for path, content in ((p, html), (json_path, text)):
            if path is not None and content is not None:
                atomic_write_text(path, content)  # with a plain file's permissions: a report is for sharing
    except OSError as e:
        raise SnapbenchError(f"{e.filename or p}: cannot write the report ({e.strerror or e})") from None
    return p, json_path

