"""Weight compression of a converted package (`--weight-bits`), with coremltools.optimize.coreml.

- 8 bits: linear symmetric int8 quantisation, per output channel (constexpr_affine_dequantize, iOS16+).
  Per channel because a single scale for a whole conv loses the small-magnitude output channels.
- 6 / 4 bits: palettisation, a 64- / 16-entry lookup table per tensor (constexpr_lut_to_dense, iOS16+),
  what Apple ships for SD on iPhones (<= 6 bits fits iOS memory limits).
  * deploy mode: k-means, the table that loses least accuracy: palette.py's k-means of the tensor's
    fp16 histogram (at most 65,536 distinct values), handed to coremltools as a custom lut_function.
    coremltools' own k-means here clusters every element with scikit-learn (its exact kmeans1d path
    needs a kmeans1d that takes weights, which the current release does not): 534 s for one SD-v1.5
    UNet chunk, against well under a second per tensor here, with the same error to 0.1% (tests).
  * profile mode: uniform tables. Latency depends on the table size and index width, not on the table's
    values, and the weights are random anyway, so the cheap clustering gives the same on-device program.
Tensors under coremltools' default threshold (2048 elements: norms, biases) stay fp16, and so do
constants that are not weights (the text encoder's causal attention mask, -inf above the diagonal, which
a lookup table turns into NaN; its position table, added rather than multiplied): only constants that
every consumer reads as a weight (linear, conv, matmul, gather, ...) are compressed.

`nonfinite_weights` is the check every package passes before it is saved: NaN anywhere, or inf in a
weight or a compression table, fails the conversion instead of shipping a package that computes NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import numpy as np

from snapbench.converters.options import ConvertOptions
from snapbench.converters.runtime import coremltools
from snapbench.json_types import JSONObject
from snapbench.profilers.coreml_types import MilBlock, MilOp, MLModel


def compression_info(opts: ConvertOptions) -> JSONObject:
    """What the manifest records about compression (also part of the cache key via the options)."""
    if opts.recipe:
        widths: dict[str, int] = {}
        for _, bits in opts.recipe:
            widths[str(bits)] = widths.get(str(bits), 0) + 1
        return {"weight_bits": "mixed", "method": "palettization", "mode": "kmeans_histogram",
                "granularity": "per_tensor", "recipe": opts.recipe_digest, "layers_by_bits": dict(widths)}
    if opts.weight_bits == 16:
        return {"weight_bits": 16, "method": "none" if opts.precision == "fp16" else "fp32"}
    if opts.weight_bits == 8:
        return {"weight_bits": 8, "method": "linear_quantization", "mode": "linear_symmetric",
                "granularity": "per_channel"}
    return {"weight_bits": opts.weight_bits, "method": "palettization", "mode": opts.palettization,
            "granularity": "per_tensor"}


def compress(mlmodel: MLModel, opts: ConvertOptions) -> MLModel:
    """The compressed model (a new MLModel), or the same one for 16 bits: one width for every weight (a
    mixed-bit recipe is `mixed_bit.compress_mixed`)."""
    if opts.weight_bits == 16:
        return mlmodel
    ct = coremltools()
    cto = ct.optimize.coreml
    keep = {name: None for name in not_weights(mlmodel)}  # None: leave this const as it is
    # coremltools compresses a copy of the program it reloads from the saved spec and weights, so the
    # converted model's own in-memory program (every fp16 weight, 0.86 GB for an SD-v1.5 chunk) is dead
    # weight from here on: dropped, the caller's `mlmodel` still saves and reloads from its files.
    mlmodel._mil_program = None
    if opts.weight_bits == 8:
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config,
                                                                           op_name_configs=keep))
    if opts.palettization == "kmeans_histogram":
        op_config = cto.OpPalettizerConfig(mode="custom", lut_function=functools.partial(histogram_lut, nbits=opts.weight_bits),
                                           granularity="per_tensor")
    else:
        op_config = cto.OpPalettizerConfig(mode=opts.palettization, nbits=opts.weight_bits, granularity="per_tensor")
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config, op_name_configs=keep))


def histogram_lut(weight: np.ndarray, nbits: int) -> tuple[np.ndarray, np.ndarray]:
    """coremltools' lut_function: the table and indices from palette.py's k-means of the fp16 histogram."""
    from snapbench.converters.palette import palettize_fp16

    return palettize_fp16(weight, nbits)


# Ops whose constant inputs are weights (learned values a lookup table or int8 scale can stand for).
WEIGHT_CONSUMERS = frozenset({"linear", "conv", "conv_transpose", "matmul", "einsum", "gather", "gather_nd",
                              "embedding"})
COMPRESSION_THRESHOLD = 2048  # coremltools' default weight_threshold: smaller consts are never compressed


def not_weights(mlmodel: MLModel) -> list[str]:
    """Names of the consts large enough to be compressed that are not weights: a consumer other than a
    weight-reading op (a mask added to scores), or values that are not finite (no table can hold -inf).

    Read from the converted model's own MIL program. (coremltools' get_weights_metadata gives the same
    consts and consumers, but reloads every weight from the saved spec and counts its unique values with
    np.unique, a sort of every fp16 weight: 23 s for the text encoder alone, more than clustering it.)
    """
    program = getattr(mlmodel, "_mil_program", None)
    if program is None:
        return _not_weights_from_spec(mlmodel)
    found = []
    for fn in program.functions.values():
        for op in program_ops(fn):
            val = op.outputs[0].val if op.op_type == "const" else None
            if not isinstance(val, np.ndarray) or val.size < COMPRESSION_THRESHOLD:
                continue
            if any(c.op_type not in WEIGHT_CONSUMERS for c in op.outputs[0].child_ops) or (
                    val.dtype.kind == "f" and not np.isfinite(val).all()):
                found.append(op.name)
    return found


def _not_weights_from_spec(mlmodel: MLModel) -> list[str]:
    cto = coremltools().optimize.coreml
    found = []
    for name, w in cto.get_weights_metadata(mlmodel, weight_threshold=COMPRESSION_THRESHOLD).items():
        val = np.asarray(w.val)
        if any(c.op_type not in WEIGHT_CONSUMERS for c in w.child_ops) or (
                val.dtype.kind == "f" and not np.isfinite(val).all()):
            found.append(name)
    return found


def nonfinite_weights(mlmodel: MLModel) -> list[str]:
    """Consts that make a package compute garbage: any NaN, or inf in a weight or in a compression
    table / scale (a constexpr_* input). An -inf mask added to attention scores is fine."""
    program = getattr(mlmodel, "_mil_program", None)
    if program is None:
        return []
    bad = []
    for fn in program.functions.values():
        for op in program_ops(fn):
            if op.op_type != "const":
                continue
            val = op.outputs[0].val
            arr = np.asarray(val) if val is not None else None
            if arr is None or arr.dtype.kind != "f" or np.isfinite(arr).all():
                continue
            consumers = {c.op_type for c in op.outputs[0].child_ops}
            if np.isnan(arr).any() or consumers & WEIGHT_CONSUMERS or any(t.startswith("constexpr") for t in consumers):
                bad.append(op.name)
    return bad


def program_ops(block: MilBlock) -> Iterator[MilOp]:
    for op in block.operations:
        yield op
        for inner in getattr(op, "blocks", ()):
            yield from program_ops(inner)
