"""Weight compression of a converted package (`--weight-bits`), with coremltools.optimize.coreml.

- 8 bits: linear symmetric int8 quantisation, per output channel (constexpr_affine_dequantize, iOS16+).
  Per channel because a single scale for a whole conv loses the small-magnitude output channels.
- 6 / 4 bits: palettisation, a 64- / 16-entry lookup table per tensor (constexpr_lut_to_dense, iOS16+),
  what Apple ships for SD on iPhones (<= 6 bits fits iOS memory limits).
  * deploy mode: k-means (coremltools uses the exact 1-D k-means for fp16 weights), the table that
    loses least accuracy; it costs seconds per large tensor.
  * profile mode: uniform tables. Latency depends on the table size and index width, not on the table's
    values, and the weights are random anyway, so the cheap clustering gives the same on-device program.
Tensors under coremltools' default threshold (2048 elements: norms, biases) stay fp16.
"""

from __future__ import annotations

from typing import Any

from snapbench.converters.options import ConvertOptions
from snapbench.converters.runtime import coremltools


def compression_info(opts: ConvertOptions) -> dict[str, Any]:
    """What the manifest records about compression (also part of the cache key via the options)."""
    if opts.weight_bits == 16:
        return {"weight_bits": 16, "method": "none" if opts.precision == "fp16" else "fp32"}
    if opts.weight_bits == 8:
        return {"weight_bits": 8, "method": "linear_quantization", "mode": "linear_symmetric",
                "granularity": "per_channel"}
    return {"weight_bits": opts.weight_bits, "method": "palettization", "mode": opts.palettization,
            "granularity": "per_tensor"}


def compress(mlmodel: Any, opts: ConvertOptions) -> Any:
    """The compressed model (a new MLModel), or the same one for 16 bits."""
    if opts.weight_bits == 16:
        return mlmodel
    ct = coremltools()
    cto = ct.optimize.coreml
    if opts.weight_bits == 8:
        op_config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
        return cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
    op_config = cto.OpPalettizerConfig(mode=opts.palettization, nbits=opts.weight_bits, granularity="per_tensor")
    return cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op_config))
