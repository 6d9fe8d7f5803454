"""SnapGen-style block variants: each against diffusers' own module where diffusers has one."""

import json

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention import BasicTransformerBlock, FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0, StableAudioAttnProcessor2_0
from diffusers.models.resnet import ResnetBlock2D

from snapbench.backbones import inspect_model, resolve_model
from snapbench.blocks.cut import InputShapes
from snapbench.errors import SnapbenchError
from snapbench.model.loading import build_unet, save_elastic
from snapbench.model.variants import (
    CrossOnlyTransformerBlock,
    ExpandedSeparableConv,
    GroupedQueryProcessor,
    grouped_query_attention,
    narrower_feed_forward,
    separable_resnet,
)
from snapbench.specs.arch_spec import ArchSpec
from snapbench.specs.presets import load_preset

torch.manual_seed(0)


def test_expanded_separable_conv_is_a_factorised_dense_conv():
    sep = ExpandedSeparableConv(6, 10, ratio=2)
    x = torch.randn(2, 6, 9, 7)
    w, b = sep.dense_weight()
    torch.testing.assert_close(sep(x), F.conv2d(x, w, b, padding=1), atol=1e-5, rtol=1e-4)


def test_separable_resnet_equals_diffusers_resnet_with_the_dense_weights():
    ref = ResnetBlock2D(in_channels=16, out_channels=24, temb_channels=12, groups=8).eval()
    ours = separable_resnet(ref, 2).eval()
    assert ours.conv_shortcut is not None  # the 1x1 shortcut projection stays as it was
    for name in ("conv1", "conv2"):
        w, b = getattr(ours, name).dense_weight()
        with torch.no_grad():
            getattr(ref, name).weight.copy_(w)
            getattr(ref, name).bias.copy_(b)
    x, temb = torch.randn(2, 16, 8, 8), torch.randn(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, temb), ref(x, temb), atol=1e-5, rtol=1e-4)
    dense = sum(p.numel() for p in ref.parameters())
    assert sum(p.numel() for p in ours.parameters()) < dense


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_attention_matches_diffusers(kv_heads):
    dim, ctx_dim, heads = 32, 20, 4
    x, ctx = torch.randn(2, 10, dim), torch.randn(2, 7, ctx_dim)
    ours = Attention(dim, cross_attention_dim=ctx_dim, heads=heads, dim_head=8, kv_heads=kv_heads)
    ours.set_processor(GroupedQueryProcessor())
    # diffusers' own grouped-query processor (StableAudio's), same weights
    theirs = Attention(dim, cross_attention_dim=ctx_dim, heads=heads, dim_head=8, kv_heads=kv_heads,
                       processor=StableAudioAttnProcessor2_0())
    theirs.load_state_dict(ours.state_dict())
    # and plain multi-head attention with each key/value head repeated for its group of query heads
    full = Attention(dim, cross_attention_dim=ctx_dim, heads=heads, dim_head=8, processor=AttnProcessor2_0())
    state = ours.state_dict()
    for name in ("to_k.weight", "to_v.weight"):
        state[name] = state[name].view(kv_heads, 1, 8, ctx_dim).expand(kv_heads, heads // kv_heads, 8, ctx_dim)
        state[name] = state[name].reshape(heads * 8, ctx_dim)
    full.load_state_dict(state)
    with torch.no_grad():
        out = ours(x, encoder_hidden_states=ctx)
        torch.testing.assert_close(out, theirs(x, encoder_hidden_states=ctx), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(out, full(x, encoder_hidden_states=ctx), atol=1e-5, rtol=1e-4)


def test_grouped_query_from_multi_head_pools_keys_and_refuses_a_non_divisor():
    attn = Attention(32, heads=4, dim_head=8)
    mqa = grouped_query_attention(attn, 1, "CA[Up-1, 1]")
    assert mqa.to_k.weight.shape == (8, 32)
    torch.testing.assert_close(mqa.to_k.weight, attn.to_k.weight.view(4, 8, 32).mean(0))
    with pytest.raises(SnapbenchError, match="kv_heads=3 does not divide the block's 4 heads"):
        grouped_query_attention(attn, 3, "CA[Up-1, 1]")


def test_feed_forward_ratio_keeps_the_first_units():
    ff = FeedForward(16, mult=4, activation_fn="geglu").eval()
    narrow = narrower_feed_forward(ff, 16, 3).eval()
    ref = FeedForward(16, mult=3, activation_fn="geglu").eval()
    assert ref.state_dict().keys() == narrow.state_dict().keys()
    assert all(ref.state_dict()[k].shape == v.shape for k, v in narrow.state_dict().items())
    # the original with its last quarter of inner units silenced computes what the narrow one does
    with torch.no_grad():
        ff.net[2].weight[:, 48:] = 0
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(narrow(x), ff(x), atol=1e-5, rtol=1e-4)


def test_block_without_self_attention_equals_diffusers_block_with_silent_self_attention():
    block = BasicTransformerBlock(32, 4, 8, cross_attention_dim=12).eval()
    ours = CrossOnlyTransformerBlock(block).eval()
    with torch.no_grad():
        block.attn1.to_out[0].weight.zero_()
        block.attn1.to_out[0].bias.zero_()
    x, ctx = torch.randn(2, 9, 32), torch.randn(2, 5, 12)
    with torch.no_grad():
        torch.testing.assert_close(ours(x, encoder_hidden_states=ctx), block(x, encoder_hidden_states=ctx))


def test_variant_fields_round_trip_and_bad_ones_are_one_line():
    spec = load_preset("snapgen-tiny")
    again = ArchSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again.stages == spec.stages
    data = load_preset("sdxl-tiny").to_dict()
    data["stages"]["Down-2"][0]["kv_heads"] = 1  # RB1 of Down-2: a ResNet
    with pytest.raises(SnapbenchError, match="kv_heads applies to CA blocks, not RB"):
        ArchSpec.from_dict(data, source="x.json")
    data = load_preset("sdxl-tiny").to_dict()
    data["stages"]["Down-2"][1]["ff_mult"] = 0
    with pytest.raises(SnapbenchError, match="ff_mult: must be a whole number from 1 to 8"):
        ArchSpec.from_dict(data, source="x.json")


def test_snapgen_tiny_signatures_and_counts():
    r = inspect_model(resolve_model("snapgen-tiny"), shapes=InputShapes(latent=16, batch=2, tokens=5))
    rows = {b["id"]: b for b in r.block_rows()}
    assert "kv_heads=1,self_attn=0|" in rows["CA[Down-1, 1]"]["signature"]  # cross-attention from stage 1
    assert "layers=4,proj=linear,ff_mult=3,kv_heads=1|" in rows["CA[Mid, 1]"]["signature"]
    assert rows["RB[Down-2, 1]"]["signature"].endswith("shortcut=1,separable=2|fp16|attn=-")
    assert rows["RB[Down-2, 1]"]["variant"] == {"separable": 2}
    assert rows["CA[Down-1, 1]"]["variant"] == {"kv_heads": 1, "ff_mult": 3, "self_attention": False}
    # the same structure with diffusers' blocks has more parameters: every variant is a cheaper block
    plain = inspect_model(_without_variants("snapgen-tiny"), shapes=InputShapes(latent=16, batch=2, tokens=5))
    assert not any("variant" in b for b in plain.block_rows())  # rows of other models are unchanged
    assert r.totals()["params"] < plain.totals()["params"]


def _without_variants(name):
    from snapbench.model.loading import ModelSource
    from snapbench.specs.arch_spec import full_spec

    spec = load_preset(name)
    return ModelSource(name, full_spec(spec.base_config, name + "-plain"))


def test_snapgen_tiny_runs_saves_and_loads(tmp_path):
    model = build_unet(resolve_model("snapgen-tiny"), seed=1).eval()
    from snapbench.blocks.cut import example_inputs

    shapes = InputShapes(latent=16, batch=2, tokens=5)
    sample, t, ctx, *added = example_inputs(model, shapes, device="cpu")
    with torch.no_grad():
        before = model(sample, t, ctx, *added)
    assert torch.isfinite(before).all() and len(model.variants) == 33
    save_elastic(model, tmp_path / "m")
    assert (tmp_path / "m" / "variants.safetensors").is_file()
    again = build_unet(resolve_model(str(tmp_path / "m")), seed=99).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(sample, t, ctx, *added), before)


@pytest.mark.slow
def test_snapgen_parameter_count_against_the_paper():
    spec = load_preset("snapgen")
    r = inspect_model(resolve_model("snapgen"), shapes=InputShapes(latent=128, batch=2))
    assert spec.notes["paper_claimed_params"] == 379_000_000
    # what the stated choices give (README: "SnapGen"): an audit figure, not a target
    assert r.totals()["params"] == 426_629_892


@pytest.mark.parametrize("impl", ["split_einsum", "split_einsum_v2"])
@pytest.mark.parametrize("variant", [dict(kv_heads=1), dict(kv_heads=2, ff_mult=3), dict(self_attention=False)])
def test_neural_engine_rewrite_of_variants_matches(impl, variant):
    from diffusers import Transformer2DModel

    from snapbench.converters.ane_attention import psnr, rewrite_transformer
    from snapbench.model.variants import transformer_variant
    from snapbench.specs.variants import Variant

    base = Transformer2DModel(num_attention_heads=4, attention_head_dim=8, in_channels=32, num_layers=2,
                              cross_attention_dim=12, norm_num_groups=8, use_linear_projection=True)
    model = transformer_variant(base, Variant(**variant), "CA[Up-1, 1]").eval()
    x, ctx = torch.randn(2, 32, 8, 8), torch.randn(2, 5, 12)
    with torch.no_grad():
        ref = model(x, encoder_hidden_states=ctx, return_dict=False)[0]
        out = rewrite_transformer(model, impl, query_chunk_size=16)(x, ctx)
    assert psnr(ref - x, out - x) > 100.0


@pytest.mark.slow
def test_snapgen_tiny_converts_block_by_block(tmp_path):
    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.converters.options import ConvertOptions

    opts = ConvertOptions(latent=16, tokens=5, attention="split_einsum", jobs=1)
    result = convert(ConvertRequest(resolve_model("snapgen-tiny"), tmp_path / "c", opts, progress=False))
    assert result.ok and result.manifest.complete
    sigs = {b.signature for b in result.manifest.blocks if b.package}
    assert any("separable=2" in s for s in sigs) and any("kv_heads=1,self_attn=0" in s for s in sigs)
    assert any("kv_heads=1|" in s for s in sigs)  # the lowest resolution keeps self-attention
