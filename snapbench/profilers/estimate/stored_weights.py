"""Op records of a program whose weights are stored compressed, derived from its fp16 records.

    records = with_stored_weights(records, "pal4")     # 4-bit palettized: a quarter of the weight bytes
    records = with_stored_weights(records, "w8a8")     # int8 weights and int8 activations

The engine expands compressed weights on the fly, so compression changes what is read from DRAM, not the
arithmetic; W8A8 also halves activation bytes and, on chips with an int8 path, speeds the MACs
(`int8_speedup`). Tables (a palette of 2^bits fp16 entries per tensor) and sparsity masks
(one bit per weight) are counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate.program_ops import OpRecord


def _stored_bytes(r: OpRecord, weights: str) -> tuple[float, float]:
    """(bytes read, bits per weight) of one op's weights under `weights`."""
    n = r.weight_elems
    if weights in ("fp16", "fp32", "mixed-int8"):  # fp32 weights run as fp16 on the engine
        return r.weight_bytes, r.weight_bits
    m = re.fullmatch(r"pal([1-8])(g?)", weights)
    if m:
        bits = int(m.group(1))
        # one fp16 table per tensor; per-group tables (the `g` suffix) are still bytes next to the indices
        return n * bits / 8 + 2 ** bits * 2, float(bits)
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
            r = replace(r, weight_bytes=b, weight_bits=bits)
        if weights == "w8a8" and r.type not in ("cast",):
            r = replace(r, in_dtypes=tuple("int8" if d == "fp16" else d for d in r.in_dtypes),
                        out_dtypes=tuple("int8" if d == "fp16" else d for d in r.out_dtypes))
        out.append(r)
    return out
