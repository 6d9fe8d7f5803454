"""Whole UNet (one package, two chunks) and the pipeline parts, on test-sized configs."""

from __future__ import annotations

import pytest

from snapbench.backbones import resolve_model
from snapbench.converters.components import text_encoder_config, vae_config
from snapbench.converters.entry import ConvertRequest, convert
from snapbench.converters.manifest import load_manifest
from snapbench.converters.options import ConvertOptions

TINY = dict(latent=8, tokens=4, jobs=1)


def _spec(path):
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def test_text_encoder(tmp_path):
    out = tmp_path / "te"
    r = convert(ConvertRequest(resolve_model("sd15-tiny"), out, ConvertOptions(**TINY), "text_encoder", progress=False))
    assert r.ok and r.converted == ["text_encoder"]
    m = load_manifest(out)
    b = m.blocks[0]
    assert m.complete and m.content == "text_encoder"
    assert b.inputs == [{"name": "input_ids", "shape": [1, 4]}]
    assert b.outputs == [{"name": "last_hidden_state", "shape": [1, 4, 16]}]  # the UNet's context
    spec = _spec(m.package_path("text_encoder"))
    assert spec.description.input[0].type.multiArrayType.dataType == spec.description.input[0].type.multiArrayType.INT32


def test_vae_decoder_snapfusion_is_half_width(tmp_path):
    out = tmp_path / "vae"
    r = convert(ConvertRequest(resolve_model("snapfusion-tiny"), out, ConvertOptions(**TINY), "vae_decoder", progress=False))
    assert r.ok
    b = load_manifest(out).blocks[0]
    assert b.inputs == [{"name": "latent", "shape": [1, 4, 8, 8]}]
    assert b.outputs == [{"name": "image", "shape": [1, 3, 64, 64]}]


def test_part_configs_for_the_real_models():
    import torch
    from diffusers import AutoencoderKL
    from transformers import CLIPTextConfig, CLIPTextModel

    from snapbench.converters.components import VAEDecoder

    title, cfg = text_encoder_config(768)
    with torch.device("meta"):
        params = sum(p.numel() for p in CLIPTextModel(CLIPTextConfig(**cfg)).parameters())
    assert "ViT-L/14" in title and 122e6 < params < 124e6  # the paper's 123M
    sizes = {}
    for name in ("sd15", "snapfusion"):
        _, vcfg = vae_config(resolve_model(name))
        with torch.device("meta"):
            sizes[name] = sum(p.numel() for p in VAEDecoder(AutoencoderKL(**vcfg)).parameters())
    assert 45e6 < sizes["sd15"] < 55e6  # ~50M
    assert 0.2 < sizes["snapfusion"] / sizes["sd15"] < 0.3  # about a quarter (paper: 13M)


@pytest.mark.slow
def test_whole_unet_and_chunks(tmp_path, monkeypatch):
    import tempfile

    system_tmp = tmp_path / "system-tmp"  # coremltools' temporaries (ct.convert's, bisect_model's) must not land here
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    one = tmp_path / "unet"
    r = convert(ConvertRequest(resolve_model("sd15-tiny"), one, ConvertOptions(**TINY), "unet", progress=False))
    assert r.ok and [b.package for b in load_manifest(one).blocks] == ["unet.mlpackage"]
    spec = _spec(one / "unet.mlpackage")
    assert [i.name for i in spec.description.input] == ["sample", "timestep", "context"]
    assert [o.name for o in spec.description.output] == ["out"]

    two = tmp_path / "unet2"
    r = convert(ConvertRequest(resolve_model("snapfusion-tiny"), two, ConvertOptions(chunks=2, attention="split_einsum", **TINY), "unet", progress=False))
    assert r.ok
    m = load_manifest(two)
    assert [b.package for b in m.blocks] == ["unet_chunk1.mlpackage", "unet_chunk2.mlpackage"]
    assert [i["name"] for i in m.blocks[0].inputs] == ["sample", "timestep", "context"]
    assert m.blocks[1].outputs[0]["name"] == "out"
    # chunk 2 consumes what chunk 1 produces
    assert {i["name"] for i in m.blocks[1].inputs} <= {o["name"] for o in m.blocks[0].outputs} | {"sample", "timestep", "context"}
    again = convert(ConvertRequest(resolve_model("snapfusion-tiny"), two, ConvertOptions(chunks=2, attention="split_einsum", **TINY), "unet", progress=False))
    assert again.converted == []
    assert sorted(p.name for p in system_tmp.iterdir() if p.name.endswith(".mlpackage")) == []
    assert sorted(p.name for p in two.iterdir() if p.name.endswith(".partial")) == []
