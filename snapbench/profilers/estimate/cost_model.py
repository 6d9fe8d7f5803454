"""Price op records on a device's Neural Engine: an op-level roofline with placement rules.

Per op on the engine:
    compute_s = FLOPs / (fp16 peak x efficiency[op class])          (elementwise FLOPs on padded rows)
    memory_s  = DRAM bytes / (bandwidth x bandwidth_efficiency)
    time      = max(compute_s, memory_s) + op_overhead
DRAM bytes are the weights (at their stored width; a gather reads only the rows it returns) plus every
activation too large for the on-chip working set: read by its consumer (softmax, norms and reductions
read such an input `reduction_passes` times, since the whole row cannot stay on chip) and written by its
producer. Smaller activations stay on chip between ops, and so do the centred tensor and its square inside
a normalisation the converter spelt out in elementwise ops (`_norm_internals`); the program's own inputs and
outputs cross DRAM whatever their size, and the CPU copies them in and out (`io_copy_s`, v10). Each
tensor's last axis is padded to `pad_bytes` (64 B), so a (.., 77) fp16 row costs 192 B, not 154.

Ops the engine does not run (gather, dilated conv, large pooling windows, upsampling beyond 2x, int32 or
fp32 tensors, dynamic shapes, slice_update, a tensor above `max_tensor_mb`) run on the CPU at
`cpu_gflops`, and pay for copying their activations across plus a hand-over per CPU segment. Each
maximal run of engine ops is one dispatched program and pays `dispatch_ms`.

Nothing here knows about attention: the original form's 4096 x 4096 score maps are large, non-resident
tensors (memory-bound, or beyond `max_tensor_mb`); split_einsum_v2's chunks are 8x smaller. The
difference emerges from the ops.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numpy as np

from snapbench.devices.catalog import Device
from snapbench.json_types import JSONObject
from snapbench.profilers.coreml_types import MLModel
from snapbench.profilers.estimate.params import CHIP_GENERATIONS, OP_CLASSES, AneParams, load_params
from snapbench.profilers.estimate.program_ops import OpRecord, dtype_bits

# A device fact of one (program, device) pair (a float), or of many stacked pairs: one per op (an array)
PerOp: TypeAlias = "float | np.ndarray"
# A count per (program, device) pair: an int, or an array of one per pair when stacked
PerPair: TypeAlias = "int | np.ndarray"

_CLASS_OF: dict[str, str] = {}
for _cls, _ops in {
    "conv": ("conv", "conv_transpose"),
    "matmul": ("matmul", "linear", "einsum", "scaled_dot_product_attention"),
    "activation": ("gelu", "silu", "sigmoid", "tanh", "exp", "erf", "softplus", "relu", "leaky_relu",
                   "clip", "rsqrt", "sqrt", "inverse", "log", "pow", "sin", "cos", "square", "abs", "sign"),
    "softmax": ("softmax",),
    "norm": ("layer_norm", "group_norm", "instance_norm", "batch_norm", "l2_norm", "local_response_norm"),
    "layout": ("transpose", "reshape", "squeeze", "expand_dims", "concat", "split", "slice_by_index",
               "slice_by_size", "tile", "pad", "identity", "stack", "pixel_shuffle", "space_to_depth",
               "depth_to_space", "band_part"),
    "resample": ("upsample_nearest_neighbor", "upsample_bilinear", "resize_bilinear", "resize_nearest_neighbor",
                 "resize", "max_pool", "avg_pool", "l2_pool"),
}.items():
    for _op in _ops:
        _CLASS_OF[_op] = _cls
# Ops that need a whole row before they can emit anything: softmax (max, then sum of exp, then normalise)
# and fused norms (mean/variance, then normalise) read a non-resident input more than once. A plain
# reduction streams its input once.
_MULTI_PASS = ("softmax", "norm")
_NEVER_ON_ENGINE = {
    "gather": "gather", "gather_nd": "gather", "gather_along_axis": "gather", "scatter": "scatter",
    "scatter_nd": "scatter", "scatter_along_axis": "scatter", "slice_update": "slice_update",
    "non_zero": "dynamic output", "argsort": "sort", "topk": "sort", "non_maximum_suppression": "nms",
    "cumsum": "cumsum", "random_uniform": "random", "random_normal": "random", "while_loop": "control flow",
    "cond": "control flow",
}
_GATHERS = frozenset({"gather", "gather_nd", "gather_along_axis"})
_UPSAMPLES = frozenset({"upsample_nearest_neighbor", "upsample_bilinear", "resize_bilinear",
                        "resize_nearest_neighbor", "resize"})
_POOLS = frozenset({"max_pool", "avg_pool", "l2_pool"})
_EXEMPT_DTYPE = frozenset({"cast"})  # the fp32 <-> fp16 I/O casts Core ML places at program edges


def op_class(op_type: str) -> str:
    if op_type.startswith("reduce_"):
        return "reduce"
    return _CLASS_OF.get(op_type, "elementwise")


def record_class(r: OpRecord) -> str:
    """The op class of a record: a conv with one input channel per group is depthwise (a vector-like op)."""
    c = op_class(r.type)
    if c == "conv" and r.type == "conv" and r.int_attr("groups") > 1 and r.in_shapes \
            and len(r.in_shapes[0]) >= 2 and r.int_attr("groups") == int(r.in_shapes[0][1]):
        return "depthwise"
    return c


# The engine's MAC array works on channel groups of this many lanes: a conv with 20 output channels
# occupies 32 lanes' worth of time. A stated assumption of the model (Apple's guidance: multiples of 16
# channels), not a fitted value.
LANES = 16


def _fill(c: float) -> float:
    c = max(float(c), 1.0)
    return c / (math.ceil(c / LANES) * LANES)


def _mac_shape(r: OpRecord, cls: str) -> tuple[float, float]:
    """(lane fill, output rows) of a conv/matmul: fill of its output and reduction channels, and the number
    of output positions x batch (the dimension the engine streams)."""
    out = r.out_shapes[0] if r.out_shapes else ()
    if not out:
        return 1.0, 1.0
    if cls in ("conv", "depthwise"):
        rows = float(out[0] * math.prod(out[2:])) if len(out) >= 3 else float(out[0])
        cout = out[1] if len(out) >= 2 else 1
        groups = r.int_attr("groups")
        cin = (r.in_shapes[0][1] / groups) if r.in_shapes and len(r.in_shapes[0]) >= 2 else 1
        return (_fill(cout) if cls == "depthwise" else _fill(cout) * _fill(cin)), rows
    rows = float(math.prod(out[:-1])) if len(out) >= 2 else 1.0
    k = r.flops / (2.0 * max(math.prod(out), 1))
    return _fill(out[-1]) * _fill(k), rows


@dataclass(frozen=True)
class CpuOp:
    type: str
    name: str
    reason: str
    ms: float


@dataclass(frozen=True)
class Estimate:
    """Predicted latency of one program on one device. `source` is always "estimate"."""

    device: str
    total_ms: float
    engine_ms: float
    cpu_ms: float
    overhead_ms: float
    compute_bound_ms: float
    memory_bound_ms: float
    by_op_type: dict[str, float]
    by_op_class: dict[str, float]
    cpu_ops: tuple[CpuOp, ...]
    n_ops: int
    n_engine_segments: int
    flops: float
    dram_bytes: float
    params_version: int
    source: str = "estimate"
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> JSONObject:
        return {
            "source": self.source, "device": self.device, "total_ms": round(self.total_ms, 4),
            "engine_ms": round(self.engine_ms, 4), "cpu_ms": round(self.cpu_ms, 4),
            "overhead_ms": round(self.overhead_ms, 4), "compute_bound_ms": round(self.compute_bound_ms, 4),
            "memory_bound_ms": round(self.memory_bound_ms, 4),
            "by_op_type": {k: round(v, 4) for k, v in self.by_op_type.items()},
            "by_op_class": {k: round(v, 4) for k, v in self.by_op_class.items()},
            "cpu_ops": [c.__dict__ for c in self.cpu_ops], "n_ops": self.n_ops,
            "n_engine_segments": self.n_engine_segments, "gflops": self.flops / 1e9,
            "dram_gb": self.dram_bytes / 1e9, "params_version": self.params_version,
        }


# --------------------------------------------------------------------------------------------------------
# Preparation: everything that depends on the records only (done once per program, reused per device)
# --------------------------------------------------------------------------------------------------------


def _padded_bytes(shape: Sequence[int], dtype: str, pad: float) -> tuple[float, float]:
    """(true bytes, bytes with the last axis padded to `pad` bytes)."""
    if not shape:
        b = dtype_bits(dtype) / 8.0
        return b, max(b, pad)
    esize = dtype_bits(dtype) / 8.0
    rows = math.prod(max(d, 1) for d in shape[:-1])
    row = max(shape[-1], 1) * esize
    return rows * row, rows * math.ceil(row / pad) * pad


@dataclass(frozen=True)
class PreparedOps:
    """Column arrays of a program's op records, ready for vectorised pricing."""

    records: tuple[OpRecord, ...]
    pad_bytes: float
    cls: np.ndarray           # op class index per op
    flops: np.ndarray         # FLOPs (MAC = 2)
    engine_flops: np.ndarray  # FLOPs the engine is priced for: a depthwise conv's taps are free (2 per output)
    pad_ratio: np.ndarray     # padded / true elements a vector op sweeps (its output; a reduction's input)
    weight_bytes: np.ndarray  # DRAM weight bytes per run
    view: np.ndarray          # bool: relabels a buffer, costs nothing
    static_cpu: np.ndarray    # bool: placement rule independent of parameters
    static_reason: tuple[str, ...]
    max_tensor: np.ndarray    # largest activation (padded bytes) per op
    in_op: np.ndarray         # tensor -> op index (inputs)
    in_bytes: np.ndarray
    in_fused: np.ndarray      # bool per input tensor: arrives straight from the fused producer, no DRAM
    out_op: np.ndarray
    out_bytes: np.ndarray
    out_fused: np.ndarray     # bool per output tensor: consumed inside a fused chain, never written
    io_bytes: np.ndarray      # all activation bytes per op (for CPU ops and copies)
    score_bytes: np.ndarray   # fused attention's internal score map (fp16) per op
    pool_kernel: np.ndarray
    upsample: np.ndarray
    fill: np.ndarray          # lane fill of conv/matmul (1 for vector ops)
    rows: np.ndarray          # output rows a conv/matmul streams (0 for vector ops: no size effect)
    int8: np.ndarray          # bool: int8 activations (W8A8)
    epilogue: np.ndarray      # bool: an elementwise op fused into the op producing its input
    tables: np.ndarray        # palette tables the op's weights carry (one per tensor or per channel group)
    in_program: np.ndarray    # bool per input tensor: a program input (no op produces it)
    out_program: np.ndarray   # bool per output tensor: a program output (no op consumes it)
    io_bytes_copied: float    # the program's inputs and outputs (padded bytes, each tensor once)


