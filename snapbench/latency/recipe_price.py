"""What a mixed-bit recipe costs per UNet step: each compressible layer's op priced by the estimator at
every bit width, so that `compress analyze --latency-budget-ms` can choose widths under a latency budget.

    prices = layer_prices(source, resolve_device("iphone16promax"),
                          RunSettings(latent=128, attention="split_einsum"), widths=(2, 4, 6, 8, 16))
    prices.total_ms({"down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": 4, ...})   # ms per step

How:
1. the model's fp16 profile-mode packages at these settings (one per block signature, what `profile`
   prices; converted into the cache folder if missing) are read into op records, as the estimator reads any
   package (profilers/estimate/program_ops.py);
2. each layer is found among its package's weight constants by content, with the very matching that
   `convert --recipe` uses (mixed_bit.stored_fingerprints: the histogram of its fp16 values as the package
   stores them, so under an ANE attention (split_einsum, split_einsum_v2) each query projection scaled by
   its softmax scale), on the block whose conversion made the package (its `package_owner`, rebuilt with
   the same weights); every block of that signature has the same ops, so its layers map onto the same
   records by their names within the block;
3. each such op is priced by the cost model with the layer's weight stored as fp16 and as a palette of each
   width (stored_weights.with_palettized_layer: the packed indices and one table, what a recipe's package
   holds). A constant that also feeds something other than a weight input stays fp16 in a recipe's
   package (mixed_bit.op_configs), so its width changes nothing here either.
The cost model prices every op on its own (its time follows from its own FLOPs and bytes; placement and
dispatch segments follow from activations only), so a recipe's per-step figure is the fp16 figure plus each
layer's change: the estimator's own figure for the recipe's packages, labelled estimated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapbench.converters.options import ConvertOptions
from snapbench.converters.sensitivity import LayerPrices
from snapbench.devices.catalog import Device
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.settings import RunSettings


def layer_prices(source: ModelSource, device: Device, settings: RunSettings, widths: Sequence[int], *,
                 progress: bool = False) -> LayerPrices:
    """Every compressible layer's ms per UNet step at each width in `widths` (and fp16) on `device`."""
    import numpy as np

    from snapbench.converters.convert_blocks import cut
    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.converters.mixed_bit import layer_name
    from snapbench.converters.unet_chunks import LazyCheckpoint
    from snapbench.latency.packages import ConverterPackages
    from snapbench.model.units import names_in_root
    from snapbench.profilers.estimate.params import load_params

    if settings.weight_bits != 16 or settings.precision != "fp16":
        raise SnapbenchError("a recipe's layers are priced from fp16 packages: leave --weight-bits at 16")
    widths = tuple(sorted({*widths, 16}))
    opts = ConvertOptions.from_settings(settings)
    folder = ConverterPackages().folder_for(source, settings)
    result = convert(ConvertRequest(source, folder, opts, progress=progress, shared_folder=True))
    if result.failed:
        block, error = result.failed[0]
        raise SnapbenchError(f"{len(result.failed)} block(s) failed to convert, so the recipe's latency cannot be "
                             f"priced: {block}: {error}")
    entries = {e.file_id: e for e in result.manifest.blocks}
    meta, blocks = cut(source, opts)
    root_names = names_in_root(meta)
    units = {b.unit.file_id: b.unit for b in blocks}
    checkpoint = LazyCheckpoint(source) if source.weights_dir is not None or source.copies_file else None
    params = load_params()
    packages: dict[Path, _PackagePrices] = {}
    fp16_ms = 0.0
    layer_ms: dict[str, dict[int, float]] = {}
    for b in blocks:
        entry = entries.get(b.unit.file_id)
        if b.signature is None or entry is None or entry.package is None:
            continue  # nothing runs (a removed block with no shortcut): no package, no time
        path = folder / entry.package
        if path not in packages:
            owner = units[entry.package_owner or entry.file_id]
            packages[path] = _price_package(path, meta, owner, checkpoint, opts, device, params, widths)
        priced = packages[path]
        fp16_ms += priced.fp16_ms
        roots = root_names(b.unit)
        for name, ms in priced.layer_ms.items():
            layer_ms[layer_name(roots[name])] = ms
    return LayerPrices(device=device.id, device_name=device.name, estimator_version=int(params.version),
                       settings={"attention": settings.attention, "latent": settings.latent, "batch": settings.batch,
                                 "tokens": settings.tokens, "precision": settings.precision},
                       fp16_ms=float(np.round(fp16_ms, 6)), layer_ms=layer_ms)


