"""Counting ops in converted packages' programs (shared by the recipe tests)."""

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