def prepare(records: Sequence[OpRecord], pad_bytes: float = 64.0) -> PreparedOps:
    n = len(records)
    cls = np.zeros(n, dtype=np.int64)
    flops = np.zeros(n)
    engine_flops = np.zeros(n)
    pad_ratio = np.ones(n)
    weight = np.zeros(n)
    view = np.zeros(n, dtype=bool)
    static_cpu = np.zeros(n, dtype=bool)
    reasons: list[str] = []
    max_tensor = np.zeros(n)
    io = np.zeros(n)
    score = np.zeros(n)
    pool = np.zeros(n)
    ups = np.ones(n)
    fill = np.ones(n)
    rows = np.zeros(n)
    int8 = np.zeros(n, dtype=bool)
    tables = np.array([r.float_attr("palette_tables") for r in records])
    in_op, in_b, out_op, out_b = [], [], [], []
    in_fused, out_fused = _fusion(records)
    in_program, out_program, io_copied = _program_io(records, pad_bytes)
    for i, r in enumerate(records):
        c = record_class(r)
        cls[i] = OP_CLASSES.index(c)
        if c in ("conv", "depthwise", "matmul"):
            fill[i], rows[i] = _mac_shape(r, c)
        int8[i] = "int8" in r.in_dtypes
        flops[i] = r.flops
        engine_flops[i] = 2.0 * math.prod(r.out_shapes[0]) if c == "depthwise" and r.out_shapes else r.flops
        view[i] = bool(r.attrs.get("view"))
        reason = _static_reason(r)
        static_cpu[i] = bool(reason)
        reasons.append(reason)
        for shape, dt in zip(r.in_shapes, r.in_dtypes):
            true, padded = _padded_bytes(shape, dt, pad_bytes)
            in_op.append(i)
            in_b.append(padded)
            io[i] += padded
            max_tensor[i] = max(max_tensor[i], padded)
        for k, (shape, dt) in enumerate(zip(r.out_shapes, r.out_dtypes)):
            true, padded = _padded_bytes(shape, dt, pad_bytes)
            out_op.append(i)
            out_b.append(padded)
            io[i] += padded
            max_tensor[i] = max(max_tensor[i], padded)
            if k == 0 and true > 0:
                pad_ratio[i] = padded / true
        # v11: a reduction sweeps its input's rows, so its padding is its input's: the (1, C, 1, 1) result of a
        # global pool or a squeeze-excite mean has one-element rows padded 32x, which v4-v10 charged on every
        # input element it reads (an SE block's mean over a 56 x 56 map: 3.4 us of vector work instead of 0.1)
        if c == "reduce" and r.in_shapes and r.in_dtypes:
            true, padded = _padded_bytes(r.in_shapes[0], r.in_dtypes[0], pad_bytes)
            if true > 0:
                pad_ratio[i] = padded / true
        # a gather reads the rows it returns, not its whole table
        weight[i] = min(r.weight_bytes, io[i]) if r.type in _GATHERS else r.weight_bytes
        score[i] = 2.0 * r.score_elems
        max_tensor[i] = max(max_tensor[i], score[i])
        if r.type in _POOLS:
            pool[i] = max(r.ints_attr("kernel_sizes"))
        if r.type in _UPSAMPLES and r.in_shapes and r.out_shapes and len(r.in_shapes[0]) >= 2:
            a, b = r.in_shapes[0], r.out_shapes[0]
            ups[i] = max(b[-1] / max(a[-1], 1), b[-2] / max(a[-2], 1))
    return PreparedOps(
        records=tuple(records), pad_bytes=pad_bytes, cls=cls, flops=flops, engine_flops=engine_flops,
        pad_ratio=pad_ratio,
        weight_bytes=weight, view=view, static_cpu=static_cpu, static_reason=tuple(reasons),
        max_tensor=max_tensor, in_op=np.asarray(in_op, dtype=np.int64), in_bytes=np.asarray(in_b),
        in_fused=np.asarray(in_fused, dtype=bool), out_op=np.asarray(out_op, dtype=np.int64),
        out_bytes=np.asarray(out_b), out_fused=np.asarray(out_fused, dtype=bool), io_bytes=io,
        score_bytes=score, pool_kernel=pool, upsample=ups, fill=fill, rows=rows, int8=int8,
        epilogue=np.bincount(np.asarray(in_op, dtype=np.int64), np.asarray(in_fused, dtype=float), minlength=n) > 0,
        tables=tables, in_program=np.asarray(in_program, dtype=bool), out_program=np.asarray(out_program, dtype=bool),
        io_bytes_copied=io_copied,
    )


