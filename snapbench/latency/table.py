"""The latency lookup table: one row per (device, settings, block signature, backend).

It is what architecture evolution reads (millions of lookups) and what every report's numbers come from,
so it is a plain CSV a person can open, with units in the column names, and an in-memory index that makes
`lookup` one dict access.

Provenance is never lost. A key may hold several rows, one per backend (an `estimate` row next to an
`iphone` measurement of the same signature): `lookup` returns the most trustworthy one (measured on a
device > imported > estimated) and keeping the others lets calibration compare estimates with
measurements. Merging replaces a row only with a newer row of the same key *and* backend.

Shipped tables live at `latency_tables/<device>/<table>.csv` in the repository.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import pandas as pd

from snapbench.atomic import atomic_write_text
from snapbench.errors import SnapbenchError
from snapbench.locks import file_lock
from snapbench.settings import ATTENTIONS, BACKENDS, COMPUTE_UNITS, PRECISIONS, WEIGHT_BITS, RunSettings, check_choice  # noqa: F401 re-exported
from snapbench.specs.stages import STAGES
from snapbench.user_files import read_user_text

# Higher wins in `lookup`: a measurement on the device beats one typed in from elsewhere, which beats
# the cost model. iphone and mac never compete for one key (they are different devices).
BACKEND_RANK: dict[str, int] = {"iphone": 3, "mac": 3, "import": 2, "estimate": 1}
MEASURED_BACKENDS = frozenset({"iphone", "mac", "import"})

# The settings of a row: one type for the whole pipeline, defined low (torch-free) in `snapbench.settings`.
Settings = RunSettings


@dataclass(frozen=True)
class LatencyRow:
    device: str  # catalog id
    chip: str
    backend: str  # iphone | mac | import | estimate
    compute_units: str
    precision: str
    weight_bits: int
    attention: str
    stage: str  # paper stage, or "-" for pipeline components (text_encoder, vae_decoder)
    block: str  # a block id such as "CA[Up-1, 2]" (the first block seen with this signature) or a component
    signature: str  # Signature.key(), or "component|..." for a pipeline part
    latency_ms: float  # median
    p90_ms: float | None  # None where the backend gives no spread (estimate, single imported figure)
    samples: int  # 0 for estimates
    macs: int
    params: int
    bytes_moved: int | None  # estimator's DRAM traffic; None where unknown
    versions: str  # "snapbench=0.1.0;coremltools=9.0;..."
    created_at: str  # ISO 8601, UTC
    batch: int = 2
    latent: int = 64
    placement: str = ""  # ops per compute unit from the compute plan, e.g. "ane=120;cpu=2" ("" = unknown)
    source: str = ""  # where the figure came from: an import file, a device name, the estimator version
    first_load_ms: float | None = None  # measured: first load on the device (the Neural Engine compile)
    warm_load_ms: float | None = None  # measured: a second load right after
    os_build: str = ""  # measured: the device's OS build; a rerun on another build measures again

    @property
    def settings(self) -> Settings:
        return Settings(self.compute_units, self.precision, self.weight_bits, self.attention, self.batch,
                        self.latent)

    @property
    def key(self) -> tuple:
        return (self.device, self.settings.key, self.signature)

    @property
    def measured(self) -> bool:
        return self.backend in MEASURED_BACKENDS


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LatencyRow))
_INT_COLUMNS = frozenset({"weight_bits", "samples", "macs", "params", "batch", "latent"})
_OPTIONAL_INT = frozenset({"bytes_moved"})
_FLOAT_COLUMNS = frozenset({"latency_ms"})
_OPTIONAL_FLOAT = frozenset({"p90_ms", "first_load_ms", "warm_load_ms"})
# Columns a table must have; the trailing ones (defaults in LatencyRow) may be absent in older files.
REQUIRED_COLUMNS: tuple[str, ...] = COLUMNS[: COLUMNS.index("created_at") + 1]


def _stage_order(stage: str) -> int:
    return STAGES.index(stage) if stage in STAGES else len(STAGES)


class LatencyTable:
    """Rows indexed by (device, settings, signature) -> best row, plus every row by (key, backend)."""

    def __init__(self, rows: Iterable[LatencyRow] = ()) -> None:
        self._rows: dict[tuple, LatencyRow] = {}  # (device, settings, signature, backend) -> row
        self._best: dict[tuple, LatencyRow] = {}  # (device, settings, signature) -> best row
        self._by_key: dict[tuple, dict[str, LatencyRow]] = {}  # (device, settings, signature) -> backend -> row
        for row in rows:
            self._put(row)

    # construction -----------------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> LatencyTable:
        return cls()

    @classmethod
    def from_rows(cls, rows: Iterable[LatencyRow]) -> LatencyTable:
        return cls(rows)

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table CSV; a corrupt or hand-edited file raises SnapbenchError naming file and line."""
        p = Path(path)
        return cls(parse_rows(read_user_text(p, "latency table"), str(p)))

    @classmethod
    def load_or_empty(cls, path: str | Path) -> LatencyTable:
        return cls.load(path) if Path(path).exists() else cls()

    # writing ----------------------------------------------------------------------------------------
    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for row in self.rows():
            w.writerow([_format(getattr(row, c)) for c in COLUMNS])
        return buf.getvalue()

    def save(self, path: str | Path) -> Path:
        """Replace the file with this table. Where other processes may write the same file, use
        `merge_into_file` instead (this alone would drop the rows they wrote since we read it)."""
        return atomic_write_text(path, self.to_csv())

    # queries ----------------------------------------------------------------------------------------
    def lookup(self, device_id: str, settings: Settings, signature_key: str) -> LatencyRow | None:
        """The most trustworthy row for this key, or None. One dict access."""
        return self._best.get((device_id, settings._key, signature_key))

    def lookup_backend(self, device_id: str, settings: Settings, signature_key: str,
                       backend: str) -> LatencyRow | None:
        return self._rows.get((device_id, settings._key, signature_key, backend))

    def rows(self) -> list[LatencyRow]:
        """Every row (all backends), in a stable order: device, settings, stage, block, backend."""
        return sorted(self._rows.values(), key=lambda r: (
            r.device, r.compute_units, r.precision, r.weight_bits, r.attention, r.batch, r.latent,
            _stage_order(r.stage), r.block, r.signature, -BACKEND_RANK.get(r.backend, 0), r.backend))

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[LatencyRow]:
        return iter(self.rows())

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows()], columns=list(COLUMNS))

    # combining --------------------------------------------------------------------------------------
    def merge(self, other: LatencyTable | Iterable[LatencyRow]) -> LatencyTable:
        """A new table with both tables' rows. For one key and backend the newer row wins; rows of other
        backends stay (lookup picks measured > imported > estimated)."""
        merged = LatencyTable(self._rows.values())
        for row in (other.rows() if isinstance(other, LatencyTable) else other):
            merged._put(row)
        return merged

    def _put(self, row: LatencyRow) -> None:
        if row.backend not in BACKEND_RANK:
            raise SnapbenchError(f"backend {row.backend!r} is not one of {', '.join(BACKENDS)}")
        key = row.key
        by_backend = self._by_key.setdefault(key, {})
        old = by_backend.get(row.backend)
        if old is not None and old.created_at > row.created_at:
            return  # an older copy of a row we already hold
        by_backend[row.backend] = row
        self._rows[(*key, row.backend)] = row
        self._best[key] = max(by_backend.values(), key=_rank_key)

