"""How far to trust an estimate: the leave-one-source-out result, shipped so a report needs no refit.

    doc = load_trust()                       # rows (published vs out-of-sample estimate), summaries
    band = error_band(doc, "A16")            # (low factor, high factor, scope)

`cross_source.json` is written by `python -m snapbench.validation.trust --write` (about a minute: one refit
per source) and stamped with a hash of what it was computed from (corpus, priors, shipped records, fit
code). A stale file is still shown, marked stale.
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from snapbench.atomic import atomic_write_text
from snapbench.json_types import JSONObject

if TYPE_CHECKING:
    from snapbench.validation.run import HeldOutFit

Summary = dict[str, "str | int | float"]  # a summary row: the group, n, median |error| %, within_N_pct ...


class TrustRow(TypedDict):
    """A corpus row: its published figure against the out-of-sample estimate."""

    row: str
    source: str
    family: str
    network: str
    device: str
    chip: str
    weights: str
    trust: str
    harness: str
    published_ms: float
    resolution_ms: float
    engine_ms: float
    app_floor_ms: float
    estimated_ms: float
    error_pct: float


class TrustDoc(TypedDict):
    """cross_source.json, and `stale` (its inputs changed since it was written), added when read."""

    key: str
    cross: str
    params_version: int
    what: str
    overall: Summary
    by_chip: list[Summary]
    by_source: list[Summary]
    ranks: list[Summary]
    fits: list[HeldOutFit]
    unseen_app: JSONObject | None
    rows: list[TrustRow]
    stale: bool


class ErrorBand(TypedDict):
    """Estimated / published between `low` and `high` for 80% of the scored rows of `scope`."""

    scope: str  # the chip, or "all chips"
    n: int
    low: float
    high: float
    median_abs_error_pct: float | None

FILE = "cross_source.json"


def trust_path() -> Path:
    return Path(str(resources.files("snapbench.validation") / FILE))


def inputs_key() -> str:
    """Hash of the data the cross-validation depends on: the corpus, the priors' values (not their notes)
    and the shipped op records. (A change to the model's code calls for `--write` too.)"""
    from snapbench.profilers.estimate.params import default_priors_path
    from snapbench.validation import programs
    from snapbench.validation.corpus import default_corpus_path

    h = hashlib.sha256()
    for p in (default_corpus_path(), programs.bundle_path()):
        h.update(p.read_bytes() if p.is_file() else b"-")
    priors = json.loads(default_priors_path().read_text())
    priors.pop("notes", None)
    h.update(json.dumps(priors, sort_keys=True).encode())
    return h.hexdigest()[:16]


def write_trust(path: Path | None = None) -> Path:
    from snapbench.validation.run import validate

    v = validate(cross="source")
    d = v.to_dict()
    doc = {"key": inputs_key(), "cross": "source", "params_version": v.params_version, "what": d["what"],
           "overall": d["overall"], "by_chip": d["by_chip"], "by_source": d["by_source"], "ranks": d["ranks"],
           "fits": v.fits, "unseen_app": d["unseen_app"],
           "rows": v.rows[["row", "source", "family", "network", "device", "chip", "weights", "trust", "harness",
                           "published_ms", "resolution_ms", "engine_ms", "app_floor_ms", "estimated_ms", "error_pct"]
                          ].to_dict("records")}
    out = path or trust_path()
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    return out


def load_trust() -> TrustDoc | None:
    p = trust_path()
    if not p.is_file():
        return None
    doc: TrustDoc = json.loads(p.read_text())
    doc["stale"] = doc.get("key") != inputs_key()
    return doc


def error_band(doc: TrustDoc, chip: str | None) -> ErrorBand:
    """The 10th-90th percentile of estimated/published over scored rows of `chip` (all chips when it has
    fewer than 5 rows): an estimate E brackets the published figure as E/high .. E/low 80% of the time."""
    rows = [r for r in doc["rows"] if r["trust"] != "low"]
    scoped = [r for r in rows if r["chip"] == chip]
    scope = chip if chip is not None and len(scoped) >= 5 else "all chips"
    use = scoped if len(scoped) >= 5 else rows
    ratio = np.array([1.0 + r["error_pct"] / 100.0 for r in use])  # estimated over the reading judged against
    err = np.abs(np.array([r["error_pct"] for r in use]))
    lo, hi = np.percentile(ratio, [10, 90]) if len(ratio) else (1.0, 1.0)
    return ErrorBand(scope=scope, n=len(use), low=float(lo), high=float(hi),
                     median_abs_error_pct=float(np.median(err)) if len(err) else None)


if __name__ == "__main__":
    import sys

    if "--write" in sys.argv:
        print(write_trust())