def _program_io(records: Sequence[OpRecord], pad_bytes: float) -> tuple[list[bool], list[bool], float]:
    """Which tensors are the program's inputs (read by an op, produced by none) and outputs (produced by an
    op, read by none), flags parallel to `prepare`'s flattened input and output tensors, and their padded
    bytes, each tensor counted once (one input read by two ops is copied in once)."""
    produced = {n for r in records for n in r.out_names if n}
    consumed = {n for r in records for n in r.in_names if n}
    seen: dict[str, float] = {}
    in_p: list[bool] = []
    out_p: list[bool] = []
    for r in records:
        for n, shape, dt in zip(_pad_names(r.in_names, len(r.in_shapes)), r.in_shapes, r.in_dtypes):
            is_io = bool(n) and n not in produced
            in_p.append(is_io)
            if is_io:
                seen[n] = _padded_bytes(shape, dt, pad_bytes)[1]
        for n, shape, dt in zip(_pad_names(r.out_names, len(r.out_shapes)), r.out_shapes, r.out_dtypes):
            is_io = bool(n) and n not in consumed
            out_p.append(is_io)
            if is_io:
                seen[n] = _padded_bytes(shape, dt, pad_bytes)[1]
    return in_p, out_p, float(sum(seen.values()))


_FUSABLE = frozenset({"elementwise", "activation"})


