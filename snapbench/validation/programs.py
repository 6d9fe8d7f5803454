"""The program each corpus row prices: its network's op records, with the row's stored weights.

Records come from, in order: the bundle shipped with snapbench (`corpus_ops.json.gz`, so `validate` runs
offline in seconds), the zoo cache (`.snapbench-cache/zoo/`), or a conversion now (`convert=True`).
Rows with the same network and input share one conversion. Rebuild the bundle after changing the corpus:

    python -m snapbench.validation.programs --ship        # converts what is missing first (minutes)
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate.program_ops import RECORDS_VERSION, OpRecord
from snapbench.validation.corpus import CorpusRow

BUNDLE = "corpus_ops.json.gz"


def bundle_path() -> Path:
    return Path(str(resources.files("snapbench.validation") / BUNDLE))


def _key(network: str, shape: str) -> str:
    return f"{network}|{shape}"


def require_bundle() -> None:
    """The bundle is package data: an install without it is broken, and pricing the corpus without it would
    re-convert dozens of networks for minutes (and fail without the zoo extra). Say so instead."""
    if not bundle_path().is_file():
        raise SnapbenchError(f"{bundle_path()} is missing: this install of snapbench is incomplete (reinstall it; "
                             "in a checkout, python -m snapbench.validation.programs --ship rebuilds it)")


@lru_cache(maxsize=1)
def shipped_records() -> dict[str, tuple[OpRecord, ...]]:
    """The shipped bundle ({} when missing or of another record format)."""
    p = bundle_path()
    if not p.is_file():
        return {}
    try:
        doc = json.loads(gzip.decompress(p.read_bytes()))
    except (OSError, ValueError):
        return {}
    if doc.get("records_version") != RECORDS_VERSION:
        return {}
    return {k: tuple(OpRecord.from_json(r) for r in ops) for k, ops in doc["programs"].items()}


def network_records_for(row: CorpusRow, *, convert: bool) -> tuple[OpRecord, ...] | None:
    """The fp16 records of a row's network: shipped, cached, or (convert=True) converted now."""
    from snapbench.zoo.programs import cached_records, network_records

    found = shipped_records().get(_key(row.network, row.input))
    if found is not None:
        return found
    cached = cached_records(row.network, row.input or None)
    if cached is not None:
        return tuple(cached)
    if not convert:
        return None
    return tuple(network_records(row.network, row.input or None))


def distinct_networks(rows: Sequence[CorpusRow]) -> list[tuple[str, str]]:
    """(network, input) of every rebuildable row, once each, in corpus order."""
    seen: dict[tuple[str, str], None] = {}
    for r in rows:
        if r.network and not r.skip:
            seen.setdefault((r.network, r.input), None)
    return list(seen)


def records_by_network(rows: Sequence[CorpusRow], *, convert: bool,
                       on_network: Callable[[str, str, str], None] | None = None,
                       ) -> tuple[dict[tuple[str, str], tuple[OpRecord, ...]], dict[tuple[str, str], str]]:
    """Records per distinct network, and why the others have none (not converted, conversion failed)."""
    got: dict[tuple[str, str], tuple[OpRecord, ...]] = {}
    missing: dict[tuple[str, str], str] = {}
    for net, shape in distinct_networks(rows):
        row = next(r for r in rows if (r.network, r.input) == (net, shape))
        if on_network:
            on_network(net, shape, "start")
        try:
            recs = network_records_for(row, convert=convert)
        except SnapbenchError as exc:
            missing[(net, shape)] = f"conversion failed: {exc}"
        except Exception as exc:  # a library's own failure on one network must not end the run
            missing[(net, shape)] = f"conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
        else:
            if recs is None:
                missing[(net, shape)] = "not converted yet (run validate without --no-convert)"
            else:
                got[(net, shape)] = recs
        if on_network:
            on_network(net, shape, "done")
    return got, missing


def write_bundle(rows: Sequence[CorpusRow], path: Path | None = None) -> Path:
    from snapbench.atomic import atomic_write_bytes

    got, missing = records_by_network(rows, convert=True)
    doc = {"records_version": RECORDS_VERSION,
           "programs": {_key(n, s): [r.to_json() for r in recs] for (n, s), recs in got.items()},
           "missing": {_key(n, s): why for (n, s), why in missing.items()}}
    out = path or bundle_path()
    atomic_write_bytes(out, gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0))
    shipped_records.cache_clear()
    return out


if __name__ == "__main__":
    import sys

    from snapbench.validation.corpus import load_corpus

    if "--ship" in sys.argv:
        print(write_bundle(load_corpus()))
