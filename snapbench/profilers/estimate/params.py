"""The cost model's parameters: a versioned JSON file (`ane_params.json`), validated field by field.

Every parameter is a physical quantity with bounds that keep it plausible; calibration moves the
fitted ones inside those bounds and leaves the others at their documented priors.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from snapbench.atomic import atomic_write_text
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

# Op classes the engine runs at different fractions of its fp16 peak (the MAC array for conv/matmul,
# the much narrower vector units for the rest).
OP_CLASSES = ("conv", "depthwise", "matmul", "elementwise", "activation", "softmax", "norm", "reduce", "layout",
              "resample")
# Chip generations with a throughput factor of their own (Pro/Max/Ultra share their generation's engine).
CHIP_GENERATIONS = ("A13", "A14", "A15", "A16", "A17", "A18", "M1", "M2", "M3", "M4")
CHIP_FACTOR_BOUNDS = (0.25, 4.0)
# The structure the shipped fit is made for (v4: shapes, precision, call overhead; v5: compute/DRAM overlap,
# per-harness call floors, robust fit; v6: no per-chip throughput factor, the catalog's fp16 peak; v7: a
# group norm spelt out in elementwise ops moves what one norm op moves; v8: a depthwise conv's work is per
# output element, its kernel taps free; v9: each palette table is one DRAM fetch at latency, `table_fetch_ns`;
# v10: a program's inputs and outputs cross DRAM and are copied by the CPU; v11: a reduction's vector work is over
# its input's padded rows, not its one-element result rows)
PARAMS_VERSION = 11
CALL_FACTOR_BOUNDS = (0.1, 20.0)

# (low, high) of each scalar parameter. Meaning, bounds and the sources of the priors in
# ane_params.json: docs/estimator.md.
SCALAR_BOUNDS: dict[str, tuple[float, float]] = {
    "bandwidth_efficiency": (0.3, 1.0),   # sustained / theoretical DRAM bandwidth
    "working_set_mb": (0.5, 32.0),        # on-chip buffer: tensors above it stream through DRAM (~2 MB, M1)
    "dispatch_ms": (0.0, 2.0),            # fixed cost per engine program dispatch (~0.23 ms, M1)
    "op_overhead_us": (0.0, 50.0),        # fixed cost per op inside a dispatched program
    "reduction_passes": (1.0, 4.0),       # passes over a non-resident input of softmax / norms / reductions
    "pad_bytes": (1.0, 256.0),            # last-axis row padding of engine tensors (64 B)
    "max_tensor_mb": (8.0, 4096.0),       # one tensor above this is not placed on the engine
    "max_pool_kernel": (1.0, 64.0),       # larger pooling windows fall back
    "max_upsample": (1.0, 8.0),           # larger upsampling factors fall back
    "cpu_gflops": (5.0, 2000.0),          # CPU fallback throughput (fp32/fp16 NEON + AMX), GFLOP/s
    "cpu_sync_ms": (0.0, 5.0),            # cost of each hand-over engine -> CPU -> engine
    "copy_bandwidth_fraction": (0.05, 1.0),  # copies across engine/CPU layouts, fraction of DRAM bandwidth
    # v4: shape and precision structure
    "size_half": (1.0, 65536.0),         # output rows (positions x batch) at which a conv/matmul runs at half
                                          # its efficiency: small spatial sizes and short sequences underfill
    "int8_speedup": (1.0, 4.0),           # W8A8 compute speed-up on chips with an int8 engine path (A17 Pro, M4 on)
    "int8_speedup_older": (1.0, 4.0),     # the same on older chips (int8 activations still halve the data moved)
    "epilogue_cost": (0.0, 1.0),          # share of its own cost an elementwise op fused into its producer pays
    "call_overhead_ms": (0.0, 5.0),       # one prediction call timed in an app (input/output marshalling,
                                          # scheduling), beyond the engine's own time; Xcode's report excludes it
    # v5
    "memory_serial": (0.0, 1.0),          # share of an op's shorter side (compute or DRAM) not hidden behind the
                                          # longer one: 0 = perfect overlap (v4's max), 1 = no overlap (the sum)
    # v9
    "table_fetch_ns": (0.0, 1000.0),      # one palette table fetched from DRAM before its weights expand: a
                                          # dependent access, paid at DRAM latency (~100 ns), not bandwidth
}
# Parameters a v3 file lacks, with the value that reproduces v3's behaviour (no size effect, no int8 path).
_V3_DEFAULTS = {"size_half": 1.0, "int8_speedup": 1.0, "int8_speedup_older": 1.0, "epilogue_cost": 1.0,
                "call_overhead_ms": 0.0}
_V4_DEFAULTS = {"memory_serial": 0.0}
# A v8 file (or older) lacks the palette tables' fetch latency: 0 reproduces its behaviour.
_V8_DEFAULTS = {"table_fetch_ns": 0.0}
EFFICIENCY_BOUNDS = (0.002, 1.0)


@dataclass(frozen=True)
class AneParams:
    version: int
    fitted_on: tuple[str, ...]
    efficiency: dict[str, float]
    bandwidth_efficiency: float
    working_set_mb: float
    dispatch_ms: float
    op_overhead_us: float
    reduction_passes: float
    pad_bytes: float
    max_tensor_mb: float
    max_pool_kernel: float
    max_upsample: float
    cpu_gflops: float
    cpu_sync_ms: float
    copy_bandwidth_fraction: float
    size_half: float = 1.0
    int8_speedup: float = 1.0
    int8_speedup_older: float = 1.0
    epilogue_cost: float = 1.0
    call_overhead_ms: float = 0.0
    memory_serial: float = 0.0
    table_fetch_ns: float = 0.0
    chip_factor: dict[str, float] = field(default_factory=dict)  # fp16 throughput vs the catalog's, per generation
    # app-call overhead vs call_overhead_ms, per measurement harness (a source's timing app): a nuisance of
    # the published rows; a harness the fit never saw pays call_overhead_ms, the median harness's
    call_factor: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> JSONObject:
        d = asdict(self)
        d["fitted_on"] = list(self.fitted_on)
        return d

    def with_values(self, values: dict[str, float]) -> AneParams:
        """A copy with scalars, `efficiency.<class>` and `chip.<generation>` entries replaced."""
        eff = dict(self.efficiency)
        chips = dict(self.chip_factor)
        calls = dict(self.call_factor)
        # The remaining keys name float fields; which ones is only known at run time (replace() rejects
        # unknown names), so the kwargs are Any to mypy.
        scalars: dict[str, Any] = {}
        for k, v in values.items():
            if k.startswith("efficiency."):
                eff[k.split(".", 1)[1]] = float(v)
            elif k.startswith("chip."):
                chips[k.split(".", 1)[1]] = float(v)
            elif k.startswith("call."):
                calls[k.split(".", 1)[1]] = float(v)
            else:
                scalars[k] = float(v)
        return replace(self, efficiency=eff, chip_factor=chips, call_factor=calls, **scalars)

    def get(self, key: str) -> float:
        if key.startswith("efficiency."):
            return self.efficiency[key.split(".", 1)[1]]
        if key.startswith("chip."):
            return self.chip_factor.get(key.split(".", 1)[1], 1.0)
        if key.startswith("call."):
            return self.call_factor.get(key.split(".", 1)[1], 1.0)
        return float(getattr(self, key))

    def call_ms(self, harness: str = "") -> float:
        """One prediction call's overhead in an app: `harness`'s own when fitted, else the median harness's."""
        return self.call_overhead_ms * self.call_factor.get(harness, 1.0)

    def chip(self, chip: str) -> float:
        """The fp16 throughput factor of a chip name ("A17 Pro" -> generation "A17"); 1 when not fitted."""
        gen = chip.split()[0] if chip else ""
        return self.chip_factor.get(gen, 1.0)