def _fusion(records: Sequence[OpRecord]) -> tuple[list[bool], list[bool]]:
    """Which tensors never leave the engine because an elementwise op is fused into their producer.

    The engine's compiler folds elementwise work (bias, scale, activation, residual add) into the op that
    produces its input, so the intermediate stays in the pipeline. Rule: an elementwise/activation op that
    directly follows the producer of its input, as that tensor's only consumer, is fused into it. Only
    epilogues fuse: a softmax or norm after an elementwise op still reads the (possibly large) tensor, so
    `einsum -> softmax` and `einsum -> mul -> softmax` spill the same score map once (v3 fused in both
    directions and priced the second form without the spill).
    Returns flags parallel to the flattened input and output tensors of `prepare`.
    """
    consumers: dict[str, int] = {}
    for r in records:
        for n in r.in_names:
            consumers[n] = consumers.get(n, 0) + 1
    fused_names: set[str] = set()
    for j in range(1, len(records)):
        r, prev = records[j], records[j - 1]
        if not prev.out_names or op_class(r.type) not in _FUSABLE:
            continue
        for n in r.in_names:
            if n in prev.out_names and consumers.get(n, 0) == 1:
                fused_names.add(n)
    fused_names |= _norm_internals(records)
    in_f = [n in fused_names for r in records for n in _pad_names(r.in_names, len(r.in_shapes))]
    out_f = [n in fused_names for r in records for n in _pad_names(r.out_names, len(r.out_shapes))]
    return in_f, out_f


