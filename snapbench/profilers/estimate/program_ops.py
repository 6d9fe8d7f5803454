"""Read a Core ML ML Program into flat op records: what each op computes and which bytes it touches.

The records are all the cost model needs (op type, shapes, dtypes, FLOPs, activation and weight bytes,
and the few attributes that decide Neural Engine placement), so a package is parsed once and priced
many times. They are read from the model's protobuf spec, not from a rebuilt MIL program: the spec
already carries every var's static shape and dtype, and weights need not be loaded at all (their values
never change latency; their stored dtypes and shapes are in the spec). The same path therefore serves a
freshly converted `ct.models.MLModel` and an `.mlpackage` on disk loaded with `skip_model_load=True`.

Weights are counted at their stored width: fp16 consts at 16 bits, palettized weights
(`constexpr_lut_to_dense`: packed uint4/uint6/uint8 indices + a small LUT) at their index width,
int8 weights (`constexpr_affine_dequantize`, `constexpr_blockwise_shift_scale`) at 8 bits plus scales.
A constexpr op's output is a dense weight whose "stored bytes" are the sum of its const inputs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, TypeVar

from snapbench.atomic import atomic_write_text
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSON, JSONObject
from snapbench.profilers.coreml_types import MLModel

T = TypeVar("T")

# Bumped whenever the record format or the FLOP conventions change, so stale caches are not reused.
RECORDS_VERSION = 3

# MIL DataType enum value -> (name, bits). From coremltools.proto.MIL_pb2.DataType.
_DTYPES: dict[int, tuple[str, int]] = {
    1: ("bool", 8), 2: ("string", 8), 10: ("fp16", 16), 11: ("fp32", 32), 12: ("fp64", 64),
    13: ("bf16", 16), 21: ("int8", 8), 22: ("int16", 16), 23: ("int32", 32), 24: ("int64", 64),
    25: ("int4", 4), 31: ("uint8", 8), 32: ("uint16", 16), 33: ("uint32", 32), 34: ("uint64", 64),
    35: ("uint4", 4), 36: ("uint2", 2), 37: ("uint1", 1), 38: ("uint6", 6), 39: ("uint3", 3),
    40: ("fp8", 8), 41: ("fp8", 8),
}

# FLOPs per output element for ops that are not MAC-based. Conventions, not calibration: they only
# need to rank ops sensibly inside one efficiency class (each class has its own fitted efficiency).
_FLOPS_PER_ELEMENT: dict[str, float] = {
    "softmax": 5.0, "layer_norm": 8.0, "group_norm": 8.0, "instance_norm": 8.0, "batch_norm": 2.0,
    "l2_norm": 4.0, "local_response_norm": 8.0,
    "gelu": 8.0, "silu": 4.0, "sigmoid": 4.0, "tanh": 4.0, "exp": 4.0, "erf": 8.0, "softplus": 4.0,
    "rsqrt": 2.0, "sqrt": 2.0, "inverse": 2.0, "log": 4.0, "pow": 4.0,
}

# Ops that only relabel a buffer when the last axis is unchanged (no copy on the engine).
_VIEW_OPS = frozenset({"reshape", "squeeze", "expand_dims", "identity"})
_FREE_OPS = frozenset({"const", "read_state", "write_state", "coreml_update_state"})


class OpRecordDoc(TypedDict):
    """An `OpRecord` as the records caches hold it (`OpRecord.to_json`); shapes are lists in JSON."""

    type: str
    name: str
    in_shapes: list[list[int]]
    in_dtypes: list[str]
    out_shapes: list[list[int]]
    out_dtypes: list[str]
    flops: float
    weight_bytes: float
    weight_elems: int
    weight_bits: float
    score_elems: int
    attrs: JSONObject
    in_names: list[str]
    out_names: list[str]


@dataclass(frozen=True)
class OpRecord:
    """One MIL operation, priced later by the cost model.

    `in_shapes`/`out_shapes` list activation tensors only (not weights, not small parameter consts).
    `weight_bytes` is what the op reads from stored weights; `flops` counts a MAC as 2.
    `score_elems` is the attention score map a fused attention op materialises internally (0 otherwise).
    """

    type: str
    name: str
    in_shapes: tuple[tuple[int, ...], ...]
    in_dtypes: tuple[str, ...]
    out_shapes: tuple[tuple[int, ...], ...]
    out_dtypes: tuple[str, ...]
    flops: float
    weight_bytes: float
    weight_elems: int = 0
    weight_bits: float = 0.0
    score_elems: int = 0
    attrs: JSONObject = field(default_factory=dict)  # small parameters: groups, kernel_sizes, perm, view ...
    in_names: tuple[str, ...] = ()  # activation var names, parallel to in_shapes (for fusion analysis)
    out_names: tuple[str, ...] = ()

    def to_json(self) -> OpRecordDoc:
        return OpRecordDoc(type=self.type, name=self.name, in_shapes=[list(s) for s in self.in_shapes],
                           in_dtypes=list(self.in_dtypes), out_shapes=[list(s) for s in self.out_shapes],
                           out_dtypes=list(self.out_dtypes), flops=self.flops, weight_bytes=self.weight_bytes,
                           weight_elems=self.weight_elems, weight_bits=self.weight_bits,
                           score_elems=self.score_elems, attrs=dict(self.attrs), in_names=list(self.in_names),
                           out_names=list(self.out_names))

    def int_attr(self, key: str, default: int = 1) -> int:
        """An integer parameter (`groups`); `default` when absent or 0."""
        v = self.attrs.get(key)
        return int(v) if isinstance(v, (int, float)) and v else default

    def float_attr(self, key: str) -> float:
        """A numeric parameter (`palette_tables`); 0 when absent."""
        v = self.attrs.get(key)
        return float(v) if isinstance(v, (int, float)) and v else 0.0

    def ints_attr(self, key: str, default: int = 1) -> list[int]:
        """A list-of-integers parameter (`kernel_sizes`, `dilations`); `[default]` when absent or empty."""
        v = self.attrs.get(key)
        return [int(x) for x in v if isinstance(x, (int, float))] if isinstance(v, list) and v else [default]

    @staticmethod
    def from_json(d: OpRecordDoc) -> OpRecord:
        return OpRecord(
            type=d["type"], name=d["name"],
            in_shapes=tuple(tuple(s) for s in d["in_shapes"]), in_dtypes=tuple(d["in_dtypes"]),
            out_shapes=tuple(tuple(s) for s in d["out_shapes"]), out_dtypes=tuple(d["out_dtypes"]),
            flops=float(d["flops"]), weight_bytes=float(d["weight_bytes"]),
            weight_elems=int(d.get("weight_elems", 0)), weight_bits=float(d.get("weight_bits", 0.0)),
            score_elems=int(d.get("score_elems", 0)), attrs=dict(d.get("attrs", {})),
            in_names=tuple(d.get("in_names", ())), out_names=tuple(d.get("out_names", ())),
        )


def dtype_bits(dtype: str) -> int:
    for name, bits in _DTYPES.values():
        if name == dtype:
            return bits
    raise SnapbenchError(f"unknown dtype {dtype!r} in op records")


# --------------------------------------------------------------------------------------------------------
# Reading the spec
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Var:
    shape: tuple[int, ...]  # -1 for a dimension that is not static
    dtype: str
    value: JSON = None  # small immediate const values (bools, ints, strings) that ops read as parameters
    stored_bytes: float = 0.0  # > 0 for weights: bytes as stored (packed width)
    is_weight: bool = False


def _tensor_type(vt) -> tuple[tuple[int, ...], str]:
    which = vt.WhichOneof("type")
    if which != "tensorType":
        return (), "other"
    tt = vt.tensorType
    dims = []
    for d in tt.dimensions:
        dims.append(int(d.constant.size) if d.WhichOneof("dimension") == "constant" else -1)
    return tuple(dims), _DTYPES.get(tt.dataType, ("other", 16))[0]


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def _nbytes(shape: tuple[int, ...], dtype: str) -> float:
    return _numel(shape) * dtype_bits(dtype) / 8.0 if dtype not in ("other", "string") else 0.0


def _immediate(value) -> JSON:
    """The Python value of a small immediate const (parameter consts like perm, transpose_x, equation)."""
    if value.WhichOneof("value") != "immediateValue":
        return None
    tv = value.immediateValue.tensor
    kind = tv.WhichOneof("value")
    if kind is None:
        return None
    vals = list(getattr(tv, kind).values)
    shape, _ = _tensor_type(value.type)
    if kind == "bytes":
        return None
    if len(shape) == 0 and len(vals) == 1:
        v = vals[0]
        return v.decode() if isinstance(v, bytes) else v
    return vals


def _stored_value_bytes(value) -> float:
    shape, dtype = _tensor_type(value.type)
    return _nbytes(shape, dtype) if dtype != "other" else 0.0


def records_from_spec(spec) -> list[OpRecord]:
    """Flatten the `main` function of an ML Program spec into op records (nested blocks included)."""
    if spec.WhichOneof("Type") != "mlProgram":
        raise SnapbenchError("the estimator reads ML Program models only (convert_to='mlprogram'); "
                             f"this model is a {spec.WhichOneof('Type')}")
    functions = spec.mlProgram.functions
    if "main" not in functions:
        raise SnapbenchError(f"ML Program has no 'main' function (has: {', '.join(functions)})")
    fn = functions["main"]
    block = fn.block_specializations[fn.opset]
    env: dict[str, _Var] = {}
    for inp in fn.inputs:
        shape, dtype = _tensor_type(inp.type)
        env[inp.name] = _Var(shape, dtype)
    records: list[OpRecord] = []
    _walk_block(block, env, records)
    return records


def _walk_block(block, env: dict[str, _Var], records: list[OpRecord]) -> None:
    for op in block.operations:
        _visit(op, env, records)
        for nested in op.blocks:
            for inp in nested.inputs:
                env.setdefault(inp.name, _Var((), "other"))
            _walk_block(nested, env, records)


def _visit(op, env: dict[str, _Var], records: list[OpRecord]) -> None:
    outs = [(o.name, *_tensor_type(o.type)) for o in op.outputs]
    if op.type == "const":
        val = op.attributes.get("val")
        name, shape, dtype = outs[0]
        imm = _immediate(val) if val is not None else None
        env[name] = _Var(shape, dtype, value=imm, stored_bytes=_nbytes(shape, dtype), is_weight=True)
        return
    if op.type.startswith("constexpr_"):
        # A decompression op: its inputs and attributes are stored (packed) constants; the dense result is a
        # weight of the op that consumes it. The engine reads the packed form and expands it on the fly.
        stored = sum(_stored_value_bytes(v) for k, v in op.attributes.items() if k != "name")
        for arg in op.inputs.values():
            for b in arg.arguments:
                if b.name and b.name in env:
                    stored += env[b.name].stored_bytes
        for name, shape, dtype in outs:
            env[name] = _Var(shape, dtype, stored_bytes=stored / max(len(outs), 1), is_weight=True)
        return

    params: JSONObject = {}
    acts: list[tuple[str, _Var]] = []
    act_names: list[str] = []
    operands: dict[str, list[tuple[int, ...]]] = {}  # every tensor operand's shape, weights included
    weight_bytes = 0.0
    weight_elems = 0
    for key, arg in op.inputs.items():
        for b in arg.arguments:
            if not b.name:
                params[key] = _immediate(b.value)
                continue
            var = env.get(b.name)
            if var is None:
                continue
            operands.setdefault(key, []).append(var.shape)
            if not var.is_weight:
                acts.append((key, var))
                act_names.append(b.name)
            elif var.value is not None and _numel(var.shape) <= 16:
                params[key] = var.value  # a parameter (perm, axes, transpose_x, equation ...), not a weight
            else:
                weight_bytes += var.stored_bytes
                weight_elems += _numel(var.shape)
    for name, shape, dtype in outs:
        env[name] = _Var(shape, dtype)
    if op.type in _FREE_OPS:
        return

    in_shapes = tuple(v.shape for _, v in acts)
    out_shapes = tuple(s for _, s, _ in outs)
    operand = {k: v[0] for k, v in operands.items()}
    flops, score = _flops(op.type, operand, out_shapes, params, operands.get("values", []))
    attrs = {k: v for k, v in params.items() if _jsonable(v) and k != "name"}
    if op.type in _VIEW_OPS and in_shapes and out_shapes and in_shapes[0][-1:] == out_shapes[0][-1:]:
        attrs["view"] = True  # same last axis: a relabelled buffer, no data movement
    bits = (8.0 * weight_bytes / weight_elems) if weight_elems else 0.0
    records.append(OpRecord(
        type=op.type, name=outs[0][0] if outs else op.type,
        in_shapes=in_shapes, in_dtypes=tuple(v.dtype for _, v in acts),
        out_shapes=out_shapes, out_dtypes=tuple(d for _, _, d in outs),
        flops=float(flops), weight_bytes=float(weight_bytes), weight_elems=int(weight_elems),
        weight_bits=round(bits, 3), score_elems=int(score), attrs=attrs,
        in_names=tuple(act_names), out_names=tuple(n for n, _, _ in outs),
    ))


def _jsonable(v: object) -> bool:
    if isinstance(v, (bool, int, float, str)) or v is None:
        return True
    if isinstance(v, list) and len(v) <= 16:
        return all(isinstance(x, (bool, int, float, str)) for x in v)
    return False


def _flops(op_type: str, operand: dict[str, tuple[int, ...]], out_shapes, params,
           values: list[tuple[int, ...]]) -> tuple[float, int]:
    """FLOPs of one op (a MAC counts 2), and the score elements a fused attention op materialises.
    `values`: the shapes of a tuple input `values` (MIL einsum's operands), in order."""
    out_n = _numel(out_shapes[0]) if out_shapes else 0
    if op_type in ("conv", "conv_transpose"):
        w = operand.get("weight")
        if not w:
            return 0.0, 0
        if op_type == "conv":
            return 2.0 * out_n * _numel(w[1:]), 0  # each output: C_in/groups x kernel MACs
        xs = operand.get("x", ())
        return 2.0 * _numel(xs) * _numel(w[1:]), 0
    if op_type == "linear":
        w = operand.get("weight")
        return (2.0 * out_n * w[-1], 0) if w else (0.0, 0)
    if op_type == "matmul":
        xm = operand.get("x")
        if not xm:
            return 0.0, 0
        inner = xm[-2] if params.get("transpose_x") else xm[-1]
        if len(xm) == 1:
            inner = xm[0]
        return 2.0 * out_n * inner, 0
    if op_type == "einsum":
        return 2.0 * _einsum_macs(params.get("equation"), values), 0
    if op_type == "scaled_dot_product_attention":
        q, k, v = operand.get("query"), operand.get("key"), operand.get("value")
        if not (q and k and v):
            return 0.0, 0
        lead = _numel(q[:-2])
        scores = lead * q[-2] * k[-2]
        return 2.0 * scores * (q[-1] + v[-1]) + 5.0 * scores, scores
    if op_type in _FLOPS_PER_ELEMENT:
        return _FLOPS_PER_ELEMENT[op_type] * out_n, 0
    if op_type.startswith("reduce_"):
        x = operand.get("x", ())
        return float(_numel(x)), 0
    return float(out_n), 0  # elementwise, layout and everything else: one op per output element


def _einsum_macs(equation: object, shapes: list[tuple[int, ...]]) -> float:
    """MACs of a two-operand einsum: the product of the sizes of every distinct index."""
    if not isinstance(equation, str) or "->" not in equation:
        return 0.0
    lhs = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, shape in zip(lhs, shapes):
        for ch, n in zip(term, shape):
            sizes[ch] = max(sizes.get(ch, 1), int(n))
    return float(math.prod(sizes.values())) if sizes else 0.0


# --------------------------------------------------------------------------------------------------------
# Entry points and cache
# --------------------------------------------------------------------------------------------------------


def read_op_records(model_or_path: str | os.PathLike[str] | MLModel) -> list[OpRecord]:
    """Op records of a `ct.models.MLModel` or an `.mlpackage` path, cached next to a package on disk."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return _records_for_package(Path(model_or_path))
    get_spec = getattr(model_or_path, "get_spec", None)
    if get_spec is None:
        raise SnapbenchError(f"expected a Core ML model or an .mlpackage path, got {type(model_or_path).__name__}")
    return records_from_spec(get_spec())


def _package_spec_file(path: Path) -> Path:
    spec = path / "Data" / "com.apple.CoreML" / "model.mlmodel"
    if not spec.is_file():
        raise SnapbenchError(f"{path} is not an .mlpackage (no Data/com.apple.CoreML/model.mlmodel)")
    return spec


def package_key(path: Path) -> str:
    """Cache key of a package: the spec bytes (graph, shapes, dtypes, blob offsets) and the weight file size.

    Weight values never change an op record, so the (possibly GB-sized) weight file is not hashed;
    its size changes with any change of stored width.
    """
    spec = _package_spec_file(path)
    h = hashlib.sha256(spec.read_bytes())
    weights = path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    h.update(str(weights.stat().st_size if weights.exists() else 0).encode())
    h.update(f"records-v{RECORDS_VERSION}".encode())
    return h.hexdigest()[:20]


def cache_path_for(path: Path) -> Path:
    return path.with_name(path.name + ".ops.json")


def _records_for_package(path: Path) -> list[OpRecord]:
    key = package_key(path)
    cache = cache_path_for(path)
    cached = load_records(cache, key=key)
    if cached is not None:
        return cached
    import coremltools as ct  # heavy import only when a package must really be parsed

    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    records = records_from_spec(spec)
    save_records(cache, records, key=key, source=str(path))
    return records


def write_records_doc(path: Path, payload: Mapping[str, object], *, key: str, source: str) -> None:
    """A JSON cache of op records, stamped with what it was made from and the record format."""
    doc = {"key": key, "source": source, "records_version": RECORDS_VERSION, **payload}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")))


def read_records_doc(path: Path, *, key: str | None = None, parse: Callable[[dict], T]) -> T | None:
    """`parse(doc)` of a document written by `write_records_doc`; None when missing, stale (other key or
    record format) or damaged, so the caller rebuilds it."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        if doc.get("records_version") != RECORDS_VERSION or (key is not None and doc.get("key") != key):
            return None
        return parse(doc)
    except (ValueError, KeyError, TypeError):
        return None


def save_records(path: Path, records: list[OpRecord], *, key: str, source: str) -> None:
    write_records_doc(path, {"ops": [r.to_json() for r in records]}, key=key, source=source)


def load_records(path: Path, *, key: str | None = None) -> list[OpRecord] | None:
    return read_records_doc(path, key=key, parse=lambda doc: [OpRecord.from_json(r) for r in doc["ops"]])