def bounds_of(key: str) -> tuple[float, float]:
    if key.startswith("efficiency."):
        return EFFICIENCY_BOUNDS
    if key.startswith("chip.") or key.startswith("call."):
        return CHIP_FACTOR_BOUNDS if key.startswith("chip.") else CALL_FACTOR_BOUNDS
    return SCALAR_BOUNDS[key]


def default_params_path() -> Path:
    return Path(str(resources.files("snapbench.profilers.estimate") / "ane_params.json"))


def default_priors_path() -> Path:
    """The unfitted priors (same format): where every fit starts, so refitting never drifts."""
    return Path(str(resources.files("snapbench.profilers.estimate") / "ane_priors.json"))


def params_from_dict(doc: object, source: str) -> AneParams:
    """Validate a parameter document; any problem -> SnapbenchError naming the field."""

    def bad(fieldname: str, why: str) -> SnapbenchError:
        return SnapbenchError(f"{source}: field {fieldname!r} {why}")

    if not isinstance(doc, dict):
        raise SnapbenchError(f"{source}: expected a JSON object, got {type(doc).__name__}")
    version = doc.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("version", f"must be a positive integer, got {version!r}")
    fitted_on = doc.get("fitted_on")
    if not isinstance(fitted_on, list) or not all(isinstance(x, str) for x in fitted_on):
        raise bad("fitted_on", f"must be a list of strings, got {fitted_on!r}")
    eff = doc.get("efficiency")
    if isinstance(eff, dict) and "depthwise" not in eff and "conv" in eff and version <= 3:
        eff = {**eff, "depthwise": eff["conv"]}  # v3 priced depthwise convs as convs
    if not isinstance(eff, dict):
        raise bad("efficiency", f"must be an object with {', '.join(OP_CLASSES)}")
    for cls in OP_CLASSES:
        _check_number(eff.get(cls), f"efficiency.{cls}", EFFICIENCY_BOUNDS, bad)
    unknown = sorted(set(eff) - set(OP_CLASSES))
    if unknown:
        raise bad(f"efficiency.{unknown[0]}", f"is not an op class (known: {', '.join(OP_CLASSES)})")
    scalars = {}
    for key, lim in SCALAR_BOUNDS.items():
        older = ({**_V3_DEFAULTS, **_V4_DEFAULTS} if version <= 3 else _V4_DEFAULTS if version <= 4 else {})
        value = doc.get(key, {**older, **_V8_DEFAULTS}.get(key) if version <= 8 else None)
        scalars[key] = _check_number(value, key, lim, bad)
    per_chip = {}
    for name, lim in (("chip_factor", CHIP_FACTOR_BOUNDS), ("call_factor", CALL_FACTOR_BOUNDS)):
        table = doc.get(name, {})
        what = "chip generation" if name == "chip_factor" else "harness (a corpus source id)"
        if not isinstance(table, dict):
            raise bad(name, f"must be an object of {what} -> factor")
        for key, value in table.items():
            if name == "chip_factor" and key not in CHIP_GENERATIONS:
                raise bad(f"{name}.{key}", f"is not a chip generation (known: {', '.join(CHIP_GENERATIONS)})")
            if not key.strip():
                raise bad(name, f"has an empty {what}")
            _check_number(value, f"{name}.{key}", lim, bad)
        per_chip[name] = {g: float(v) for g, v in table.items()}
    extra = sorted(set(doc) - set(SCALAR_BOUNDS) - {"version", "fitted_on", "efficiency", "notes", "chip_factor",
                                                    "call_factor"})
    if extra:
        raise bad(extra[0], "is not a cost-model parameter (typo?)")
    notes = doc.get("notes", {})
    if not isinstance(notes, dict):
        raise bad("notes", "must be an object of strings")
    return AneParams(version=version, fitted_on=tuple(fitted_on),
                     efficiency={c: float(eff[c]) for c in OP_CLASSES}, notes=dict(notes),
                     chip_factor=per_chip["chip_factor"], call_factor=per_chip["call_factor"], **scalars)


def _check_number(value: object, name: str, lim: tuple[float, float], bad) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise bad(name, f"must be a number, got {value!r}")
    lo, hi = lim
    if not lo <= value <= hi:
        raise bad(name, f"= {value} is outside its plausible range [{lo}, {hi}]")
    return float(value)


def load_params(path: str | os.PathLike | None = None) -> AneParams:
    """The shipped parameters, or those in `path`."""
    p = Path(path) if path is not None else default_params_path()
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise SnapbenchError(f"cost-model parameter file {p} not found") from None
    except ValueError as exc:
        raise SnapbenchError(f"{p}: not valid JSON ({exc})") from None
    return params_from_dict(doc, str(p))


def save_params(params: AneParams, path: str | os.PathLike | None = None) -> Path:
    """Validate, then write atomically (temp file, rename): a crash never leaves half a file."""
    p = Path(path) if path is not None else default_params_path()
    params_from_dict(params.to_dict(), str(p))
    return atomic_write_text(p, json.dumps(params.to_dict(), indent=2) + "\n")
