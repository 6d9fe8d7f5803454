"""SDXL-class UNets: the text_time added conditioning as a block, full-size counts, folders, refusals."""

import json

import pytest
import torch

from snapbench.backbones import inspect_model, resolve_model
from snapbench.blocks.cut import InputShapes, example_inputs
from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.model.loading import build_unet
from snapbench.specs.layout import check_supported
from snapbench.specs.presets import load_preset

TINY = InputShapes(latent=16, batch=2, tokens=5)


@pytest.mark.slow
def test_sdxl_full_size_parameter_count_and_depths():
    r = inspect_model(resolve_model("sdxl"), shapes=InputShapes(latent=128, batch=2))
    # diffusers 0.42 instantiating the published config: shared/reference/configs/README.md
    assert r.totals()["params"] == 2_567_463_684
    rows = {b["id"]: b for b in r.block_rows()}
    tt = rows["TextTimeEmbedding"]
    assert tt["stage"] == "Down-1" and tt["kind"] == "aux" and tt["module"] == "add_embedding"
    assert tt["inputs"] == {"temb": [2, 1280], "text_embeds": [2, 1280], "time_ids": [2, 6]}
    # one CA block per Transformer2DModel, its depth in the signature (1/2/10 per level; 10 in the mid block)
    assert "layers=2," in rows["CA[Down-2, 1]"]["signature"]
    for ca in ("CA[Down-3, 1]", "CA[Mid, 1]", "CA[Up-1, 3]"):
        assert "layers=10," in rows[ca]["signature"], ca
        assert rows[ca]["inputs"]["context"] == [2, 77, 2048]
    assert not any(b["kind"] == "CA" and b["stage"] in ("Down-1", "Up-3") for b in rows.values())


def test_sdxl_tiny_elastic_equals_diffusers_and_blocks_add_up():
    model = build_unet(resolve_model("sdxl-tiny"), seed=0).eval()
    sample, t, ctx, *added = example_inputs(model, TINY, device="cpu")
    cond = dict(zip(("text_embeds", "time_ids"), added))
    with torch.no_grad():
        ours = model(sample, t, ctx, *added)
        ref = model.base(sample, t, ctx, added_cond_kwargs=cond).sample
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    rows = inspect_model(resolve_model("sdxl-tiny"), shapes=TINY).block_rows()
    assert sum(b["params"] for b in rows) == sum(p.numel() for p in model.base.parameters())
    # the text_time block is priced on its own: its change to the time embedding is not free
    assert next(b for b in rows if b["id"] == "TextTimeEmbedding")["macs"] > 0


def test_text_time_model_without_added_inputs_names_them():
    model = build_unet(resolve_model("sdxl-tiny"), device="meta")
    sample, t, ctx, *_ = example_inputs(model, TINY)
    with pytest.raises(SnapbenchError, match="pass text_embeds and time_ids after the context"):
        model(sample, t, ctx)


@pytest.mark.parametrize("key,value,supported", [
    ("addition_embed_type", "image", "null or 'text_time'"),
    ("class_embed_type", "timestep", "null"),
    ("time_cond_proj_dim", 256, "null"),
    ("attention_type", "gated", "'default'"),
    ("dual_cross_attention", True, "false"),
])
def test_unsupported_config_option_is_one_line(key, value, supported):
    config = dict(load_preset("sdxl-tiny").base_config, **{key: value})
    with pytest.raises(SnapbenchError) as e:
        check_supported(config)
    msg = str(e.value)
    assert "\n" not in msg and f"{key}=" in msg and supported in msg


def test_text_time_widths_must_add_up():
    config = dict(load_preset("sdxl-tiny").base_config, projection_class_embeddings_input_dim=40)
    with pytest.raises(SnapbenchError, match="2816 = 1280 \\+ 6 x 256"):
        check_supported(config)


def _save_tiny_sdxl(folder):
    from diffusers import UNet2DConditionModel

    config = {k: v for k, v in load_preset("sdxl-tiny").base_config.items() if not k.startswith("_")}
    torch.manual_seed(3)
    unet = UNet2DConditionModel(**config)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    return unet


def test_local_sdxl_pipeline_folder_loads_with_its_weights(tmp_path):
    unet = _save_tiny_sdxl(tmp_path)
    source = resolve_model(str(tmp_path))
    assert source.weights_dir == tmp_path / "unet"
    model = build_unet(source).eval()
    sample, t, ctx, *added = example_inputs(model, TINY, device="cpu")
    cond = dict(zip(("text_embeds", "time_ids"), added))
    with torch.no_grad():
        torch.testing.assert_close(model(sample, t, ctx, *added),
                                   unet.eval()(sample, t, ctx, added_cond_kwargs=cond).sample)


