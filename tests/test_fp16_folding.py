"""Converting a big part without its fp32 and fp16 weights side by side (converters/fp16_folding.py): the
module's tensors are released when coremltools' main pipeline starts, and each weight's fp16 cast is folded
as it is made. Real conversions of tiny UNet chunks; the package must be the default one, byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_refs import SDXL_SHALLOW
from package_ops import chunk_plans

from snapbench.converters.options import ConvertOptions
from snapbench.converters.unet_chunks import build_chunk


def _chunk(ref: str, opts: ConvertOptions, index: int):
    source, meta, blocks, plans = chunk_plans(ref, opts)
    plan = plans[index]
    return plan, build_chunk(meta, blocks, meta.closes_skip, plan, source, opts.attention, opts.seed).module


def _files(dest: Path) -> dict[str, bytes]:
    return {f.relative_to(dest).as_posix(): f.read_bytes() for f in sorted(dest.rglob("*"))
            if f.is_file() and f.name != "Manifest.json"}  # (item ids in it are random)


def _fp32_weights(prog) -> int:
    """fp32 consts of weight size left in a MIL program."""
    from snapbench.converters.compression import program_ops

    return sum(1 for fn in prog.functions.values() for op in program_ops(fn)
               if op.op_type == "const" and isinstance(op.outputs[0].val, np.ndarray)
               and op.outputs[0].val.dtype == np.float32 and op.outputs[0].val.size >= 256)


@pytest.mark.parametrize("ref, attention, index", [
    ("sd15-tiny", "original", 0),
    pytest.param(SDXL_SHALLOW, "split_einsum_v2", 1, marks=pytest.mark.slow, id="sdxl-shallow"),  # ANE attention,
    # text_time inputs
])
def test_released_conversion_is_the_default_package(tmp_path, monkeypatch, ref, attention, index):
    from coremltools.converters.mil.mil.passes.defs.quantization import add_fp16_cast

    from snapbench.converters.convert_package import convert_module, example_inputs
    from snapbench.converters.unet_chunks import at_batch_one

    opts = ConvertOptions(mode="deploy", latent=8, tokens=4, chunks=2, attention=attention)
    left: dict[str, int] = {}  # pass -> fp32 weights still in the program when it ends
    emptied: dict[str, bool] = {}  # pass -> the module's tensors were released when it started casting
    apply = add_fp16_cast.apply

    def counting(self, prog):
        emptied[type(self).__name__] = sum(p.numel() for p in module.parameters()) == 0
        apply(self, prog)
        left[type(self).__name__] = _fp32_weights(prog)

    monkeypatch.setattr(add_fp16_cast, "apply", counting)
    packages = []
    for release in (False, True):
        plan, module = _chunk(ref, opts, index)
        n = sum(p.numel() for p in module.parameters())
        dest = tmp_path / str(release) / f"{plan.name}.mlpackage"
        convert_module(module, plan.io, opts, dest, metadata={}, description="chunk",
                       inputs=example_inputs(at_batch_one(plan.io)), release=release)
        packages.append(_files(dest))
        # released: the module's tensors are empty (the caller's references too)
        assert (sum(p.numel() for p in module.parameters()) == 0) is release and n > 0
    assert packages[0] == packages[1]
    # coremltools' pass leaves every fp32 weight beside its fp16 copy (dead code, dropped passes later);
    # the folding pass ends with none: each went as its fp16 copy was made
    assert left["add_fp16_cast"] > 10 and left["add_fp16_cast_folding"] == 0, left
    assert emptied == {"add_fp16_cast": False, "add_fp16_cast_folding": True}


def test_folding_is_only_for_fp16_and_clears_its_hook():
    import coremltools as ct

    from snapbench.converters.fp16_folding import DEFAULT_PASS, FOLDING_PASS, folding_fp16, folding_pass

    calls: list[int] = []
    pipeline = ct.PassPipeline.DEFAULT
    where = pipeline.passes.index(DEFAULT_PASS)
    with folding_fp16(pipeline, lambda: calls.append(1)) as p:
        assert p.passes[where] == FOLDING_PASS and DEFAULT_PASS not in p.passes
        assert folding_pass().release is not None
    assert folding_pass().release is None and not calls  # never run: the hook goes with the conversion
    fp32 = ct.PassPipeline.DEFAULT
    fp32.remove_passes([DEFAULT_PASS])
    with folding_fp16(fp32, lambda: calls.append(1)) as p:
        assert FOLDING_PASS not in p.passes
