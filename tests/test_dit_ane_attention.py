"""Neural-Engine attention for DiT blocks, checked against diffusers' own forward by PSNR (>= 35 dB, the
gate apple/ml-stable-diffusion applies to conversions)."""

from __future__ import annotations

import pytest
import torch

from snapbench.converters.ane_attention import psnr
from snapbench.converters.dit_ane_attention import rewrite_block
from snapbench.dit.cut import example_inputs, make_units, run_chain
from snapbench.dit.source import build_dit, resolve_dit, to_arch_spec
from snapbench.dit.spec import DitSpec, load_preset
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.settings import InputShapes


def _psnr_of(spec: DitSpec, shapes: InputShapes, impl: str, chunk: int = 512, seed: int = 2) -> float:
    model = build_dit(ModelSource(spec.name, to_arch_spec(spec)), seed=seed)
    x = example_inputs(spec, shapes)
    units = make_units(model, spec.family)
    with torch.no_grad():
        ref = run_chain(units, x)  # diffusers' modules and processors, as they are
        ane = [rewrite_block(u, impl, query_chunk_size=chunk) if u.kind == "TB" else u for u in units]
        return psnr(ref, run_chain(ane, x))


@pytest.mark.parametrize("impl", ["split_einsum", "split_einsum_v2"])
@pytest.mark.parametrize("name", ["sd3-tiny", "sd35-tiny", "pixart-sigma-tiny", "sana-tiny"])
def test_rewritten_blocks_match_diffusers(name, impl):
    # chunk 5 of 16 image tokens (+ 8 text): uneven chunks, the last one short
    assert _psnr_of(load_preset(name), InputShapes(latent=8, batch=2, tokens=8), impl, chunk=5) >= 35


@pytest.mark.slow
def test_joint_attention_over_4096_image_tokens():
    """SD3's shapes at 1024x1024 (64x64 patches = 4,096 image tokens + 333 text tokens), narrow channels."""
    data = load_preset("sd35-tiny").to_dict()
    data["config"].update(pos_embed_max_size=64, sample_size=128, num_layers=2, dual_attention_layers=[0])
    spec = DitSpec.from_dict(data, source="test")
    db = _psnr_of(spec, InputShapes(latent=128, batch=1, tokens=333), "split_einsum_v2")
    assert db >= 35


def test_sana_linear_attention_over_1024_tokens():
    data = load_preset("sana-tiny").to_dict()
    data["config"].update(sample_size=32, num_layers=1)
    assert _psnr_of(DitSpec.from_dict(data, source="test"), InputShapes(latent=32, batch=1, tokens=300), "split_einsum") >= 35


def test_unknown_attention_is_refused():
    unit = make_units(build_dit(resolve_dit("sd3-tiny")), load_preset("sd3-tiny").family)[3]
    with pytest.raises(SnapbenchError, match="DiT blocks take"):
        rewrite_block(unit, "flash")
