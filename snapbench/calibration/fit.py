"""Fit the cost model's parameters to published and user-measured latencies.

Reference points come from `reference/calibration.csv` (shipped as `calibration.csv` beside this module)
and from a user's CSV of measured rows. The fit minimises a robust (pseudo-Huber) log error of estimated vs measured
latency, in log-parameter space, inside physical bounds, with a weak pull towards the documented priors
(`ane_params.json` as shipped before fitting) so that parameters the points do not constrain stay put.

Measured-rows CSV (one row per measured program; `#` lines are comments):

    device,component,model,attention,weight_bits,batch,latency_ms,source
    iphone14,unet,sd15,split_einsum_v2,16,2,520,my harness, median of 20 runs
    iphone14pro,,,,,,12.5,,Blocks/CA_Up-1_0.mlpackage

Columns:
  * `device` (required): a catalog id or name.
  * the latency with its unit in the name (required): `latency_ms` or `latency_s`. A bare `latency`
    column is refused: a number without a unit is a guess.
  * what was measured, either `package` (a path to an .mlpackage; its own program is estimated) or
    `component` (text_encoder | unet | vae_decoder) with `model` (a UNet preset, e.g. sd15, sd21base) and
    optional settings `attention` (original | split_einsum | split_einsum_v2), `weight_bits` (16, 8, 6,
    4; palettized), `batch` (UNet default 2: classifier-free guidance).
  * optional `source` and `notes`, carried into the report.
UNet latencies are per denoising step, text encoder per run, VAE decoder per image.

A `component` row is priced exactly as `snapbench profile` prices that component with those settings:
the same converter packages (`model_latency.profile_packages`; the UNet per block signature, each counted
once per block that has it; `weight_bits` < 16 are the converters' real palettized packages), each
estimated on its own and summed. The op records of the shipped reference points ship with the package
(`reference_programs`), so calibration needs no conversion.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from snapbench.calibration.reference_programs import ReferenceProgram, reference_parts
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate.cost_model import (
    PreparedOps,
    Terms,
    evaluate,
    prepare,
    stack_terms,
    terms,
    total_ms,
)
from snapbench.profilers.estimate.params import (
    CALL_FACTOR_BOUNDS,
    OP_CLASSES,
    AneParams,
    bounds_of,
    default_priors_path,
    load_params,
    save_params,
)
from snapbench.user_files import read_user_text

# Settings a published row leaves "not stated", and what the estimator assumes instead. These are
# assumptions about the measurement (what a Core ML deployment of the time did by default), stated in
# every report row; they are not tuned.
ASSUMED_WHEN_NOT_STATED = {
    "attention": "original",   # diffusers' attention as exported; the ANE rewrites are an opt-in of Apple's repo
    "weight_bits": 16,         # fp16 Core ML weights, the converter's default
    "unet_batch": 2,           # classifier-free guidance evaluates the UNet on 2 inputs per step
    "batch": 1,
}

# Fitted knobs: each scales one or more parameters multiplicatively (fitted in log space). The engine's
# vector-unit classes share one knob; every other knob is one physical quantity. A chip's throughput is
# the catalog's fp16 peak: no knob per chip generation. Each chip's rows come from one or two sources, so a
# per-chip factor learnt that source's harness as much as the chip (v5 fitted the A15's on S20's floor-bound
# synthetic graphs alone and carried it into every A15 program); without them the held-out error falls
# (docs/estimator.md). `chip_factor` stays readable in parameter files; fits leave it empty. Call
# knobs (`call.S15-coreml-model-zoo`) are each timing harness's per-prediction floor: a nuisance of how a
# source timed its app (OS era, input marshalling, timer), fitted per source and never carried to a source the
# fit did not see, which pays the median harness's floor (`recentre_calls`).
_VECTOR = tuple(f"efficiency.{c}" for c in OP_CLASSES if c not in ("conv", "depthwise", "matmul"))
KNOBS: dict[str, tuple[str, ...]] = {
    "conv": ("efficiency.conv",),
    "depthwise": ("efficiency.depthwise",),
    "matmul": ("efficiency.matmul",),
    "vector": _VECTOR,
    "bandwidth": ("bandwidth_efficiency",),
    "cpu": ("cpu_gflops",),
    "dispatch": ("dispatch_ms",),
    "op_overhead": ("op_overhead_us",),
    "size_half": ("size_half",),
    "int8": ("int8_speedup",),
    "int8_older": ("int8_speedup_older",),
    "epilogue": ("epilogue_cost",),
    "call_overhead": ("call_overhead_ms",),
    "memory_serial": ("memory_serial",),
}
MAX_LOG_FACTOR = math.log(20.0)  # no knob moves a prior by more than 20x, whatever its bounds allow
PRIOR_WEIGHT = 0.02  # pull towards priors, per knob, in (log units)^2, against (log error)^2 per point
CHIP_PRIOR_WEIGHT = 0.5  # a chip factor of e costs as much as half a point missed by a factor of e
# App-call floors differ by harness far more than throughput does by chip (2-3 ms on a 2020 iOS 13 app,
# ~0.3 ms on a 2023 one), so each harness's factor is pulled only weakly, and the shared value an unseen
# harness pays is their median, not a mean one outlying harness could drag.
CALL_PRIOR_WEIGHT = 0.01
# The fit's loss per point is pseudo-Huber in log error with this scale: quadratic within ~20%, linear
# beyond, so a few rows no structure explains (integer-ms timers, a harness's quirks) do not drag the
# shared parameters every other row depends on.
ROBUST_SCALE = 0.2


@dataclass(frozen=True)
class CalibrationPoint:
    label: str
    source: str
    device: str
    component: str
    model: str
    settings: str
    measured_ms: float
    programs: tuple[tuple[PreparedOps, int], ...]  # (program, times it runs): priced as sum of count x estimate
    weight: float = 1.0  # its share of the fit's squared log error
    calls: int = 0  # prediction calls timed in an app, each paying `call_overhead_ms` (0: engine time only)
    harness: str = ""  # who timed it (a corpus source id): the call overhead is that harness's
    resolution_ms: float = 0.0  # the step the figure was printed to (an integer-ms timer: 1): see `reading_ms`


def reading_ms(estimate: np.ndarray | float, measured: np.ndarray | float,
               resolution: np.ndarray | float) -> np.ndarray:
    """The value an estimate is judged against: the nearest value that prints as the published figure.

    A figure printed to a step `r` (a mean shown in whole milliseconds, a 0.1 ms timer) stands for every
    value in [t - r/2, t + r/2]: an estimate inside that interval is as right as the figure can say. This
    models the measurement (its stated resolution), not the engine; with r = 0 it is the figure itself.
    """
    half = np.asarray(resolution, dtype=float) / 2.0
    return np.clip(estimate, np.asarray(measured) - half, np.asarray(measured) + half)


def point_loss(estimate: np.ndarray, measured: np.ndarray | float, resolution: np.ndarray | float) -> np.ndarray:
    """Each point's loss: pseudo-Huber (scale `ROBUST_SCALE`) in the log error against its reading."""
    r = np.log(estimate / reading_ms(estimate, measured, resolution))
    return 2 * ROBUST_SCALE ** 2 * (np.sqrt(1 + (r / ROBUST_SCALE) ** 2) - 1)


