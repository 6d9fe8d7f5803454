"""The device catalog: public hardware facts of iPhones, iPads and Macs (package data `devices.csv`).

`resolve_device("iPhone 14 Pro")`, `resolve_device("iphone14pro")` and `resolve_device("IPHONE 14 PRO")`
all give the same `Device`. Unknown names raise `SnapbenchError` naming the closest ids.
"""

from __future__ import annotations

import csv
import difflib
import io
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

_COLUMNS = ("device", "name", "chip", "ane_cores", "ane_tops_marketed", "ram_gb", "memory",
            "mem_bandwidth_gbps_est", "confidence", "notes")

# From these chip generations on, Apple's marketed Neural Engine TOPS are taken to be int8 operations
# (A17 Pro: 35, M4: 38, after 17 / 18 for A16 / M3): coremltools documents a faster int8 path from
# A17 Pro / M4, and one M-series measurement gave fp16 18.0 vs int8 33.9 TOPS. The engine computes fp16,
# so its fp16 peak is half the marketed figure on those chips. [medium confidence, docs/estimator.md]
_INT8_MARKETED_FROM = {"A": 17, "M": 4}
_INT8_TO_FP16 = 0.5
# Ultra chips join two 16-core engines, but one Core ML model runs on one of them (Apple's
# ml-stable-diffusion benchmarks give M1/M2 Ultra about the Max's Neural Engine time).
_CORES_PER_MODEL = 16


@dataclass(frozen=True)
class Device:
    """One catalog row plus derived fields. `ane_fp16_tflops` is the fp16 peak the cost model uses."""

    id: str
    name: str
    chip: str
    ane_cores: int
    ane_tops_marketed: float
    ram_gb: float
    memory: str
    mem_bandwidth_gbps_est: float
    confidence: str
    notes: str
    marketed_tops_are_int8: bool
    ane_fp16_tflops: float
    # The Neural Engine's own measured streaming bandwidth (GB/s), where one was published: it does not follow
    # the SoC's (an M1 Max's engine streams weights at 55 GB/s of the chip's 400). None: unmeasured, the
    # estimator uses the SoC's bandwidth times its fitted efficiency.
    ane_bandwidth_gbps: float | None = None

    def to_dict(self) -> JSONObject:
        return asdict(self)


def chip_generation(chip: str) -> tuple[str, int]:
    """('A', 16) for "A16", ('A', 17) for "A17 Pro", ('M', 2) for "M2 Max"."""
    m = re.match(r"\s*([AM])(\d+)", chip)
    if not m:
        raise SnapbenchError(f"unrecognised Apple chip {chip!r}; expected A<n> or M<n> (e.g. A16, M2)")
    return m.group(1), int(m.group(2))


def marketed_is_int8(chip: str) -> bool:
    family, gen = chip_generation(chip)
    return gen >= _INT8_MARKETED_FROM[family]


def _normalise(text: str) -> str:
    """Case-, space- and punctuation-insensitive key: "iPhone 14 Pro" -> "iphone14pro"."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _parse(text: str, source: str) -> tuple[Device, ...]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in _COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise SnapbenchError(f"{source}: missing columns {', '.join(missing)}")
    devices = []
    for line, row in enumerate(reader, start=2):
        try:
            tops = float(row["ane_tops_marketed"])
            cores = int(row["ane_cores"])
            int8 = marketed_is_int8(row["chip"])
            per_model = min(1.0, _CORES_PER_MODEL / cores)
            devices.append(Device(
                id=row["device"].strip(), name=row["name"].strip(), chip=row["chip"].strip(),
                ane_cores=cores, ane_tops_marketed=tops, ram_gb=float(row["ram_gb"]),
                memory=row["memory"].strip(), mem_bandwidth_gbps_est=float(row["mem_bandwidth_gbps_est"]),
                confidence=row["confidence"].strip(), notes=(row["notes"] or "").strip(),
                marketed_tops_are_int8=int8, ane_fp16_tflops=tops * per_model * (_INT8_TO_FP16 if int8 else 1.0),
                ane_bandwidth_gbps=float(row["ane_bandwidth_gbps"]) if (row.get("ane_bandwidth_gbps") or "").strip()
                else None,
            ))
        except (TypeError, ValueError) as exc:
            raise SnapbenchError(f"{source} line {line}: {exc}") from None
    return tuple(devices)


@lru_cache(maxsize=1)
def list_devices() -> tuple[Device, ...]:
    """Every catalog device, in file order."""
    text = (resources.files("snapbench.devices") / "devices.csv").read_text()
    return _parse(text, "snapbench/devices/devices.csv")


def resolve_device(text: str | Device) -> Device:
    """A device by id or name, ignoring case, spaces and punctuation; unknown -> SnapbenchError."""
    if isinstance(text, Device):
        return text
    key = _normalise(str(text))
    for device in list_devices():
        if key in (_normalise(device.id), _normalise(device.name)):
            return device
    ids = [d.id for d in list_devices()]
    close = difflib.get_close_matches(key, ids, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "see `snapbench devices`"
    raise SnapbenchError(f"unknown device {text!r}; {hint}")
