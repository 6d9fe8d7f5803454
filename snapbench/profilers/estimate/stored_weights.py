"""Op records of a program whose weights are stored compressed, derived from its fp16 records.

    records = with_stored_weights(records, "pal4")     # 4-bit palettized: a quarter of the weight bytes
    records = with_stored_weights(records, "pal4g8")   # the same, one palette per group of 8 output channels
    records = with_stored_weights(records, "w8a8")     # int8 weights and int8 activations
    record = with_palettized_layer(record, 40_960, 4)   # one layer of a mixed-bit recipe at 4 bits

The engine expands compressed weights on the fly, so compression changes what is read from DRAM, not the
arithmetic; W8A8 also halves activation bytes and, on chips with an int8 path, speeds the MACs
(`int8_speedup`). Tables (a palette of 2^bits fp16 entries per tensor, or per group of G output channels
with `palNgG`: coremltools' per-grouped-channel palettes; a bare `g` is coremltools' default group of 32)
and sparsity masks (one bit per weight) are counted, and each op records how many palette tables it
fetches (`attrs["palette_tables"]`: the cost model prices each fetch at DRAM latency).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import replace

from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate.program_ops import OpRecord

# coremltools' OpPalettizerConfig(granularity="per_grouped_channel") default group size
DEFAULT_GROUP_SIZE = 32
_PALETTE = re.compile(r"pal([1-8])(?:g(\d*))?")


def palette_tables(r: OpRecord, weights: str) -> int:
    """How many palettes an op's weights carry under `weights`: one per tensor, or one per group of output
    channels (the weight's first axis: a conv's output channels, a linear layer's output features)."""
    m = _PALETTE.fullmatch(weights)
    if not m or not r.weight_elems:
        return 0
    if m.group(2) is None:
        return 1
    group = int(m.group(2) or DEFAULT_GROUP_SIZE)
    out = r.out_shapes[0] if r.out_shapes else ()
    channels = out[1] if r.type in ("conv", "conv_transpose") and len(out) >= 2 else out[-1] if out else 1
    return max(1, math.ceil(max(int(channels), 1) / max(group, 1)))


def palette_bytes(elements: int, bits: int, tables: int = 1) -> float:
    """Stored bytes of `elements` weights as a `bits`-bit palette: the packed indices and `tables` fp16
    tables of 2^bits entries (16 bits: plain fp16)."""
    return elements * 2.0 if bits == 16 else elements * bits / 8 + tables * 2 ** bits * 2


def with_palettized_layer(r: OpRecord, elements: int, bits: int) -> OpRecord:
    """The record with `elements` of its fp16 weights (one layer's weight tensor; its bias stays fp16, as
    coremltools leaves tensors under 2,048 elements) stored as a `bits`-bit palette with one table, what a
    mixed-bit recipe's package holds (`convert --recipe`). 16: the record as it is."""
    if bits == 16:
        return r
    stored = r.weight_bytes - palette_bytes(elements, 16) + palette_bytes(elements, bits)
    tables = int(r.float_attr("palette_tables")) + 1
    return replace(r, weight_bytes=stored, attrs={**r.attrs, "palette_tables": tables})


def _stored_bytes(r: OpRecord, weights: str) -> tuple[float, float]:
    """(bytes read, bits per weight) of one op's weights under `weights`."""
    n = r.weight_elems
    if weights in ("fp16", "fp32", "mixed-int8"):  # fp32 weights run as fp16 on the engine
        return r.weight_bytes, r.weight_bits
    m = _PALETTE.fullmatch(weights)
    if m:
        bits = int(m.group(1))
        return palette_bytes(n, bits, palette_tables(r, weights)), float(bits)
    if weights in ("w8", "w8a8"):
        return float(n), 8.0
    m = re.fullmatch(r"sparse(\d\d)", weights)
    if m:
        kept = 1 - int(m.group(1)) / 100
        return n * (2 * kept + 1 / 8), 16 * kept + 1
    raise SnapbenchError(f"unknown stored-weight format {weights!r}")


def with_stored_weights(records: Sequence[OpRecord], weights: str) -> list[OpRecord]:
    """The records with weights stored as `weights` (and int8 activations for w8a8)."""
    if weights in ("fp16", "fp32", "mixed-int8"):
        return list(records)
    out = []
    for r in records:
        if r.weight_elems and r.weight_bytes:
            b, bits = _stored_bytes(r, weights)
            tables = palette_tables(r, weights)
            r = replace(r, weight_bytes=b, weight_bits=bits,
                        attrs={**r.attrs, "palette_tables": tables} if tables else r.attrs)
        if weights == "w8a8" and r.type not in ("cast",):
            r = replace(r, in_dtypes=tuple("int8" if d == "fp16" else d for d in r.in_dtypes),
                        out_dtypes=tuple("int8" if d == "fp16" else d for d in r.out_dtypes))
        out.append(r)
    return out