def _norm_internals(records: Sequence[OpRecord]) -> set[str]:
    """The tensors inside a normalisation that the converter spelt out in elementwise ops.

    coremltools lowers torch's group_norm (every GroupNorm of an SD UNet and VAE decoder, MobileViTv2's
    LayerNorm2d) to reduce_mean(x) -> d = sub(x, mean) -> square(d) -> reduce_mean -> add eps -> sqrt ->
    real_div(d, std). The engine runs the chain as one normalisation: the centred tensor `d` and its
    square never leave the engine, so the chain moves what a native norm op moves (x read twice: the two
    reductions' passes; the result written once), not a DRAM round trip per op. Returns the names of `d`
    and of its square, for each chain found.
    """
    producer = {n: i for i, r in enumerate(records) for n in r.out_names}
    readers: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        for n in r.in_names:
            readers.setdefault(n, []).append(i)

    def is_mean(name: str) -> bool:
        return name in producer and records[producer[name]].type == "reduce_mean"

    internal: set[str] = set()
    for r in records:
        if r.type != "sub" or len(r.in_names) != 2 or not r.out_names:
            continue
        a, b = r.in_names
        mean, x = (a, b) if is_mean(a) else (b, a)
        if not is_mean(mean) or x not in records[producer[mean]].in_names:
            continue
        d = r.out_names[0]
        users = [records[j] for j in readers.get(d, [])]
        squares = [u for u in users if u.type == "square" or (u.type == "mul" and list(u.in_names) == [d, d])]
        scaled = [u for u in users if u.type in ("real_div", "mul") and u not in squares]
        if len(squares) != 1 or not scaled or not squares[0].out_names:
            continue
        sq = squares[0].out_names[0]
        if [records[j].type for j in readers.get(sq, [])] != ["reduce_mean"]:
            continue
        internal |= {d, sq}
    return internal


def _pad_names(names: Sequence[str], n: int) -> list[str]:
    return list(names[:n]) + [""] * (n - len(names))


def _static_reason(r: OpRecord) -> str:
    """Why an op cannot run on the engine whatever the parameters ('' when it can)."""
    if r.type in _NEVER_ON_ENGINE:
        return f"{_NEVER_ON_ENGINE[r.type]} is not an engine op"
    if any(d < 0 for s in (*r.in_shapes, *r.out_shapes) for d in s):
        return "dynamic shape"
    if r.type in ("conv", "conv_transpose") and any(d > 1 for d in r.ints_attr("dilations")):
        return "dilated convolution"
    if r.type not in _EXEMPT_DTYPE:
        dts = set(r.in_dtypes) | set(r.out_dtypes)
        if dts & {"int32", "int64", "int16", "uint32", "uint64"}:
            return "int32 tensor"
        if dts & {"fp32", "fp64"}:
            return "fp32 tensor (the engine computes fp16)"
    return ""


# --------------------------------------------------------------------------------------------------------
# Pricing
# --------------------------------------------------------------------------------------------------------


def estimate_ops(ops: Sequence[OpRecord] | PreparedOps, device: Device, *,
                 params: AneParams | None = None) -> Estimate:
    """Price a program's op records on `device` (resolved once, by the caller: `devices.catalog.resolve_device`).
    Pass a `PreparedOps` to price one program many times."""
    params = params or load_params()
    prep = ops if isinstance(ops, PreparedOps) else prepare(list(ops), params.pad_bytes)
    if prep.pad_bytes != params.pad_bytes:
        prep = prepare(prep.records, params.pad_bytes)
    times = price(prep, device, params)
    return _summarise(prep, device, params, times)


