"""The `import` backend: latency measurements taken elsewhere, read from a CSV or JSON file.

Format (CSV with a header row, or JSON: a list of objects or {"rows": [...]}; one row per block):

| column | required | meaning |
|---|---|---|
| `block` or `signature` | one of them | a block id as `snapbench inspect` prints it (`CA[Up-1, 2]`), its file id (`up1_ca2`), a pipeline part (`text_encoder`, `vae_decoder`), or a full signature key |
| `latency_ms` | yes (or `latency_us`, `latency_s`) | the median time of one prediction |
| `p90_ms` | no (or `p90_us`, `p90_s`) | 90th percentile |
| `samples` | no (default 1) | how many timed runs the median is of |
| `device` | no | must be the `--device` (id or name) |
| `compute_units`, `precision`, `weight_bits`, `attention`, `batch`, `latent` | no | must equal the profile's settings |
| `notes` | no | free text, kept as the row's source |

Rows for blocks that share one signature (the same computation, so one row of the table) must agree
within 2%: repeated timings of one computation are combined (median), but rows that disagree more are
refused, naming both lines, instead of being averaged into a figure neither measured.

Units are part of the column names: a column such as `latency` or `time` without a unit is an error,
not a guess. Any problem (missing columns, a bad number, a block the model does not have, settings that
differ from the profile's) raises one SnapbenchError naming the file and line.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.user_files import parse_user_json, read_user_text

_UNIT_SCALE = {"ms": 1.0, "us": 1e-3, "s": 1e3}
_SETTING_COLUMNS = ("compute_units", "precision", "weight_bits", "attention", "batch", "latent")
_KNOWN = {"block", "signature", "samples", "device", "notes", *_SETTING_COLUMNS,
          *(f"{m}_{u}" for m in ("latency", "p90") for u in _UNIT_SCALE)}
# Column names that clearly hold a time but say no unit.
_TIME_WORDS = re.compile(r"^(latency|p90|time|median|mean|avg|average|duration|ms|runtime)(_.*)?$")


@dataclass(frozen=True)
class ImportedRow:
    line: int  # 1-based line (CSV) or row number (JSON), for messages
    ref: str  # block id, file id, component name or signature key
    by_signature: bool
    latency_ms: float
    p90_ms: float | None
    samples: int
    device: str | None
    settings: dict[str, str]  # the settings columns the row gave (raw text)
    notes: str
    where: str = "line"  # "line" in a CSV, "row" in a JSON list


# One prediction of one block or component taking longer than this is a typo (1e308 ms), not a measurement.
MAX_PLAUSIBLE_MS = 3_600_000.0


def read_import(path: str | Path) -> list[ImportedRow]:
    p = Path(path)
    text = read_user_text(p, "import file").removeprefix("\ufeff")  # spreadsheets write a byte-order mark
    if p.suffix.lower() == ".json":
        data = parse_user_json(text, str(p))
        records = data.get("rows") if isinstance(data, dict) else data
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SnapbenchError(f"{p}: expected a list of objects or {{\"rows\": [...]}}")
        header = sorted({k for r in records for k in r})
        rows = [(i, {k: ("" if v is None else str(v)) for k, v in r.items()}) for i, r in enumerate(records, 1)]
        where = "row"
    else:
        reader = csv.DictReader(io.StringIO(text))
        header = [h.strip() for h in (reader.fieldnames or [])]
        _check_header(p, header)  # a wrong header explains more than the first row that trips on it
        rows = []
        for line, raw in enumerate(reader, start=2):
            if None in raw:
                raise SnapbenchError(f"{p} line {line}: more fields than the header has" + _comma_hint(raw))
            rows.append((line, {(k or "").strip(): (v or "").strip() for k, v in raw.items()}))
        where = "line"
    _check_header(p, header)
    if not rows:
        raise SnapbenchError(f"{p}: no measurements in the file")
    return [_row(p, where, n, r) for n, r in rows]


def _comma_hint(raw: Mapping[str | None, str | None]) -> str:
    """A block id such as CA[Down-1, 1] split at its comma: say to quote it."""
    values = [v for k, v in raw.items() if k is not None]
    first = (values[0] if values else "") or ""
    if "[" in first and "]" not in first and len(values) > 1:
        return f"; a block id holds a comma: quote it (\"{first},{values[1]}\") or use its file id (down1_ca1)"
    return ""


def _check_header(p: Path, header: list[str]) -> None:
    no_unit = [h for h in header if h not in _KNOWN and _TIME_WORDS.match(h.lower())]
    if no_unit:
        raise SnapbenchError(f"{p}: column {', '.join(no_unit)} has no unit; name it latency_ms (or _us, _s), p90_ms")
    unknown = [h for h in header if h not in _KNOWN]
    if unknown:
        raise SnapbenchError(f"{p}: unknown column {', '.join(unknown)}; see `snapbench profile --help` for the import format")
    units = [f"latency_{u}" for u in _UNIT_SCALE if f"latency_{u}" in header]
    if len(units) > 1:
        raise SnapbenchError(f"{p}: columns {' and '.join(units)} both give the latency; keep one unit per file")
    missing = []
    if "block" not in header and "signature" not in header:
        missing.append("block (or signature)")
    if not any(f"latency_{u}" in header for u in _UNIT_SCALE):
        missing.append("latency_ms")
    if missing:
        raise SnapbenchError(f"{p}: missing column {' and '.join(missing)}")


def _time(p: Path, where: str, n: int, r: dict[str, str], measure: str) -> float | None:
    for unit, scale in _UNIT_SCALE.items():
        cell = r.get(f"{measure}_{unit}", "")
        if cell:
            try:
                v = float(cell)
            except ValueError:
                raise SnapbenchError(f"{p} {where} {n}: {measure}_{unit} {cell!r} is not a number") from None
            if not v >= 0 or v == float("inf"):
                raise SnapbenchError(f"{p} {where} {n}: {measure}_{unit} {cell!r} must be a finite time >= 0")
            if v * scale > MAX_PLAUSIBLE_MS:
                raise SnapbenchError(f"{p} {where} {n}: {measure}_{unit} {cell!r} is over an hour for one "
                                     "prediction; check the number and its unit")
            return v * scale
    return None


def _row(p: Path, where: str, n: int, r: dict[str, str]) -> ImportedRow:
    ref = r.get("signature") or r.get("block") or ""
    if not ref:
        raise SnapbenchError(f"{p} {where} {n}: empty block and signature")
    latency = _time(p, where, n, r, "latency")
    if latency is None:
        raise SnapbenchError(f"{p} {where} {n}: empty latency_ms")
    p90 = _time(p, where, n, r, "p90")
    if p90 is not None and p90 < latency:
        raise SnapbenchError(f"{p} {where} {n}: p90 {p90:g} ms is below the median {latency:g} ms; a 90th "
                             "percentile cannot be; check the columns")
    samples_text = r.get("samples", "") or "1"
    try:
        samples = int(samples_text)
        if samples < 1:
            raise ValueError
    except ValueError:
        raise SnapbenchError(f"{p} {where} {n}: samples {samples_text!r} is not a positive integer") from None
    return ImportedRow(
        line=n, ref=ref, by_signature=bool(r.get("signature")), latency_ms=latency,
        p90_ms=p90, samples=samples, device=r.get("device") or None,
        settings={k: r[k] for k in _SETTING_COLUMNS if r.get(k)}, notes=r.get("notes", ""), where=where,
    )


def check_settings(p: str | Path, row: ImportedRow, expected: Mapping[str, object]) -> None:
    """A row whose settings columns differ from the profile's is refused, naming the first mismatch."""
    for k, text in row.settings.items():
        want = expected[k]
        if str(want).lower() != text.lower():
            raise SnapbenchError(f"{p} {row.where} {row.line}: {k} is {text!r} but this profile uses {want!r}; "
                                 f"profile with the file's settings or fix the file")


# Two timings of one computation closer than this are noise and are combined; farther apart, one of them
# is wrong (another setting, another block than the file says) and averaging would hide it.
CONFLICT_TOLERANCE = 0.02


def refuse_conflicts(p: str | Path, rows: list[ImportedRow]) -> None:
    """`rows` all price one signature; refuse them if their latencies disagree beyond the tolerance."""
    lo = min(rows, key=lambda r: r.latency_ms)
    hi = max(rows, key=lambda r: r.latency_ms)
    if hi.latency_ms - lo.latency_ms > CONFLICT_TOLERANCE * hi.latency_ms:
        a, b = sorted((lo, hi), key=lambda r: r.line)
        refs = f"{a.ref!r} and {b.ref!r} share one signature" if a.ref != b.ref else f"{a.ref!r} appears twice"
        raise SnapbenchError(
            f"{p} {a.where}s {a.line} and {b.line}: {refs} (the same computation) but give "
            f"{a.latency_ms:g} and {b.latency_ms:g} ms; keep the right one (or one row with their median) "
            f"and import again")
