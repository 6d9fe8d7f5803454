"""The corpus of published Core ML latencies the estimator is judged on (package data `corpus.csv`).

Each row: one published latency, the network that produced it (a `snapbench.zoo` name and input shape;
empty when it cannot be rebuilt, with `skip` saying why), the device (a catalog id), compute units,
stored weights, the statistic, and a trust grade. Figures and settings are carried from
`reference/ane-corpus.csv` (the published sources named in `ref`); rows the reference grades
medium-low or low are `low` here and are reported, never fitted.

Columns (all required; `network`, `input`, `skip` may be empty):
    row, source, ref, family, network, input, device, compute_units, weights, statistic, harness, latency_ms,
    trust, skip
and one optional column, `resolution_ms`: the step the source printed or timed its figure to, where the
source states one (S15's integer-ms means: 1; S20's 0.1 ms timer: 0.1). Empty or absent: the figure as
printed. A row is judged against the nearest value that prints as its figure (`fit.reading_ms`).

`harness`: xcode (Xcode's performance report: the engine's time) | app (predictions timed in an app loop:
each also pays the call's own overhead, `call_overhead_ms`) | not stated (priced as app: the common case).

Where two published networks convert to the same program, their rows name one network: VGG with
BatchNorm folds the norm into its convs (the plain VGG program); MobileCLIP S1 and S2 share one text
tower, S3, L/14 and S4 another (identical open_clip text configs).

`weights`: fp16 | fp32 | pal1..pal8 (palettized; `gN` suffix: a table per group of N output channels, a bare
`g` coremltools' default group of 32) | w8 (int8 weights) |
w8a8 (int8 weights and activations) | sparse50/75/90 (pruned) | mixed-int8.
`compute_units`: all | cpuAndNeuralEngine | cpuAndGPU | not stated.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.user_files import read_user_text

COLUMNS = ("row", "source", "ref", "family", "network", "input", "device", "compute_units", "weights",
           "statistic", "harness", "latency_ms", "trust", "skip")
HARNESSES = ("xcode", "app", "not stated")
TRUST = ("high", "medium", "low")
COMPUTE_UNITS = ("all", "cpuAndNeuralEngine", "cpuAndGPU", "not stated")
_WEIGHTS = re.compile(r"fp16|fp32|pal[1-8](g\d*)?|w8|w8a8|sparse\d\d|mixed-int8")


@dataclass(frozen=True)
class CorpusRow:
    row: str
    source: str
    ref: str
    family: str
    network: str
    input: str
    device: str
    chip: str
    compute_units: str
    weights: str
    statistic: str
    harness: str
    latency_ms: float
    trust: str
    skip: str
    resolution_ms: float = 0.0

    @property
    def fitted(self) -> bool:
        """Rows the fit may use: rebuildable, not skipped, and not graded low."""
        return not self.skip and bool(self.network) and self.trust != "low"

    def program_key(self) -> tuple[str, str, str]:
        """Rows with the same network, input and stored weights price the same program."""
        return (self.network, self.input, self.weights)


def default_corpus_path() -> Path:
    return Path(str(resources.files("snapbench.validation") / "corpus.csv"))


def load_corpus(path: str | os.PathLike | None = None) -> list[CorpusRow]:
    """Rows of `path` (default: the shipped corpus); any malformed row -> SnapbenchError with file and line."""
    from snapbench.devices.catalog import resolve_device

    p = Path(path) if path is not None else default_corpus_path()
    text = read_user_text(p, "corpus file")  # a missing file, a folder, /dev/zero or a FIFO: one line
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SnapbenchError(f"{p}: missing columns {', '.join(missing)}")
    rows: list[CorpusRow] = []
    seen: set[str] = set()
    for line, raw in enumerate(reader, start=2):
        r = {k: (v or "").strip() for k, v in raw.items() if k}
        where = f"{p} line {line}"
        try:
            ms = float(r["latency_ms"])
        except ValueError:
            raise SnapbenchError(f"{where}: latency_ms {r['latency_ms']!r} is not a number") from None
        if not (math.isfinite(ms) and ms > 0):
            raise SnapbenchError(f"{where}: latency_ms must be a positive number, got {r['latency_ms']!r}")
        try:
            resolution = float(r.get("resolution_ms") or 0.0)
        except ValueError:
            raise SnapbenchError(f"{where}: resolution_ms {r['resolution_ms']!r} is not a number") from None
        if not (math.isfinite(resolution) and 0 <= resolution <= ms):
            raise SnapbenchError(f"{where}: resolution_ms must be between 0 and the row's latency_ms ({ms:g}), "
                                 f"got {r['resolution_ms']!r}")
        if r["trust"] not in TRUST:
            raise SnapbenchError(f"{where}: trust {r['trust']!r} is not one of {', '.join(TRUST)}")
        if r["compute_units"] not in COMPUTE_UNITS:
            raise SnapbenchError(f"{where}: compute_units {r['compute_units']!r} is not one of "
                                 f"{', '.join(COMPUTE_UNITS)}")
        if r["harness"] not in HARNESSES:
            raise SnapbenchError(f"{where}: harness {r['harness']!r} is not one of {', '.join(HARNESSES)}")
        if not _WEIGHTS.fullmatch(r["weights"]):
            raise SnapbenchError(f"{where}: weights {r['weights']!r} is not fp16, fp32, palN, w8, w8a8, sparseNN "
                                 "or mixed-int8")
        if r["row"] in seen:
            raise SnapbenchError(f"{where}: row id {r['row']!r} repeats")
        seen.add(r["row"])
        try:
            chip = resolve_device(r["device"]).chip
        except SnapbenchError as exc:
            raise SnapbenchError(f"{where}: {exc}") from None
        rows.append(CorpusRow(row=r["row"], source=r["source"], ref=r["ref"], family=r["family"],
                              network=r["network"], input=r["input"], device=r["device"], chip=chip,
                              compute_units=r["compute_units"], weights=r["weights"], statistic=r["statistic"],
                              harness=r["harness"],
                              latency_ms=ms, trust=r["trust"], skip=r["skip"], resolution_ms=resolution))
    return rows