def point_ms(pt: CalibrationPoint, params: AneParams) -> float:
    """The point's estimate: its programs priced one by one, as `snapbench profile` sums its packages."""
    dev = resolve_device(pt.device)
    return sum(n * total_ms(prep, dev, params) for prep, n in pt.programs) + pt.calls * params.call_ms(pt.harness)


def reference_csv_path() -> Path:
    return Path(str(resources.files("snapbench.calibration") / "calibration.csv"))


def _not_stated(value: str | None) -> bool:
    return value is None or value.strip() == "" or value.strip().lower() in ("not stated", "n/a", "na", "-")


def _rows(text: str, source: str) -> list[dict[str, str]]:
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    unitless = [c for c in cols if c in ("latency", "time", "duration", "ms_or_s")]
    if unitless:
        raise SnapbenchError(f"{source}: column {unitless[0]!r} has no unit; name it latency_ms or latency_s")
    missing = [c for c in ("device",) if c not in cols]
    if not any(c in cols for c in ("latency_ms", "latency_s")):
        missing.append("latency_ms (or latency_s)")
    if "package" not in cols and not all(c in cols for c in ("component", "model")):
        missing += [c for c in ("component", "model") if c not in cols]
    if missing:
        raise SnapbenchError(f"{source}: missing columns {', '.join(missing)}")
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def load_points(path: str | os.PathLike | None = None, *, convert: bool = True,
                include_reference: bool = True) -> list[CalibrationPoint]:
    """The shipped reference points (unless `include_reference=False`) plus the rows of `path`."""
    sources: list[tuple[str, str]] = []
    if include_reference:
        sources.append((reference_csv_path().read_text(), "reference/calibration.csv"))
    if path is not None:
        p = Path(path)
        sources.append((read_user_text(p, "measured-latency file"), str(p)))
    points: list[CalibrationPoint] = []
    for text, source in sources:
        for line, row in enumerate(_rows(text, source), start=2):
            points.append(_point(row, f"{source} line {line}", convert=convert))
    return points