def merge_into_file(path: str | Path, rows: LatencyTable | Iterable[LatencyRow]) -> LatencyTable:
    """Add `rows` to the table file at `path` under its lock: the file is read again and merged, so two
    runs writing one table (an 8-bit and a 4-bit profile) both keep their rows. Returns what was written."""
    with file_lock(path, "latency table"):
        merged = LatencyTable.load_or_empty(path).merge(rows)
        merged.save(path)
    return merged


def _rank_key(row: LatencyRow) -> tuple:
    return (BACKEND_RANK[row.backend], row.created_at)


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back to the same float: loading is exact
    return str(value)


def parse_rows(text: str, source: str) -> list[LatencyRow]:
    """Parse a table CSV strictly: every problem is reported with the file and the line."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise SnapbenchError(f"{source} line 1: not a latency table: missing columns {', '.join(missing)}")
    unknown = [c for c in header if c not in COLUMNS]
    if unknown:
        raise SnapbenchError(f"{source} line 1: unknown columns {', '.join(unknown)}")
    rows: list[LatencyRow] = []
    seen: dict[tuple, int] = {}
    for line, raw in enumerate(reader, start=2):
        if None in raw:
            raise SnapbenchError(f"{source} line {line}: more fields than the header has")
        values: dict[str, Any] = {}  # keyword arguments of LatencyRow, each parsed for its column
        for col in header:
            cell = raw.get(col)
            if cell is None:
                raise SnapbenchError(f"{source} line {line}: missing field {col!r}")
            values[col] = _parse_cell(col, cell.strip(), source, line)
        try:
            row = LatencyRow(**values)
            if row.backend not in BACKEND_RANK:
                raise SnapbenchError(f"backend {row.backend!r} is not one of {', '.join(BACKENDS)}")
            row.settings  # validates compute units, precision, bits, attention
        except SnapbenchError as e:
            raise SnapbenchError(f"{source} line {line}: {e}") from None
        if not row.signature or not row.device:
            raise SnapbenchError(f"{source} line {line}: empty device or signature")
        full = (*row.key, row.backend)
        if full in seen:
            raise SnapbenchError(f"{source} line {line}: duplicates line {seen[full]} "
                                 f"(same device, settings, signature and backend)")
        seen[full] = line
        rows.append(row)
    return rows


def _parse_cell(col: str, cell: str, source: str, line: int) -> int | float | str | None:
    try:
        if col in _INT_COLUMNS:
            return int(cell)
        if col in _OPTIONAL_INT:
            return int(cell) if cell else None
        if col in _FLOAT_COLUMNS or col in _OPTIONAL_FLOAT:
            if not cell and col in _OPTIONAL_FLOAT:
                return None
            v = float(cell)
            if not math.isfinite(v) or v < 0:
                raise ValueError
            return v
    except ValueError:
        raise SnapbenchError(f"{source} line {line}: column {col}: {cell!r} is not a valid "
                             f"{'integer' if col in _INT_COLUMNS | _OPTIONAL_INT else 'non-negative number'}") from None
    return cell

