"""ANE attention rewrites against the diffusers Transformer2DModel they replace (tiny configs, fp32 CPU)."""

from __future__ import annotations

import collections
import math
import warnings

import pytest
import torch

from snapbench.converters.ane_attention import ATTENTION_IMPLS, psnr, rewrite_transformer
from snapbench.errors import SnapbenchError

Transformer2DModel = pytest.importorskip("diffusers.models.transformers.transformer_2d").Transformer2DModel

APPLE_PSNR_BAR_DB = 35.0  # apple/ml-stable-diffusion's acceptance bar for a converted model


def make_transformer(
    *,
    channels: int = 32,
    heads: int = 2,
    head_dim: int = 16,
    layers: int = 2,
    cross_dim: int = 24,
    linear: bool = False,
    seed: int = 0,
    qk_gain: float = 3.0,
    **extra,
) -> Transformer2DModel:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Transformer2DModel(
            num_attention_heads=heads,
            attention_head_dim=head_dim,
            in_channels=channels,
            num_layers=layers,
            cross_attention_dim=cross_dim,
            norm_num_groups=8,
            use_linear_projection=linear,
            **extra,
        )
    # Random init gives near-uniform attention (scores ~ 0.3), under which wrong keys or a softmax over
    # the wrong axis barely change the output. Sharper scores make the comparison discriminating.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".to_q." in name or ".to_k." in name:
                param.mul_(qk_gain)
    return model.eval()


def make_inputs(model: Transformer2DModel, *, batch: int = 2, size: int = 8, tokens: int = 12, seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    cross_dim = model.config.cross_attention_dim
    x = torch.randn(batch, model.config.in_channels, size, size, generator=gen)
    context = torch.randn(batch, tokens, cross_dim, generator=gen)
    return x, context


def reference(model, x, context) -> torch.Tensor:
    with torch.no_grad():
        return model(x, encoder_hidden_states=context, return_dict=False)[0]


def run(module, x, context) -> torch.Tensor:
    with torch.no_grad():
        return module(x, context)


# ---------------------------------------------------------------------------------------------------------
# psnr
# ---------------------------------------------------------------------------------------------------------


def test_psnr_follows_apples_definition():
    ref = torch.tensor([1.0, -2.0, 0.5, 0.0])
    cand = ref + torch.tensor([0.1, -0.1, 0.1, -0.1])  # mse 0.01, peak |ref| = 2 -> 20 log10(2 / 0.1)
    assert psnr(ref, cand) == pytest.approx(20 * math.log10(20.0))
    assert psnr(ref, ref) == math.inf


def test_psnr_rejects_mismatched_shapes():
    with pytest.raises(SnapbenchError, match="shapes differ"):
        psnr(torch.zeros(2, 3), torch.zeros(3, 2))


# ---------------------------------------------------------------------------------------------------------
# numerics against diffusers
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("linear", [False, True], ids=["conv-proj", "linear-proj"])
@pytest.mark.parametrize("impl", ATTENTION_IMPLS)
def test_rewrite_matches_diffusers(impl, linear):
    model = make_transformer(linear=linear)
    x, context = make_inputs(model)
    ref = reference(model, x, context)
    out = run(rewrite_transformer(model, impl, query_chunk_size=24), x, context)  # 64 tokens: 24 + 24 + 16
    assert out.shape == ref.shape == x.shape
    full_db = psnr(ref, out)
    # the residual input dominates the output; the transformer's own contribution must match too
    delta_db = psnr(ref - x, out - x)
    print(f"{impl} {'linear' if linear else 'conv'}: PSNR {full_db:.1f} dB, residual-free {delta_db:.1f} dB")
    assert full_db >= APPLE_PSNR_BAR_DB
    assert delta_db >= APPLE_PSNR_BAR_DB
    if impl != "original":
        assert full_db > 100.0  # same maths in fp32: only rounding differs
    assert psnr(ref, x) < 25.0  # the transformer path is not negligible: an identity "rewrite" fails the bar


@pytest.mark.parametrize("chunk", [1, 7, 16, 64, 100, 512])
def test_split_einsum_v2_any_query_chunk(chunk):
    model = make_transformer(heads=4, head_dim=8, layers=1)
    x, context = make_inputs(model, batch=1)
    ref = reference(model, x, context)
    out = run(rewrite_transformer(model, "split_einsum_v2", query_chunk_size=chunk), x, context)
    assert psnr(ref - x, out - x) > 100.0


@pytest.mark.parametrize(
    "config",
    [
        dict(channels=64, heads=8, head_dim=8, layers=1, cross_dim=16),
        dict(channels=48, heads=3, head_dim=20, layers=3, cross_dim=40, linear=True),  # inner 60 != 48 channels
        dict(channels=32, heads=2, head_dim=16, layers=1, cross_dim=24, only_cross_attention=True),
        dict(channels=32, heads=2, head_dim=16, layers=1, cross_dim=24, double_self_attention=True),
        dict(channels=32, heads=2, head_dim=16, layers=1, cross_dim=24, activation_fn="gelu-approximate"),
        dict(channels=32, heads=1, head_dim=32, layers=1, cross_dim=None),
    ],
    ids=["8-heads", "3-layers-inner-ne-channels", "only-cross", "double-self", "gelu", "no-cross"],
)
@pytest.mark.parametrize("impl", ["split_einsum", "split_einsum_v2"])
def test_rewrite_other_configs(impl, config):
    model = make_transformer(**config)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, model.config.in_channels, 16, 16, generator=gen)
    context = torch.randn(2, 9, config["cross_dim"] or 8, generator=gen)
    # diffusers' blocks read no context when there is no cross-attention, and fail if given one
    reads_context = config["cross_dim"] and not config.get("double_self_attention")
    ref = reference(model, x, context if reads_context else None)
    out = run(rewrite_transformer(model, impl, query_chunk_size=100), x, context)
    assert psnr(ref - x, out - x) > 100.0