@dataclass(frozen=True)
class _Times:
    op_ms: np.ndarray
    compute_ms: np.ndarray
    memory_ms: np.ndarray
    on_cpu: np.ndarray
    reason: tuple[str, ...]
    dram: np.ndarray
    segments: PerPair
    cpu_segments: PerPair
    overhead_ms: PerPair | float


@dataclass(frozen=True)
class Terms:
    """What a (program, device) pair contributes that the fitted parameters do not change.

    Placement, DRAM bytes and segment counts depend only on the records and on the parameters calibration
    never fits (working set, passes, padding, placement limits), so a fit computes them once and then
    re-prices many parameter vectors with a few array operations (`evaluate`). `price` is
    `evaluate(terms(...))`: one implementation for the estimator and the fit.
    """

    cls: np.ndarray
    work: np.ndarray        # FLOPs the engine spends (vector ops on padded rows)
    shape_eff: np.ndarray   # lane fill of conv/matmul
    rows: np.ndarray
    dram: np.ndarray        # engine DRAM bytes
    tables: np.ndarray      # palette tables fetched (each a dependent DRAM access: latency, not bandwidth)
    int8: np.ndarray        # int8 compute
    int8_path: PerOp        # the chip has an int8 engine path (per op when stacked)
    epilogue: np.ndarray
    on_cpu: np.ndarray
    view: np.ndarray
    cpu_flops: np.ndarray
    cpu_bytes: np.ndarray
    copy_bytes: np.ndarray
    io_copy_s: PerOp        # the program's inputs and outputs copied by the CPU at the SoC's full bandwidth, s (per pair)
    peak: PerOp             # catalog fp16 FLOP/s (per op when stacked)
    bandwidth: PerOp        # catalog SoC B/s (per op when stacked): the CPU side's
    engine_bandwidth: PerOp # the engine's measured B/s where the catalog has one, else 0 (per op when stacked)
    chip: PerPair           # index into CHIP_GENERATIONS, len(...) when it has no factor (per op when stacked)
    segments: PerPair       # engine segments (per pair when stacked)
    cpu_segments: PerPair
    reason: tuple[str, ...]


def terms(prep: PreparedOps, dev: Device, p: AneParams) -> Terms:
    from snapbench.devices.catalog import marketed_is_int8

    ws = p.working_set_mb * 2**20
    too_big = prep.max_tensor > p.max_tensor_mb * 2**20
    big_pool = prep.pool_kernel > p.max_pool_kernel
    big_up = prep.upsample > p.max_upsample + 1e-9
    on_cpu = (prep.static_cpu | too_big | big_pool | big_up) & ~prep.view
    reason = tuple(
        prep.static_reason[i] or ("tensor above max_tensor_mb" if too_big[i] else
                                  "pooling window too large" if big_pool[i] else
                                  "upsampling beyond max_upsample" if big_up[i] else "")
        for i in np.flatnonzero(on_cpu)
    )
    n = len(prep.records)
    # DRAM traffic of engine ops: weights + non-resident activations
    reducing = np.isin(prep.cls, [OP_CLASSES.index(c) for c in _MULTI_PASS])
    passes = np.where(reducing, p.reduction_passes, 1.0)
    # v10: a program's inputs and outputs live in DRAM whatever their size (the app hands them over and takes
    # them back); an intermediate under the working set stays on chip
    spill_in = np.where(((prep.in_bytes > ws) | prep.in_program) & ~prep.in_fused, prep.in_bytes, 0.0)
    spill_out = np.where(((prep.out_bytes > ws) | prep.out_program) & ~prep.out_fused, prep.out_bytes, 0.0)
    act = np.bincount(prep.in_op, spill_in, minlength=n) * passes + np.bincount(prep.out_op, spill_out, minlength=n)
    # a fused attention op writes its score map, reads it for the softmax (passes) and for the second matmul
    act += np.where(prep.score_bytes > ws, prep.score_bytes * (2.0 + p.reduction_passes), 0.0)
    mac = np.isin(prep.cls, [OP_CLASSES.index(c) for c in ("conv", "matmul")])
    # a depthwise conv runs all taps of an output element at once (v8): its work is per output element, so
    # a 7x7 kernel costs what a 3x3 does (v7 priced FastViT's 7x7 depthwise convs 5.4x a 3x3's)
    work = np.where(mac, prep.engine_flops, prep.engine_flops * prep.pad_ratio)
    placed = np.flatnonzero(~prep.view)
    seq = on_cpu[placed].astype(np.int8)
    if seq.size:
        starts = np.concatenate(([True], seq[1:] != seq[:-1]))
        segments = int(np.sum(starts & (seq == 0)))
        cpu_segments = int(np.sum(starts & (seq == 1)))
    else:
        segments = cpu_segments = 0
    return Terms(cls=prep.cls, work=work, shape_eff=prep.fill, rows=prep.rows, dram=prep.weight_bytes + act,
                 tables=prep.tables,
                 int8=prep.int8, int8_path=float(marketed_is_int8(dev.chip)), epilogue=prep.epilogue,
                 on_cpu=on_cpu, view=prep.view,
                 cpu_flops=prep.flops, cpu_bytes=prep.io_bytes + prep.weight_bytes, copy_bytes=prep.io_bytes,
                 io_copy_s=prep.io_bytes_copied / (dev.mem_bandwidth_gbps_est * 1e9),
                 peak=dev.ane_fp16_tflops * 1e12, bandwidth=dev.mem_bandwidth_gbps_est * 1e9,
                 engine_bandwidth=(dev.ane_bandwidth_gbps or 0.0) * 1e9,
                 chip=chip_index(dev.chip), segments=segments, cpu_segments=cpu_segments, reason=reason)