def _point(row: dict[str, str], where: str, *, convert: bool) -> CalibrationPoint:
    device = resolve_device(row["device"]).id
    try:
        measured = float(row["latency_ms"]) if row.get("latency_ms") else float(row["latency_s"]) * 1e3
    except (KeyError, ValueError):
        raise SnapbenchError(f"{where}: latency {row.get('latency_ms') or row.get('latency_s')!r} is not a number") from None
    if not measured > 0:
        raise SnapbenchError(f"{where}: latency must be positive, got {measured}")
    source = row.get("source") or "measured"
    if row.get("package"):
        from snapbench.profilers.estimate.program_ops import read_op_records

        recs = read_op_records(row["package"])
        return CalibrationPoint(f"{source}: {device} {Path(row['package']).name}", source, device, "package",
                                row["package"], "as converted", measured, ((prepare(recs), 1),))
    component, model = row.get("component", ""), row.get("model", "")
    if component not in ("text_encoder", "unet", "vae_decoder"):
        raise SnapbenchError(f"{where}: component {component!r} must be text_encoder, unet or vae_decoder")
    attention = ASSUMED_WHEN_NOT_STATED["attention"] if _not_stated(row.get("attention")) else row["attention"]
    try:
        bits = ASSUMED_WHEN_NOT_STATED["weight_bits"] if _not_stated(row.get("weight_bits")) else int(row["weight_bits"])
        default_batch = ASSUMED_WHEN_NOT_STATED["unet_batch" if component == "unet" else "batch"]
        batch = default_batch if _not_stated(row.get("batch")) else int(row["batch"])
    except ValueError as exc:
        raise SnapbenchError(f"{where}: {exc}") from None
    if component != "unet":
        if model in ("sd14", "sd"):
            model = "sd15"  # SD v1.x share one text encoder and VAE
        if batch != 1:
            raise SnapbenchError(f"{where}: the {component} is profiled at batch 1 (per prompt / per image), "
                                 f"got batch {batch}")
    try:
        # the packages `snapbench profile --model M --attention A --weight-bits B` prices for this component
        program = ReferenceProgram(component, model, attention, bits, batch)  # type: ignore[arg-type]
        parts = reference_parts(program, convert=convert)
    except SnapbenchError as exc:
        raise SnapbenchError(f"{where}: {exc}") from None
    settings = f"{attention}, {bits}-bit, batch {batch}"
    return CalibrationPoint(f"{source}: {device} {model} {component}", source, device, component, model,
                            settings, measured, tuple((prepare(p.records), p.count) for p in parts))


# --------------------------------------------------------------------------------------------------------
# Report and fit
# --------------------------------------------------------------------------------------------------------


def calibration_report(params: AneParams | None = None, points: Sequence[CalibrationPoint] | None = None,
                       *, measured: str | os.PathLike | None = None, convert: bool = True) -> pd.DataFrame:
    """One row per reference point: published/measured ms, estimated ms (label: estimate), error %."""
    params = params or load_params()
    pts = list(points) if points is not None else load_points(measured, convert=convert)
    rows = []
    for pt in pts:
        est = point_ms(pt, params)
        rows.append({"reference": pt.label, "device": pt.device, "component": pt.component, "model": pt.model,
                     "settings": pt.settings, "published_ms": pt.measured_ms, "estimated_ms": est,
                     "error_pct": 100.0 * (est - pt.measured_ms) / pt.measured_ms, "backend": "estimate"})
    return pd.DataFrame(rows, columns=["reference", "device", "component", "model", "settings", "published_ms",
                                       "estimated_ms", "error_pct", "backend"])


def _apply(prior: AneParams, knob_values: dict[str, float]) -> AneParams:
    values = {}
    for knob, factor in knob_values.items():
        for key in _knob_keys(knob):
            lo, hi = bounds_of(key)
            values[key] = float(np.clip(prior.get(key) * factor, lo, hi))
    return prior.with_values(values)


def _knob_keys(knob: str) -> tuple[str, ...]:
    return (knob,) if knob.startswith(("chip.", "call.")) else KNOBS[knob]


class _Stack:
    """All points' (program, device) pairs priced in one vectorised pass (see cost_model.Terms)."""

    def __init__(self, points: Sequence[CalibrationPoint], params: AneParams):
        pairs: dict[tuple[int, str], int] = {}
        parts: list[Terms] = []
        entries: list[tuple[int, int, float]] = []
        for i, pt in enumerate(points):
            dev = resolve_device(pt.device)
            for prep, count in pt.programs:
                key = (id(prep), dev.id)
                if key not in pairs:
                    pairs[key] = len(parts)
                    parts.append(terms(prep, dev, params))
                entries.append((i, pairs[key], float(count)))
        self.terms, self.pair_of_op = stack_terms(parts)
        self.n_pairs = len(parts)
        self.matrix = np.zeros((len(points), len(parts)))
        for i, j, c in entries:
            self.matrix[i, j] += c
        self.calls = np.array([pt.calls for pt in points], dtype=float)
        self.harnesses = [pt.harness for pt in points]

    def point_ms(self, params: AneParams) -> np.ndarray:
        t = evaluate(self.terms, params)
        pair_ms = np.bincount(self.pair_of_op, t.op_ms, minlength=self.n_pairs) + t.overhead_ms
        calls = self.calls * np.array([params.call_ms(h) for h in self.harnesses])
        return self.matrix @ pair_ms + calls