def test_cli_refuses_an_unsupported_folder_config_in_one_line(tmp_path, capsys):
    _save_tiny_sdxl(tmp_path)
    cfg_path = tmp_path / "unet" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["addition_embed_type"] = "text_image"
    cfg_path.write_text(json.dumps(cfg))
    assert main(["inspect", "--model", str(tmp_path), "--json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "addition_embed_type='text_image'" in err and "'text_time'" in err


def test_sdxl_text_encoders_match_the_published_configs():
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from snapbench.converters.components import dual_text_encoder_configs, text_encoder_single
    from snapbench.converters.options import ConvertOptions

    title, one, two = dual_text_encoder_configs(2048, 1280)
    assert "ViT-bigG" in title
    with torch.device("meta"):
        # shared/reference/configs/README.md: 123,060,480 and 694,659,840
        assert sum(p.numel() for p in CLIPTextModel(CLIPTextConfig(**one)).parameters()) == 123_060_480
        assert sum(p.numel() for p in CLIPTextModelWithProjection(CLIPTextConfig(**two)).parameters()) == 694_659_840
    single = text_encoder_single(resolve_model("sdxl"), ConvertOptions(), None)
    assert single.params == 817_720_320
    assert single.io.outputs == (("last_hidden_state", (1, 77, 2048)), ("text_embeds", (1, 1280)))


def test_tiny_dual_text_encoder_feeds_the_unet():
    from snapbench.converters.components import text_encoder_single
    from snapbench.converters.options import ConvertOptions

    single = text_encoder_single(resolve_model("sdxl-tiny"), ConvertOptions(tokens=5), None)
    with torch.no_grad():
        context, pooled = single.build()(torch.randint(0, 999, (1, 5)))
    assert context.shape == (1, 5, 32) and pooled.shape == (1, 16)


@pytest.mark.slow
def test_whole_sdxl_class_unet_converts_with_text_time_inputs(tmp_path):
    """(sdxl-tiny's shallow twin: the preset's whole UNet is converted by test_sdxl_pipeline.py's CLI test.)"""
    from model_refs import SDXL_SHALLOW

    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.converters.options import ConvertOptions

    result = convert(ConvertRequest(resolve_model(SDXL_SHALLOW), tmp_path / "w", ConvertOptions(latent=16, tokens=5),
                                    "unet", progress=False))
    assert result.ok
    (block,) = [b for b in result.manifest.blocks if b.package]
    assert [i["name"] for i in block.inputs] == ["sample", "timestep", "context", "text_embeds", "time_ids"]


def test_sdxl_class_unets_are_their_own_backbone_family():
    from dataclasses import replace

    from snapbench.backbones import BACKBONES, SDXLUNetBackbone, UNetBackbone, backbone_for, backbone_named
    from snapbench.settings import RunSettings

    assert backbone_named("sdxl-unet") is BACKBONES[0]  # before the SD family: SDXL UNets are UNets too
    for ref in ("sdxl-tiny", "snapgen-tiny"):
        assert isinstance(backbone_for(resolve_model(ref)), SDXLUNetBackbone)
    assert type(backbone_for(resolve_model("sd15-tiny"))) is UNetBackbone
    source = resolve_model("snapgen-tiny")
    bb = backbone_for(source)
    settings = RunSettings(latent=16, batch=2, tokens=5)
    blocks = bb.cut_source(source, settings)
    assert blocks[1].block_id == "TextTimeEmbedding" and "kv_heads=1,self_attn=0" in blocks[-2].signature.key()
    model = bb.build(source, device="cpu", seed=0).eval()
    inputs = bb.example_inputs(model, settings.shapes, device="cpu")
    assert [tuple(t.shape) for t in inputs[3:]] == [(2, 16), (2, 6)]
    # the swap keeps the variant blocks' weights (and their copies' originals)
    other = bb.reshape(model, replace(source.spec.with_choices("other", {}), name="other")).eval()
    assert other.base is model.base
    with torch.no_grad():
        torch.testing.assert_close(other(*inputs), model(*inputs))


def test_the_shallow_test_twin_is_sdxl_tiny_but_for_its_depth():
    """tests/sdxl-shallow.json (tests/model_refs.py) stands in for sdxl-tiny where depth is not the subject:
    it must stay sdxl-tiny in every other respect, and SDXL-class."""
    from model_refs import SDXL_SHALLOW, SDXL_SHALLOW_NAME

    from snapbench.backbones import SDXLUNetBackbone, backbone_for

    tiny, shallow = load_preset("sdxl-tiny").to_dict(), resolve_model(SDXL_SHALLOW)
    twin = shallow.spec.to_dict()
    assert twin["name"] == SDXL_SHALLOW_NAME and tiny["base_config"]["transformer_layers_per_block"] == [1, 2, 10]
    assert twin["base_config"].pop("transformer_layers_per_block") == [1, 2, 2]
    del tiny["base_config"]["transformer_layers_per_block"]
    assert {k: v for k, v in twin.items() if k not in ("name", "description")} == \
        {k: v for k, v in tiny.items() if k not in ("name", "description")}
    assert isinstance(backbone_for(shallow), SDXLUNetBackbone)