def chip_index(chip: str) -> int:
    gen = chip.split()[0] if chip else ""
    return CHIP_GENERATIONS.index(gen) if gen in CHIP_GENERATIONS else len(CHIP_GENERATIONS)


def stack_terms(parts: Sequence[Terms]) -> tuple[Terms, np.ndarray]:
    """Many (program, device) pairs as one: per-op arrays concatenated, device facts per op, segment counts
    per pair. Returns the stack and each op's pair index, so `evaluate` prices all pairs in one pass."""
    cat = np.concatenate
    sizes = [len(t.cls) for t in parts]
    per_op = lambda f: cat([np.full(n, getattr(t, f), dtype=float) for t, n in zip(parts, sizes)])  # noqa: E731
    stacked = Terms(
        cls=cat([t.cls for t in parts]), work=cat([t.work for t in parts]),
        shape_eff=cat([t.shape_eff for t in parts]), rows=cat([t.rows for t in parts]),
        dram=cat([t.dram for t in parts]), tables=cat([t.tables for t in parts]), int8=cat([t.int8 for t in parts]), int8_path=per_op("int8_path"),
        epilogue=cat([t.epilogue for t in parts]), on_cpu=cat([t.on_cpu for t in parts]),
        view=cat([t.view for t in parts]), cpu_flops=cat([t.cpu_flops for t in parts]),
        cpu_bytes=cat([t.cpu_bytes for t in parts]), copy_bytes=cat([t.copy_bytes for t in parts]),
        io_copy_s=np.array([t.io_copy_s for t in parts], dtype=float),
        peak=per_op("peak"), bandwidth=per_op("bandwidth"), engine_bandwidth=per_op("engine_bandwidth"),
        chip=per_op("chip").astype(np.int64),
        segments=np.array([t.segments for t in parts], dtype=float),
        cpu_segments=np.array([t.cpu_segments for t in parts], dtype=float), reason=(),
    )
    return stacked, np.repeat(np.arange(len(parts)), sizes)