def fit_knobs(points: Sequence[CalibrationPoint]) -> list[str]:
    """The knobs a fit on `points` moves: every structural knob and one per app harness (none per chip)."""
    harnesses = sorted({pt.harness for pt in points if pt.calls and pt.harness})
    return list(KNOBS) + [f"call.{h}" for h in harnesses]


def recentre_calls(params: AneParams) -> AneParams:
    """Make `call_overhead_ms` the median of the fitted harnesses' floors (each harness keeps its own), so
    a harness the fit never saw is priced with a typical floor, not one an outlier pulled."""
    if not params.call_factor:
        return params
    floors = {h: params.call_ms(h) for h in params.call_factor}
    lo, hi = bounds_of("call_overhead_ms")
    base = float(np.clip(np.exp(np.median(np.log(list(floors.values())))), max(lo, 1e-6), hi))
    clo, chi = CALL_FACTOR_BOUNDS
    return replace(params, call_overhead_ms=base,
                   call_factor={h: float(np.clip(f / base, clo, chi)) for h, f in floors.items()})


def fit_params(points: Sequence[CalibrationPoint], prior: AneParams | None = None, *,
               version: int | None = None, maxiter: int = 200) -> AneParams:
    """Fit the knobs (log scale factors on the prior's parameters) to the points; bounded, regularised."""
    from scipy.optimize import minimize

    prior = prior or load_params(default_priors_path())
    names = fit_knobs(points)
    # each knob's bounds: the tightest factor range that keeps all its parameters inside their bounds
    bounds = []
    for knob in names:
        keys = [k for k in _knob_keys(knob) if prior.get(k) > 0]
        lo = max([math.log(max(bounds_of(k)[0], 1e-9) / prior.get(k)) for k in keys] + [-MAX_LOG_FACTOR])
        hi = min([math.log(bounds_of(k)[1] / prior.get(k)) for k in keys] + [MAX_LOG_FACTOR])
        bounds.append((min(lo, 0.0), max(hi, 0.0)))
    stack = _Stack(points, prior)
    measured = np.array([pt.measured_ms for pt in points])
    resolution = np.array([pt.resolution_ms for pt in points])
    weights = np.array([pt.weight for pt in points])
    pull = np.array([CHIP_PRIOR_WEIGHT if n.startswith("chip.") else CALL_PRIOR_WEIGHT if n.startswith("call.")
                     else PRIOR_WEIGHT for n in names])

    def f(x):
        est = stack.point_ms(_apply(prior, dict(zip(names, np.exp(x)))))
        return float(np.sum(weights * point_loss(est, measured, resolution)) + np.sum(pull * x ** 2))

    # three starts, the lowest loss wins (the first on a tie)
    starts = (np.zeros(len(names)), np.full(len(names), -0.3), np.full(len(names), 0.3))
    best = min((minimize(f, np.clip(start, [b[0] for b in bounds], [b[1] for b in bounds]), method="L-BFGS-B",
                         bounds=bounds, options={"maxiter": maxiter}) for start in starts), key=lambda res: res.fun)
    fitted = recentre_calls(_apply(prior, dict(zip(names, np.exp(best.x)))))
    return replace(fitted, version=version or prior.version + 1, fitted_on=tuple(pt.label for pt in points),
                   notes={**prior.notes, "fit": f"{len(names)} fitted parameters on {len(points)} points: " + ", ".join(
                       f"{k} x{v:.3g}" for k, v in zip(names, np.exp(best.x)))})


def calibrate(*, measured: str | os.PathLike | None = None, write: bool = False,
              params_path: str | os.PathLike | None = None, prior: AneParams | None = None,
              convert: bool = True) -> tuple[AneParams, pd.DataFrame]:
    """Refit on the reference points (+ measured rows); return the params and their report; optionally save."""
    pts = load_points(measured, convert=convert)
    current = load_params(params_path)
    fitted = fit_params(pts, prior or load_params(default_priors_path()), version=current.version + 1)
    if write:
        save_params(fitted, params_path)
    return fitted, calibration_report(fitted, pts)
