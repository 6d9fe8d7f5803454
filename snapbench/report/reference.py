"""Reference points: published or user-measured latencies shown beside the tool's own figures.

The default file is a copy of the project's `reference/calibration.csv` shipped as package data; `--reference
FILE` replaces it. Rows are kept as written (a reference is a quotation, not an input to fit) and matched to
the report's results by device id, model name and component.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from importlib import resources
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.report.data import ReferenceRow
from snapbench.settings import COMPONENTS
from snapbench.user_files import read_user_text

REQUIRED = ("source", "device", "model", "component", "latency_ms", "per")
OPTIONAL = ("runtime", "attention", "weight_bits", "batch", "notes")
DEFAULT_LABEL = "snapbench/report/reference_points.csv (copy of reference/calibration.csv)"


def load_reference(path: str | Path | None = None) -> tuple[str, list[ReferenceRow]]:
    """(where the rows came from, rows). `None` reads the shipped copy."""
    if path is None:
        text = (resources.files("snapbench.report") / "reference_points.csv").read_text()
        return DEFAULT_LABEL, parse_reference(text, DEFAULT_LABEL)
    p = Path(path)
    if p.is_dir():
        raise SnapbenchError(f"{p}: --reference must be a CSV file, not a folder")
    text = read_user_text(p, "reference file")
    return str(p), parse_reference(text, str(p))


def parse_reference(text: str, source: str) -> list[ReferenceRow]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise SnapbenchError(f"{source}: missing column(s) {', '.join(missing)}; "
                             f"a reference file has {', '.join(REQUIRED + OPTIONAL)}")
    rows: list[ReferenceRow] = []
    for line, raw in enumerate(reader, start=2):
        cell = {k: (raw.get(k) or "").strip() for k in REQUIRED + OPTIONAL}
        try:
            ms = float(cell["latency_ms"])
        except ValueError:
            raise SnapbenchError(f"{source} line {line}: latency_ms {raw.get('latency_ms')!r} "
                                 "is not a number") from None
        if cell["component"] not in COMPONENTS:
            raise SnapbenchError(f"{source} line {line}: component {cell['component']!r}; "
                                 f"expected one of {', '.join(COMPONENTS)}")
        rows.append({"source": cell["source"], "device": cell["device"], "model": cell["model"],
                     "component": cell["component"], "latency_ms": ms, "per": cell["per"],
                     "runtime": cell["runtime"], "attention": cell["attention"], "weight_bits": cell["weight_bits"],
                     "batch": cell["batch"], "notes": cell["notes"], "line": line})
    return rows


def settings_differences(ref: ReferenceRow, settings: Mapping[str, object]) -> list[str]:
    """The stated UNet settings of a reference row that differ from the report's.

    Only UNet rows are compared: attention, weight bits and batch are UNet settings, while text encoder and
    decoder figures are per run / per image whatever the report's batch. Unstated settings cannot differ.
    """
    if ref["component"] != "unet":
        return []
    diffs = []
    for key in ("attention", "weight_bits", "batch"):
        stated = str(ref.get(key, "")).strip()
        if not stated or stated.lower() in ("not stated", "unknown", "-"):
            continue
        ours = str(settings.get(key, ""))
        if stated != ours:
            diffs.append(f"{key} {stated} there, {ours} here")
    return diffs