@dataclass(frozen=True)
class _PackagePrices:
    """One package's fp16 figure and, per compressible layer (named within its block), its op's ms at each
    width."""

    fp16_ms: float
    layer_ms: dict[str, dict[int, float]]


def _price_package(path: Path, meta: Any, owner: Any, checkpoint: Any, opts: ConvertOptions, device: Device,
                   params: Any, widths: tuple[int, ...]) -> _PackagePrices:
    from snapbench.converters.unet_chunks import materialize_unit
    from snapbench.profilers.estimate.cost_model import prepare, price, total_ms
    from snapbench.profilers.estimate.program_ops import read_op_records
    from snapbench.profilers.estimate.stored_weights import with_palettized_layer

    records = read_op_records(path)
    unit = materialize_unit(meta, owner, checkpoint, opts.seed)
    ops, elements = _layer_ops(path, unit, opts.attention, {r.name: i for i, r in enumerate(records)})
    del unit
    hosts: dict[int, str] = {}
    for name, found in ops.items():
        for i in found:
            if i in hosts:  # one op reading two recipe layers: their widths would not price apart
                raise SnapbenchError(f"{path}: op {records[i].name} reads two compressible layers ({hosts[i]}, "
                                     f"{name}); per-layer pricing does not cover it")
            hosts[i] = name
    prepared = prepare(records, params.pad_bytes)
    base = price(prepared, device, params)
    per_width = {16: base.op_ms}
    for w in widths:
        if w != 16:
            changed = [with_palettized_layer(r, elements[hosts[i]], w) if i in hosts else r
                       for i, r in enumerate(records)]
            per_width[w] = price(prepare(changed, params.pad_bytes), device, params).op_ms
    layer_ms = {name: {w: float(sum(per_width[w][i] for i in found)) for w in widths} for name, found in ops.items()}
    # the package's own figure, as the estimator gives it; the layers change only their ops' times
    return _PackagePrices(total_ms(prepared, device, params), layer_ms)


def _layer_ops(path: Path, unit: Any, attention: str, index: dict[str, int]
               ) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """{layer name within the block: the record indices of the ops that read it as a weight} for the layers a
    recipe compresses, found by content among the package's constants (mixed_bit.stored_fingerprints, as
    `convert --recipe` finds them); a constant that also feeds a non-weight input maps to no op (it stays
    fp16). And each layer's elements."""
    import numpy as np

    from snapbench.converters.compression import WEIGHT_CONSUMERS, program_ops
    from snapbench.converters.mil_eval import load_program
    from snapbench.converters.mixed_bit import COMPRESSIBLE, fingerprint, stored_fingerprints

    want: dict[str, list[str]] = {}
    elements: dict[str, int] = {}
    for name, fp in stored_fingerprints(unit, attention).items():
        want.setdefault(fp, []).append(name)
        elements[name] = unit.get_parameter(name).numel()
    found: dict[str, list[tuple[int, ...]]] = {}
    program = load_program(path)
    for fn in program.functions.values():
        for op in program_ops(fn):
            val = op.outputs[0].val if op.op_type == "const" else None
            if not isinstance(val, np.ndarray) or val.size < COMPRESSIBLE or val.dtype.kind != "f":
                continue
            fp = fingerprint(val)
            if fp not in want:
                continue
            children = op.outputs[0].child_ops
            weight = all(c.op_type in WEIGHT_CONSUMERS for c in children)
            found.setdefault(fp, []).append(
                tuple(index[c.outputs[0].name] for c in children if c.outputs[0].name in index) if weight else ())
    del program
    ops: dict[str, tuple[int, ...]] = {}
    for fp, names in want.items():
        consts = found.get(fp, [])
        if len(consts) < len(names):
            raise SnapbenchError(f"{path}: layer {names[0]} matches no weight of its package (changed on the way to "
                                 "Core ML), so its width cannot be priced; convert --recipe would refuse it too")
        ops.update(zip(names, consts))
    return ops, elements
