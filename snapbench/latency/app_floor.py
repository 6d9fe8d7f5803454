"""An app's per-prediction floor: the user's setting, never part of an engine figure.

Engine latency (what Xcode's performance report shows) is what latency tables, `model_ms` and reports
carry. An app that times a prediction also pays its own floor (input marshalling, scheduling, the timer):
about 0.2-0.4 ms in recent apps, 2-3 ms in a 2020 one, over 10 ms for a Vision request in a live-camera
app. The floor belongs to the app, so snapbench never guesses it: you measure it once and pass it.

    snapbench convert --model synthetic:floor --out floor/        # a one-op package
    # time floor/...mlpackage in your app, one row per run: model,device,latency_ms
    snapbench calibrate --app-floor my_floor.csv                  # -> the floor, e.g. 0.31 ms
    snapbench profile --model ... --app-floor-ms 0.31             # end_to_end_ms beside model_ms

Floor file (CSV, `#` lines are comments): `model` (must be `synthetic:floor` on every row: the file times
that package and nothing else), `device` (one catalog device for the whole file), and `latency_ms` or
`latency_s` (one prediction each). The floor is the median timing less the estimator's engine time of the
one-op package on that device (a few hundredths of a millisecond).
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from typing import Any

from snapbench.devices.catalog import Device, resolve_device
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

FLOOR_MODEL = "synthetic:floor"
# A prediction call's own cost above this is not a floor but a different measurement (a whole request with
# image pre-processing, a cold load): refused rather than carried into every end-to-end figure.
MAX_FLOOR_MS = 100.0
MAX_FLOOR_ROWS = 100_000


def check_floor_ms(value: float | None, where: str = "--app-floor-ms") -> float | None:
    """`value` as a floor in ms (None stays None); negative, not finite or absurd -> SnapbenchError."""
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise SnapbenchError(f"{where} {value}: a floor is a time of 0 ms or more; measure yours with "
                             "`snapbench calibrate --app-floor FILE`")
    if v > MAX_FLOOR_MS:
        raise SnapbenchError(f"{where} {value}: above {MAX_FLOOR_MS:g} ms is not a per-prediction floor (a cold "
                             "load or a whole request with pre-processing?); time the warm one-op package "
                             f"`snapbench convert --model {FLOOR_MODEL}` writes")
    return v


def with_floor(doc: dict[str, Any], floor_ms: float | None, calls: int = 1) -> dict[str, Any]:
    """Add `app_floor_ms` and `end_to_end_ms` (model_ms + calls x floor) to a profile document when a floor
    is set; an engine figure (`model_ms`) is never changed."""
    if floor_ms is None or doc.get("model_ms") is None:
        return doc
    return {**doc, "app_floor_ms": round(floor_ms, 4),
            "end_to_end_ms": round(doc["model_ms"] + calls * floor_ms, 4),
            "end_to_end_note": f"model_ms (engine) + {calls} x your app's floor (--app-floor-ms)"}


@dataclass(frozen=True)
class FloorReading:
    device: str
    runs: int
    median_ms: float
    engine_ms: float  # the estimator's engine time of the one-op package on the device
    floor_ms: float

    def to_dict(self) -> JSONObject:
        return {"device": self.device, "runs": self.runs, "median_ms": round(self.median_ms, 4),
                "engine_ms_estimated": round(self.engine_ms, 4), "app_floor_ms": round(self.floor_ms, 4)}


def read_floor_file(path: str | os.PathLike) -> tuple[Device, list[float]]:
    """(the device, timings in ms) of a floor file; anything else than a timing of the floor package ->
    SnapbenchError naming the line."""
    from snapbench.user_files import read_user_text

    text = read_user_text(str(path), "app-floor file")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    unit = "latency_ms" if "latency_ms" in cols else "latency_s" if "latency_s" in cols else None
    missing = [c for c in ("model", "device") if c not in cols] + ([] if unit else ["latency_ms (or latency_s)"])
    if missing:
        raise SnapbenchError(f"{path}: not an app-floor file (missing columns {', '.join(missing)}); write "
                             f"model,device,latency_ms rows timing the {FLOOR_MODEL} package")
    devices: dict[str, Device] = {}  # by id: "iPhone 14 Pro" and "iphone14pro" are one device
    times: list[float] = []
    for line, raw in enumerate(reader, start=2):
        if len(times) >= MAX_FLOOR_ROWS:
            raise SnapbenchError(f"{path}: more than {MAX_FLOOR_ROWS} timings; keep a few hundred")
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if row.get("model") != FLOOR_MODEL:
            raise SnapbenchError(f"{path} line {line}: model {row.get('model')!r} is not {FLOOR_MODEL}; an app "
                                 f"floor is read from timings of the one-op package `snapbench convert --model "
                                 f"{FLOOR_MODEL}` writes, nothing else")
        try:
            v = float(row[unit]) * (1.0 if unit == "latency_ms" else 1e3)
        except (TypeError, ValueError):
            raise SnapbenchError(f"{path} line {line}: {unit} {row.get(unit or '')!r} is not a number") from None
        if not (math.isfinite(v) and v > 0):
            raise SnapbenchError(f"{path} line {line}: {unit} must be a positive time, got {row.get(unit or '')!r}")
        try:
            dev = resolve_device(row["device"])
            devices[dev.id] = dev
        except SnapbenchError as exc:
            raise SnapbenchError(f"{path} line {line}: {exc}") from None
        times.append(v)
    if not times:
        raise SnapbenchError(f"{path}: no timings; one row per timed prediction of the {FLOOR_MODEL} package")
    if len(devices) > 1:
        raise SnapbenchError(f"{path}: timings from {', '.join(sorted(devices))}; one device per floor file")
    return devices.popitem()[1], times