# ---------------------------------------------------------------------------------------------------------
# the check must catch a wrong rewrite
# ---------------------------------------------------------------------------------------------------------


def _perturb_weight(module):
    gen = torch.Generator().manual_seed(7)
    weight = module.blocks[0].attn2.to_v.weight
    weight.add_(0.5 * weight.abs().mean() * torch.randn(weight.shape, generator=gen))


def _forget_softmax_scale(module):
    head_dim = module.blocks[0].attn1.head_dim
    for block in module.blocks:
        block.attn1.to_q.weight.mul_(head_dim**0.5)
        block.attn1.to_q.bias is None or block.attn1.to_q.bias.mul_(head_dim**0.5)


def _swap_geglu_halves(module):
    conv = module.blocks[-1].ff.proj_in
    value, gate = conv.weight.chunk(2, dim=0)
    conv.weight.copy_(torch.cat([gate, value], dim=0))
    value_b, gate_b = conv.bias.chunk(2, dim=0)
    conv.bias.copy_(torch.cat([gate_b, value_b], dim=0))


def _swap_two_heads(module):
    attn = module.blocks[0].attn2
    d = attn.head_dim
    w = attn.to_k.weight
    w.copy_(torch.cat([w[d : 2 * d], w[:d], w[2 * d :]], dim=0))


def test_softmax_over_the_wrong_axis_fails_the_bar(monkeypatch):
    import snapbench.converters.ane_attention as ane

    def attend_wrong_axis(q, k_t, v):
        weights = torch.einsum("nlhd,ndhs->nlhs", k_t, q).softmax(dim=3)  # over queries, not keys
        return torch.einsum("ndhl,nlhs->ndhs", v, weights)

    model = make_transformer()
    x, context = make_inputs(model)
    ref = reference(model, x, context)
    monkeypatch.setattr(ane, "_attend", attend_wrong_axis)
    out = run(rewrite_transformer(model, "split_einsum"), x, context)
    assert psnr(ref - x, out - x) < APPLE_PSNR_BAR_DB


@pytest.mark.parametrize(
    "mistake", [_perturb_weight, _forget_softmax_scale, _swap_geglu_halves, _swap_two_heads], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("impl", ["split_einsum", "split_einsum_v2"])
def test_wrong_rewrite_fails_the_bar(impl, mistake):
    model = make_transformer()
    x, context = make_inputs(model)
    ref = reference(model, x, context)
    module = rewrite_transformer(model, impl, query_chunk_size=24)
    with torch.no_grad():
        mistake(module)
    out = run(module, x, context)
    db = psnr(ref - x, out - x)
    print(f"{impl} {mistake.__name__}: {db:.1f} dB")
    assert db < APPLE_PSNR_BAR_DB


# ---------------------------------------------------------------------------------------------------------
# weights are copies
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ATTENTION_IMPLS)
def test_weights_are_copied_not_shared(impl):
    model = make_transformer(layers=1)
    x, context = make_inputs(model)
    module = rewrite_transformer(model, impl)
    before = run(module, x, context)
    source_ptrs = {p.data_ptr() for p in model.parameters()}
    assert not source_ptrs & {p.data_ptr() for p in module.parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    assert torch.equal(run(module, x, context), before)
    assert not module.training


# ---------------------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------------------


def test_unknown_impl_lists_valid_ones():
    with pytest.raises(SnapbenchError, match="original, split_einsum, split_einsum_v2") as info:
        rewrite_transformer(make_transformer(layers=1), "flash")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("chunk", [0, -4, 2.5, True])
def test_bad_query_chunk_size(chunk):
    with pytest.raises(SnapbenchError, match="query_chunk_size"):
        rewrite_transformer(make_transformer(layers=1), "split_einsum_v2", query_chunk_size=chunk)


def test_unsupported_configurations_say_why():
    with pytest.raises(SnapbenchError, match="Transformer2DModel"):
        rewrite_transformer(torch.nn.Linear(4, 4), "split_einsum")
    model = make_transformer(layers=1, activation_fn="geglu-approximate")
    with pytest.raises(SnapbenchError, match="activation 'geglu-approximate'"):
        rewrite_transformer(model, "split_einsum")
    model = make_transformer(layers=1)
    model.transformer_blocks[0].attn1.rescale_output_factor = 2.0
    with pytest.raises(SnapbenchError, match=r"transformer_blocks\.0\.attn1: .*rescale_output_factor"):
        rewrite_transformer(model, "split_einsum_v2")


# ---------------------------------------------------------------------------------------------------------
# Core ML conversion (runs on Linux: convert and read the MIL program, no prediction)
# ---------------------------------------------------------------------------------------------------------


def _mil_ops(module, x, context):
    ct = pytest.importorskip("coremltools")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, (x, context), check_trace=False)
        mlmodel = ct.convert(
            traced,
            inputs=[
                ct.TensorType(name="hidden_states", shape=tuple(x.shape)),
                ct.TensorType(name="encoder_hidden_states", shape=tuple(context.shape)),
            ],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16,
            minimum_deployment_target=ct.target.iOS16,
        )
    ops = []

    def walk(block):
        for op in block.operations:
            ops.append(op)
            for inner in op.blocks:
                walk(inner)

    for function in mlmodel._mil_program.functions.values():
        walk(function)
    return ops