def evaluate(t: Terms, p: AneParams) -> _Times:
    """Per-op times of a (program, device) pair under parameters `p`."""
    factors = np.array([p.chip_factor.get(g, 1.0) for g in CHIP_GENERATIONS] + [1.0])
    peak = t.peak * factors[t.chip]
    bw = t.bandwidth * p.bandwidth_efficiency
    # a measured engine bandwidth is already what the engine sustains: no efficiency applies to it
    engine_bw = np.where(np.asarray(t.engine_bandwidth) > 0, t.engine_bandwidth, bw)
    size = np.where(t.rows > 0, t.rows / (t.rows + p.size_half), 1.0)
    eff = np.array([p.efficiency[c] for c in OP_CLASSES])[t.cls] * t.shape_eff * size
    speed = np.where(t.int8, np.where(t.int8_path > 0, p.int8_speedup, p.int8_speedup_older), 1.0)
    # an epilogue runs in its producer's pipeline: a share of its own work, no fixed cost of its own
    share = np.where(t.epilogue, p.epilogue_cost, 1.0)
    compute_ms = t.work / (peak * eff * speed) * 1e3 * share
    # v9: a palette must be on chip before the weights that index it expand, so each table is a dependent
    # DRAM access paid at latency; the next tables are fetched while the indices stream, so an op's DRAM
    # side is the slower of the two streams. One table per tensor costs nothing visible; a table per 4
    # output channels can outlast the weights' own bytes (coremltools' grouped palettes, S10 and S11).
    memory_ms = np.maximum(t.dram / engine_bw * 1e3, t.tables * p.table_fetch_ns * 1e-6)
    engine_ms = (np.maximum(compute_ms, memory_ms) + p.memory_serial * np.minimum(compute_ms, memory_ms)
                 + np.where(t.epilogue, 0.0, p.op_overhead_us * 1e-3))
    # CPU ops: compute or memory bound on the CPU, plus copying their activations across
    cpu_ms = (np.maximum(t.cpu_flops / (p.cpu_gflops * 1e9), t.cpu_bytes / bw)
              + t.copy_bytes / (bw * p.copy_bandwidth_fraction)) * 1e3
    op_ms = np.where(t.on_cpu, cpu_ms, engine_ms)
    op_ms = np.where(t.view, 0.0, op_ms)
    # v10: Core ML copies a prediction's inputs into the engine's buffers and its outputs out of them on the
    # CPU, at the rate the CPU fallback's copies run (no new parameter)
    io_copy_ms = t.io_copy_s / (p.bandwidth_efficiency * p.copy_bandwidth_fraction) * 1e3
    overhead = t.segments * p.dispatch_ms + t.cpu_segments * p.cpu_sync_ms + io_copy_ms
    return _Times(op_ms, np.where(t.on_cpu, 0.0, compute_ms), np.where(t.on_cpu, 0.0, memory_ms), t.on_cpu,
                  t.reason, np.where(t.on_cpu | t.view, 0.0, t.dram), t.segments, t.cpu_segments, overhead)


def price(prep: PreparedOps, dev: Device, p: AneParams) -> _Times:
    return evaluate(terms(prep, dev, p), p)


def total_ms(prep: PreparedOps, dev: Device, p: AneParams) -> float:
    """Just the total: what calibration and evolution call in their inner loops."""
    t = price(prep, dev, p)
    return float(t.op_ms.sum() + t.overhead_ms)


def _summarise(prep: PreparedOps, dev: Device, p: AneParams, t: _Times) -> Estimate:
    on_engine = ~t.on_cpu & ~prep.view
    compute_bound = on_engine & (t.compute_ms >= t.memory_ms)
    by_type: dict[str, float] = {}
    by_class: dict[str, float] = {}
    for i, r in enumerate(prep.records):
        if t.op_ms[i]:
            by_type[r.type] = by_type.get(r.type, 0.0) + float(t.op_ms[i])
            c = "cpu_fallback" if t.on_cpu[i] else OP_CLASSES[prep.cls[i]]
            by_class[c] = by_class.get(c, 0.0) + float(t.op_ms[i])
    cpu_idx = np.flatnonzero(t.on_cpu)
    cpu_ops = tuple(CpuOp(prep.records[i].type, prep.records[i].name, why, float(t.op_ms[i]))
                    for i, why in zip(cpu_idx, t.reason))
    total = float(t.op_ms.sum() + t.overhead_ms)
    return Estimate(
        device=dev.id, total_ms=total, engine_ms=float(t.op_ms[on_engine].sum()),
        cpu_ms=float(t.op_ms[t.on_cpu].sum()), overhead_ms=float(t.overhead_ms),
        compute_bound_ms=float(t.op_ms[compute_bound].sum()),
        memory_bound_ms=float(t.op_ms[on_engine & ~compute_bound].sum()),
        by_op_type=dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
        by_op_class=dict(sorted(by_class.items(), key=lambda kv: -kv[1])),
        cpu_ops=cpu_ops, n_ops=int((~prep.view).sum()), n_engine_segments=int(t.segments),
        flops=float(prep.flops.sum()), dram_bytes=float(t.dram.sum()), params_version=p.version,
    )


# --------------------------------------------------------------------------------------------------------
# Conveniences
# --------------------------------------------------------------------------------------------------------


def estimate_package(path_or_mlmodel: str | os.PathLike[str] | MLModel, device: Device, *, params: AneParams | None = None) -> Estimate:
    """Estimate an `.mlpackage` (op records cached next to it) or an in-memory `ct.models.MLModel`."""
    from snapbench.profilers.estimate.program_ops import read_op_records

    return estimate_ops(read_op_records(path_or_mlmodel), device, params=params)
