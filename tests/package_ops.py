"""Shared by package tests: counting ops in converted packages' programs (the recipe tests), and a tiny
UNet cut and planned into two chunks (the chunk-building tests)."""

from __future__ import annotations

from pathlib import Path


def lut_ops(*packages: Path) -> int:
    """constexpr_lut_to_dense ops (palettized weights) in the packages' programs."""
    import coremltools as ct

    def ops(block):
        for op in block.operations:
            yield op
            for inner in op.blocks:
                yield from ops(inner)

    count = 0
    for pkg in packages:
        spec = ct.models.MLModel(str(pkg), skip_model_load=True).get_spec()
        for fn in spec.mlProgram.functions.values():
            for block in fn.block_specializations.values():
                count += sum(op.type == "constexpr_lut_to_dense" for op in ops(block))
    return count


def lut_widths(*packages: Path) -> dict[int, int]:
    """{bits: palettized weights with a table of 2^bits entries} over the packages' programs."""
    import math

    from snapbench.converters.compression import program_ops
    from snapbench.converters.mil_eval import load_program

    widths: dict[int, int] = {}
    for pkg in packages:
        for fn in load_program(pkg).functions.values():
            for op in program_ops(fn):
                if op.op_type == "constexpr_lut_to_dense":
                    bits = int(math.log2(op.lut.val.size))
                    widths[bits] = widths.get(bits, 0) + 1
    return widths


def chunk_plans(ref: str, opts):
    """`ref` cut at `opts` and planned into two UNet chunks: (source, meta model, blocks, plans)."""
    from snapbench.backbones import resolve_model
    from snapbench.converters.convert_blocks import cut
    from snapbench.converters.unet_chunks import plan_chunks
    from snapbench.converters.whole_unet import added_inputs

    source = resolve_model(ref)
    meta, blocks = cut(source, opts)
    cfg = meta.config
    plans = plan_chunks(blocks, meta.closes_skip, 2, batch=opts.batch,
                        sample=(opts.batch, cfg.in_channels, opts.latent, opts.latent),
                        context_dim=cfg.cross_attention_dim, tokens=opts.tokens, added=added_inputs(cfg, opts.batch))
    return source, meta, blocks, plans