@pytest.mark.parametrize("impl, chunk, chunks", [("split_einsum", 512, 1), ("split_einsum_v2", 24, 3)])
def test_coreml_conversion_is_rank4_and_per_head(impl, chunk, chunks):
    heads, layers = 2, 2
    model = make_transformer(heads=heads, layers=layers)
    x, context = make_inputs(model, batch=1)
    ops = _mil_ops(rewrite_transformer(model, impl, query_chunk_size=chunk), x, context)
    counts = collections.Counter(op.op_type for op in ops)
    print(impl, dict(sorted((k, v) for k, v in counts.items() if k != "const")))
    high_rank = [
        (op.op_type, tuple(out.shape)) for op in ops for out in op.outputs if getattr(out, "rank", 0) >= 5
    ]
    assert high_rank == []
    # two attentions per block, one softmax (and two einsums) per head and query chunk
    assert counts["softmax"] == layers * 2 * heads * chunks
    assert counts["einsum"] == 2 * counts["softmax"]
    assert counts["conv"] == 2 + layers * (2 * 4 + 2)  # proj_in/out + per block 2 attentions x qkvo + ff
    assert counts["matmul"] == 0 and counts["linear"] == 0


# ---------------------------------------------------------------------------------------------------------
# SD-v1.5 shape
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["split_einsum", "split_einsum_v2"])
def test_sd15_up3_shape(impl):
    """CA[Up-3, *] of SD-v1.5: 320 channels, 64x64 latent (4096 tokens), 8 heads of 40, 77 x 768 context."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Transformer2DModel(
            num_attention_heads=8, attention_head_dim=40, in_channels=320, num_layers=1,
            cross_attention_dim=768, norm_num_groups=32,
        ).eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 320, 64, 64, generator=gen)
    context = torch.randn(1, 77, 768, generator=gen)
    ref = reference(model, x, context)
    out = run(rewrite_transformer(model, impl), x, context)
    full_db, delta_db = psnr(ref, out), psnr(ref - x, out - x)
    print(f"SD-v1.5 Up-3 {impl}: PSNR {full_db:.1f} dB, residual-free {delta_db:.1f} dB")
    assert full_db >= APPLE_PSNR_BAR_DB and delta_db >= APPLE_PSNR_BAR_DB


def test_split_einsum_v2_converts_when_sequence_is_shorter_than_one_chunk():
    """8x8 latents (64 queries) with the default 512-query chunk: must not trace a 1-way split."""
    import coremltools as ct
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    from snapbench.converters.ane_attention import rewrite_transformer

    torch.manual_seed(0)
    t = Transformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=16, norm_num_groups=4,
                           cross_attention_dim=12).eval()
    m = rewrite_transformer(t, "split_einsum_v2")
    h, ctx = torch.randn(1, 16, 8, 8), torch.randn(1, 5, 12)
    traced = torch.jit.trace(m, (h, ctx), check_trace=False)
    mlmodel = ct.convert(traced, inputs=[ct.TensorType(name="hidden", shape=h.shape),
                                         ct.TensorType(name="context", shape=ctx.shape)],
                         convert_to="mlprogram", minimum_deployment_target=ct.target.iOS16)
    ops = [op for f in mlmodel._mil_program.functions.values() for op in f.operations]
    counts = collections.Counter(op.op_type for op in ops)
    # one chunk: per head one softmax for self- and one for cross-attention, and no query split at all
    assert counts["softmax"] == 2 * 2
    assert not [op for op in ops if op.op_type == "split" and len(op.outputs) == 1]
    (out,) = mlmodel._mil_program.functions["main"].outputs
    assert tuple(out.shape) == tuple(h.shape)
