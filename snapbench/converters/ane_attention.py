"""Neural-Engine-friendly rewrites of diffusers' SD cross-attention (transformer) blocks.

A `Transformer2DModel` from diffusers (GroupNorm, proj_in, N x BasicTransformerBlock, proj_out) is rebuilt
with the layout and op choices the Apple Neural Engine (ANE) prefers, following the principles Apple
published in "Deploying Transformers on the Apple Neural Engine" and used in apple/ml-stable-diffusion:

* Activations live in (B, C, 1, S): channels first, the sequence on the last axis. The ANE stores a
  tensor with its last axis padded to 64 bytes, so putting the long axis (S = H*W tokens) last wastes
  nothing, while the (B, S, C) layout of PyTorch transformers would need transposes around every conv.
* Every nn.Linear becomes a 1x1 nn.Conv2d: the ANE's fastest primitive is convolution over (B, C, 1, S),
  and a Linear over the channel axis is the same maths ([out, in] weight -> [out, in, 1, 1]).
* LayerNorm normalises over the channel axis (dim 1) of (B, C, 1, S) instead of the last axis of
  (B, S, C), so that no transpose is needed before or after it.
* Attention is split per head ("split_einsum"): each head is a pair of einsums on (B, d, 1, S) slices,
  which coremltools maps to the MIL `einsum` op the ANE runs natively, and no rank-5 (B, heads, d, 1, S)
  tensor is ever built. "split_einsum_v2" additionally chunks the queries along the sequence, so that a
  4096 x 4096 score map is never materialised at once (Apple reports 10-30% faster on phones).

`rewrite_transformer(t, "original")` keeps the diffusers module (a copy) behind the same call convention,
as the reference for numerical checks and for latency comparisons.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from snapbench.errors import SnapbenchError
from snapbench.settings import ATTENTIONS, Attention, check_choice

if TYPE_CHECKING:
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

AttentionImpl = Attention  # = snapbench.settings.Attention
ATTENTION_IMPLS: tuple[str, ...] = ATTENTIONS

# Query chunk of split_einsum_v2: 512 queries x 4096 keys x fp16 = 4 MiB per head-chunk score map,
# instead of 32 MiB for the whole 4096 x 4096 map of SD's 64x64 latent.
DEFAULT_QUERY_CHUNK_SIZE = 512

_SUPPORTED_ACTIVATIONS = ("geglu", "gelu", "gelu-approximate")
_SUPPORTED_PROCESSORS = ("AttnProcessor", "AttnProcessor2_0", "GroupedQueryProcessor")


# --------------------------------------------------------------------------------------------------------
# Public helpers
# --------------------------------------------------------------------------------------------------------


def psnr(reference: torch.Tensor, candidate: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB, Apple's definition: peak = max |reference|.

    apple/ml-stable-diffusion accepts a conversion at >= 35 dB. Identical tensors give +inf.
    """
    ref = _as_float64(reference)
    cand = _as_float64(candidate)
    if ref.shape != cand.shape:
        raise SnapbenchError(f"psnr: shapes differ, reference {ref.shape} vs candidate {cand.shape}")
    if ref.size == 0:
        raise SnapbenchError("psnr: empty tensors have no PSNR")
    mse = float(np.mean((ref - cand) ** 2))
    peak = float(np.max(np.abs(ref)))
    if mse == 0.0:
        return math.inf
    if peak == 0.0:
        return -math.inf
    return 20.0 * math.log10(peak / math.sqrt(mse))


def rewrite_transformer(
    transformer: Transformer2DModel,
    impl: str,  # one of AttentionImpl, checked below
    *,
    query_chunk_size: int = DEFAULT_QUERY_CHUNK_SIZE,
    query_chunks: int | None = None,
    consume: bool = False,
) -> nn.Module:
    """Return a copy of a diffusers `Transformer2DModel` with the chosen attention implementation.

    The result is in eval mode and has `forward(hidden_states [B, C, H, W], encoder_hidden_states [B, L, D])
    -> [B, C, H, W]`. Weights are copied: later changes to `transformer` do not reach the result, nor the
    other way round. `consume` (split_einsum, split_einsum_v2): the result takes `transformer`'s own tensors
    instead (reshaped views; each query projection scaled in place), so no second copy of the weights is ever
    made, and `transformer` must not be used afterwards. For a big block that matters: SDXL's ten-layer
    blocks are 1.4 GB each in fp32, which the copy held twice while a UNet chunk was built (unet_chunks).
    The values are those of the copy, bit for bit. `query_chunk_size` is used by "split_einsum_v2" only (the last chunk may be shorter).
    `query_chunks` (v2 only): cut the queries into this many equal chunks whatever the sequence length
    (one: no chunking), instead of chunks of `query_chunk_size` decided by the length at run time. For a
    length of query_chunks * query_chunk_size that is the same computation and the same Core ML program,
    and the traced graph no longer depends on the length it was traced at (see unet_chunks.trace_scale).
    Dropout is dropped (inference only); `upcast_attention` needs nothing in fp32, and in fp16 the softmax
    scale folded into the query projection keeps the scores small.
    """
    check_choice("attention implementation", impl, ATTENTION_IMPLS)
    if isinstance(query_chunk_size, bool) or not isinstance(query_chunk_size, int) or query_chunk_size < 1:
        raise SnapbenchError(f"query_chunk_size must be a positive integer, got {query_chunk_size!r}")
    _check_transformer(transformer)
    if query_chunks is not None and (isinstance(query_chunks, bool) or not isinstance(query_chunks, int)
                                     or query_chunks < 1):
        raise SnapbenchError(f"query_chunks must be a positive integer, got {query_chunks!r}")
    if impl == "original":
        return OriginalTransformer(transformer).eval()
    return ANETransformer2D(transformer, impl, query_chunk_size, query_chunks, take=consume).eval()


def scaled_weights(transformer: nn.Module) -> dict[str, float]:
    """{parameter name in `transformer`: factor} of the weights the ANE rewrite stores scaled: each attention's
    query projection, by its softmax scale (ANEAttention). What a match by content (mixed_bit.fingerprint)
    of the rewritten module's weights must look for."""
    found: dict[str, float] = {}
    for index, block in enumerate(transformer.transformer_blocks):
        for name in ("attn1", "attn2"):
            attn = getattr(block, name, None)
            if attn is not None:
                found[f"transformer_blocks.{index}.{name}.to_q.weight"] = float(attn.scale)
    return found


# --------------------------------------------------------------------------------------------------------
# Validation: one clear line per unsupported configuration
# --------------------------------------------------------------------------------------------------------


def _check_transformer(transformer: nn.Module) -> None:
    name = type(transformer).__name__
    needed = ("norm", "proj_in", "proj_out", "transformer_blocks", "config")
    if not all(hasattr(transformer, attr) for attr in needed):
        raise SnapbenchError(
            f"rewrite_transformer expects a diffusers Transformer2DModel (continuous input), got {name}"
        )
    if not getattr(transformer, "is_input_continuous", False):
        raise SnapbenchError(f"only continuous-input Transformer2DModel (SD UNet attention) is supported, got {name} "
                             "with vectorized or patched input")
    if not isinstance(transformer.norm, nn.GroupNorm):
        raise SnapbenchError(f"Transformer2DModel.norm must be a GroupNorm, got {type(transformer.norm).__name__}")
    for proj_name in ("proj_in", "proj_out"):
        proj = getattr(transformer, proj_name)
        if isinstance(proj, nn.Conv2d):
            plain = proj.stride == (1, 1) and proj.groups == 1 and proj.padding in ((0, 0), "valid")
            if proj.kernel_size != (1, 1) or not plain:
                raise SnapbenchError(f"Transformer2DModel.{proj_name} must be a plain 1x1 conv, got {proj}")
        elif not isinstance(proj, nn.Linear):
            raise SnapbenchError(f"Transformer2DModel.{proj_name} must be Conv2d or Linear, got {type(proj).__name__}")
    in_ch = transformer.norm.num_channels
    out_ch = _out_dim(transformer.proj_out)
    if out_ch != in_ch:
        raise SnapbenchError(f"Transformer2DModel with out_channels {out_ch} != in_channels {in_ch} has no residual; "
                             "not supported")
    if len(transformer.transformer_blocks) == 0:
        raise SnapbenchError("Transformer2DModel has no transformer blocks")
    for index, block in enumerate(transformer.transformer_blocks):
        _check_block(block, f"transformer_blocks.{index}")


def _check_block(block: nn.Module, where: str) -> None:
    if type(block).__name__ not in ("BasicTransformerBlock", "CrossOnlyTransformerBlock"):
        raise SnapbenchError(f"{where}: only BasicTransformerBlock (or snapbench's variant without "
                             f"self-attention) is supported, got {type(block).__name__}")
    if getattr(block, "norm_type", None) != "layer_norm":
        raise SnapbenchError(f"{where}: norm_type {block.norm_type!r} is not supported, only 'layer_norm' (SD 1.x/2.x)")
    if getattr(block, "pos_embed", None) is not None:
        raise SnapbenchError(f"{where}: positional embeddings are not supported")
    if hasattr(block, "fuser"):
        raise SnapbenchError(f"{where}: gated (GLIGEN) attention is not supported")
    if block.activation_fn not in _SUPPORTED_ACTIVATIONS:
        raise SnapbenchError(f"{where}: activation {block.activation_fn!r} is not supported; "
                             f"supported: {', '.join(_SUPPORTED_ACTIVATIONS)}")
    for norm_name in ("norm1", "norm2", "norm3"):
        norm = getattr(block, norm_name)
        if norm is not None and not isinstance(norm, nn.LayerNorm):
            raise SnapbenchError(f"{where}.{norm_name}: expected LayerNorm, got {type(norm).__name__}")
    for attn_name in ("attn1", "attn2"):
        attn = getattr(block, attn_name)
        if attn is not None:
            _check_attention(attn, f"{where}.{attn_name}")


def _check_attention(attn: nn.Module, where: str) -> None:
    processor = type(getattr(attn, "processor", None)).__name__
    if processor not in _SUPPORTED_PROCESSORS:
        raise SnapbenchError(f"{where}: attention processor {processor} is not supported; "
                             f"supported: {', '.join(_SUPPORTED_PROCESSORS)}")
    unsupported = [
        feature
        for feature, present in (
            ("fused projections", getattr(attn, "fused_projections", False)),
            ("group_norm", getattr(attn, "group_norm", None) is not None),
            ("spatial_norm", getattr(attn, "spatial_norm", None) is not None),
            ("norm_cross", getattr(attn, "norm_cross", None) is not None),
            ("q/k norm", getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None),
            ("added kv projections", getattr(attn, "added_kv_proj_dim", None) is not None),
            ("residual_connection", getattr(attn, "residual_connection", False)),
            ("rescale_output_factor != 1", getattr(attn, "rescale_output_factor", 1.0) != 1.0),
            ("causal attention", getattr(attn, "is_causal", False)),
        )
        if present
    ]
    if unsupported:
        raise SnapbenchError(f"{where}: attention with {', '.join(unsupported)} is not supported")
    if attn.inner_dim % attn.heads != 0:
        raise SnapbenchError(f"{where}: inner dim {attn.inner_dim} is not divisible by {attn.heads} heads")


# --------------------------------------------------------------------------------------------------------
# Weight copies: Linear [out, in] -> 1x1 Conv2d [out, in, 1, 1]
# --------------------------------------------------------------------------------------------------------


def _out_dim(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _weight(tensor: torch.Tensor, take: bool, scale: float = 1.0) -> torch.Tensor:
    """`tensor` times `scale`: a new tensor, or (`take`) `tensor`'s own storage, scaled in place. The same
    fp32 multiply either way, so the same bits."""
    with torch.no_grad():
        if not take:
            return tensor.detach() * scale if scale != 1.0 else tensor.detach().clone()
        return tensor.detach().mul_(scale) if scale != 1.0 else tensor.detach()


def _conv1x1_from(layer: nn.Module, scale: float = 1.0, *, take: bool = False) -> nn.Conv2d:
    """A new 1x1 conv with a Linear's or 1x1 Conv2d's weights, optionally scaled: a copy, or (`take`) the
    layer's own tensors ([out, in] -> [out, in, 1, 1] is a view). Made on the meta device and then given its
    weights: a conv of its own would first allocate and randomly initialise weights only to overwrite them."""
    if isinstance(layer, nn.Linear):
        out_dim, in_dim = layer.weight.shape
    else:
        out_dim, in_dim = layer.out_channels, layer.in_channels
    conv = nn.Conv2d(in_dim, out_dim, kernel_size=1, bias=layer.bias is not None, device="meta")
    dtype = conv.weight.dtype  # the default dtype, as a conv made on the CPU would have
    conv.weight = nn.Parameter(_weight(layer.weight, take, scale).reshape(out_dim, in_dim, 1, 1).to(dtype))
    if layer.bias is not None:
        conv.bias = nn.Parameter(_weight(layer.bias, take, scale).to(dtype))
    return conv


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of (B, C, 1, S).

    Same maths as nn.LayerNorm(C) on (B, S, C), but the reduction runs over dim 1, so the (B, C, 1, S)
    activations never need a transpose to reach a "last-axis" norm. Mean and variance are written out
    (not F.layer_norm) so the traced graph is reduce_mean / sub / mul / rsqrt, ops the ANE runs.
    """

    def __init__(self, norm: nn.LayerNorm, take: bool = False):
        super().__init__()
        if len(norm.normalized_shape) != 1:
            raise SnapbenchError(f"LayerNorm over {tuple(norm.normalized_shape)} is not supported, only one axis")
        channels = norm.normalized_shape[0]
        self.eps = float(norm.eps)
        weight = _weight(norm.weight, take) if norm.weight is not None else None
        bias = _weight(norm.bias, take) if getattr(norm, "bias", None) is not None else None
        # stored as (1, C, 1, 1) so they broadcast over (B, C, 1, S) without a reshape at run time
        self.weight = nn.Parameter(weight.reshape(1, channels, 1, 1)) if weight is not None else None
        self.bias = nn.Parameter(bias.reshape(1, channels, 1, 1)) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, 1, S)
        mean = x.mean(dim=1, keepdim=True)                            # (B, 1, 1, S)
        centred = x - mean                                            # (B, C, 1, S)
        variance = (centred * centred).mean(dim=1, keepdim=True)      # (B, 1, 1, S)
        out = centred * torch.rsqrt(variance + self.eps)              # (B, C, 1, S)
        if self.weight is not None:
            out = out * self.weight                                   # (B, C, 1, S)
        if self.bias is not None:
            out = out + self.bias                                     # (B, C, 1, S)
        return out


class RankFourGroupNorm(nn.Module):
    """GroupNorm on (B, C, H, W) that returns (B, C, 1, H*W) and never builds a rank-5 tensor.

    coremltools lowers nn.GroupNorm through a (B, G, C/G, H, W) reshape; rank-5 tensors are outside what
    the ANE handles natively. Folding H and W together keeps every intermediate at rank 4, and the
    output is already in the (B, C, 1, S) layout the rest of the block uses.
    """

    def __init__(self, norm: nn.GroupNorm, take: bool = False):
        super().__init__()
        channels = norm.num_channels
        self.groups = int(norm.num_groups)
        self.eps = float(norm.eps)
        self.weight = nn.Parameter(_weight(norm.weight, take).reshape(1, channels, 1, 1)) if norm.affine else None
        self.bias = nn.Parameter(_weight(norm.bias, take).reshape(1, channels, 1, 1)) if norm.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W)
        batch, channels, height, width = x.shape
        g = x.reshape(batch, self.groups, channels // self.groups, height * width)  # (B, G, C/G, S)
        mean = g.mean(dim=(2, 3), keepdim=True)                      # (B, G, 1, 1)
        centred = g - mean                                            # (B, G, C/G, S)
        variance = (centred * centred).mean(dim=(2, 3), keepdim=True)  # (B, G, 1, 1)
        g = centred * torch.rsqrt(variance + self.eps)                # (B, G, C/G, S)
        out = g.reshape(batch, channels, 1, height * width)           # (B, C, 1, S)
        if self.weight is not None:
            out = out * self.weight + self.bias                       # (B, C, 1, S)
        return out


# --------------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------------


class ANEAttention(nn.Module):
    """diffusers `Attention` (AttnProcessor / AttnProcessor2_0 maths) on (B, C, 1, S) activations.

    The 1/sqrt(d) softmax scale is folded into the query projection's weights and bias: one less op per
    head, and in fp16 the scores stay small before the matmul rather than being scaled after it.
    """

    def __init__(self, attn: nn.Module, impl: str, query_chunk_size: int, query_chunks: int | None = None,
                 take: bool = False):
        super().__init__()
        if impl not in ("split_einsum", "split_einsum_v2"):
            raise SnapbenchError(f"ANEAttention needs split_einsum or split_einsum_v2, got {impl!r}")
        self.impl = impl
        self.heads = int(attn.heads)
        self.head_dim = attn.inner_dim // self.heads
        # fewer key/value heads (multi-/grouped-query): query head i reads key/value head i // group
        self.group = self.heads // (getattr(attn, "inner_kv_dim", attn.inner_dim) // self.head_dim)
        self.query_chunk_size = int(query_chunk_size)
        self.query_chunks = query_chunks
        self.to_q = _conv1x1_from(attn.to_q, scale=float(attn.scale), take=take)
        self.to_k = _conv1x1_from(attn.to_k, take=take)
        self.to_v = _conv1x1_from(attn.to_v, take=take)
        self.to_out = _conv1x1_from(attn.to_out[0], take=take)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x: (B, C, 1, S) queries' source; context: (B, Ck, 1, L) keys' and values' source (x for self-attention)
        q = self.to_q(x)                                              # (B, h*d, 1, S), pre-scaled by 1/sqrt(d)
        k = self.to_k(context)                                        # (B, h*d, 1, L)
        v = self.to_v(context)                                        # (B, h*d, 1, L)

        # One transpose of the keys for all heads puts the key index on the channel axis, where the
        # scores (B, L, 1, S) keep it: then both einsums below are the (B, C, 1, W) x (B, W, 1, U) form
        # that coremltools lowers to the MIL einsum op, and softmax reduces over channels.
        k_t = k.transpose(1, 3)                                       # (B, L, 1, h*d)

        # Heads are sliced off the channel axis (one split op each): no (B, h, d, S) reshape, no rank 5.
        q_heads = q.split(self.head_dim, dim=1)                       # h x (B, d, 1, S)
        # (one key/value head: no split; coremltools 9 refuses a one-output split)
        k_heads = k_t.split(self.head_dim, dim=3) if self.group < self.heads else (k_t,)  # h/g x (B, L, 1, d)
        v_heads = v.split(self.head_dim, dim=1) if self.group < self.heads else (v,)      # h/g x (B, d, 1, L)
        if self.group > 1:  # each key/value head serves `group` query heads: sliced once, read g times
            k_heads = tuple(k_heads[i // self.group] for i in range(self.heads))
            v_heads = tuple(v_heads[i // self.group] for i in range(self.heads))

        # A sequence no longer than one chunk needs no chunking (and coremltools 9 rejects the
        # one-output split / one-input concat that chunking it would trace).
        if self.query_chunks is not None:  # a fixed number of chunks: the graph is the same at every length
            chunked = self.impl == "split_einsum_v2" and self.query_chunks > 1
        else:
            chunked = self.impl == "split_einsum_v2" and q.shape[3] > self.query_chunk_size
        if not chunked:
            outs = [_attend(q_h, k_h, v_h) for q_h, k_h, v_h in zip(q_heads, k_heads, v_heads)]
        else:
            outs = [
                # chunk the queries of each head along the sequence: each score map is (B, L, 1, chunk),
                # never (B, L, 1, S); the last chunk is shorter when S is not a multiple of the chunk
                torch.cat([_attend(q_c, k_h, v_h) for q_c in self._query_chunks(q_h)], dim=3)  # (B, d, 1, S)
                for q_h, k_h, v_h in zip(q_heads, k_heads, v_heads)
            ]
        out = torch.cat(outs, dim=1)                                  # (B, h*d, 1, S)
        return self.to_out(out)                                       # (B, C, 1, S)

    def _query_chunks(self, q_h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.query_chunks is not None:
            return q_h.chunk(self.query_chunks, dim=3)  # traced as ConstantChunk: n chunks at any length
        return q_h.split(self.query_chunk_size, dim=3)  # n x (B, d, 1, c)


def _attend(q: torch.Tensor, k_t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One head (or one query chunk of one head): softmax(q.k) v with keys on the channel axis."""
    # q: (B, d, 1, Sq) pre-scaled; k_t: (B, L, 1, d); v: (B, d, 1, L)
    scores = torch.einsum("nlhd,ndhs->nlhs", k_t, q)                 # (B, L, 1, Sq)
    weights = scores.softmax(dim=1)                                   # (B, L, 1, Sq), normalised over keys
    return torch.einsum("ndhl,nlhs->ndhs", v, weights)               # (B, d, 1, Sq)


# --------------------------------------------------------------------------------------------------------
# Feed-forward, block, transformer
# --------------------------------------------------------------------------------------------------------


class ANEFeedForward(nn.Module):
    """diffusers FeedForward (GEGLU or GELU, then a projection) as 1x1 convs on (B, C, 1, S)."""

    def __init__(self, ff: nn.Module, activation_fn: str, take: bool = False):
        super().__init__()
        act = ff.net[0]
        self.gated = activation_fn == "geglu"
        self.approximate = "tanh" if activation_fn == "gelu-approximate" else "none"
        self.proj_in = _conv1x1_from(act.proj, take=take)
        self.proj_out = _conv1x1_from(ff.net[-1] if isinstance(ff.net[-1], nn.Linear) else ff.net[-2], take=take)
        self.inner = _out_dim(act.proj) // 2 if self.gated else _out_dim(act.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, 1, S)
        h = self.proj_in(x)                                           # (B, 2F, 1, S) for GEGLU, (B, F, 1, S) else
        if self.gated:
            # GEGLU: the first half of the channels is the value, the second half the gate (diffusers'
            # chunk(2, dim=-1) on (B, S, 2F) is a split on the channel axis here, no data movement)
            value, gate = h.split(self.inner, dim=1)                  # 2 x (B, F, 1, S)
            h = value * F.gelu(gate, approximate=self.approximate)    # (B, F, 1, S)
        else:
            h = F.gelu(h, approximate=self.approximate)               # (B, F, 1, S)
        return self.proj_out(h)                                       # (B, C, 1, S)


class ANEBasicTransformerBlock(nn.Module):
    """BasicTransformerBlock (pre-norm self-attention, cross-attention, feed-forward) on (B, C, 1, S)."""

    def __init__(self, block: nn.Module, impl: str, query_chunk_size: int, query_chunks: int | None = None,
                 take: bool = False):
        super().__init__()
        self.has_attn1 = block.attn1 is not None  # None: a SnapGen-style block without self-attention
        if self.has_attn1:
            self.norm1 = ChannelLayerNorm(block.norm1, take)
            self.attn1 = ANEAttention(block.attn1, impl, query_chunk_size, query_chunks, take)
        # attn1 reads the context only with only_cross_attention; attn2 reads x with double_self_attention
        self.attn1_on_context = bool(block.only_cross_attention)
        self.has_attn2 = block.attn2 is not None
        if self.has_attn2:
            self.norm2 = ChannelLayerNorm(block.norm2, take)
            self.attn2 = ANEAttention(block.attn2, impl, query_chunk_size, query_chunks, take)
            self.attn2_on_context = not bool(block.double_self_attention)
        self.norm3 = ChannelLayerNorm(block.norm3, take)
        self.ff = ANEFeedForward(block.ff, block.activation_fn, take)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        # x: (B, C, 1, S); context: (B, D, 1, L)
        if self.has_attn1:
            h = self.norm1(x)                                         # (B, C, 1, S)
            x = x + self.attn1(h, context if self.attn1_on_context else h)  # (B, C, 1, S)
        if self.has_attn2:
            h = self.norm2(x)                                         # (B, C, 1, S)
            x = x + self.attn2(h, context if self.attn2_on_context else h)  # (B, C, 1, S)
        return x + self.ff(self.norm3(x))                             # (B, C, 1, S)


class ANETransformer2D(nn.Module):
    """Transformer2DModel (continuous input) with ANE layout: 1x1 convs and (B, C, 1, S) inside."""

    def __init__(self, transformer: nn.Module, impl: str, query_chunk_size: int, query_chunks: int | None = None,
                 take: bool = False):
        """`take`: use `transformer`'s tensors rather than copies of them (rewrite_transformer's `consume`)."""
        super().__init__()
        self.impl = impl
        self.query_chunk_size = query_chunk_size
        self.query_chunks = query_chunks
        self.norm = RankFourGroupNorm(transformer.norm, take)
        # SD-2.x's Linear proj_in acts on (B, HW, C) after a transpose; as a 1x1 conv on (B, C, 1, S)
        # it is the same maths with no transpose, so both projection types become convs here.
        self.proj_in = _conv1x1_from(transformer.proj_in, take=take)
        self.blocks = nn.ModuleList(
            ANEBasicTransformerBlock(block, impl, query_chunk_size, query_chunks, take)
            for block in transformer.transformer_blocks
        )
        self.proj_out = _conv1x1_from(transformer.proj_out, take=take)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: (B, C, H, W); encoder_hidden_states: (B, L, D) as diffusers takes it, or (B, D, 1, L)
        batch, channels, height, width = hidden_states.shape
        # The sequence goes on the last axis: (H, W) -> (1, H*W) inside the norm, a reshape with no data
        # movement. A long last axis fills the ANE's 64-byte row padding even when W is small (an 8-wide
        # fp16 row would be three quarters padding).
        x = self.proj_in(self.norm(hidden_states))                    # (B, C', 1, S)
        if encoder_hidden_states.dim() == 4:
            # already (B, D, 1, L): the layout Apple's Swift pipeline feeds the UNet, no transpose at all
            context = encoder_hidden_states
        else:
            # the one transpose of the context, shared by every block's attention (kept at rank 4)
            context = encoder_hidden_states.unsqueeze(1).permute(0, 3, 1, 2)  # (B, D, 1, L)
        for block in self.blocks:
            x = block(x, context)                                     # (B, C', 1, S)
        x = self.proj_out(x)                                          # (B, C, 1, S)
        return x.reshape(batch, channels, height, width) + hidden_states  # (B, C, H, W), residual added


class OriginalTransformer(nn.Module):
    """The diffusers module itself (a private copy) behind the same forward(hidden, context) -> tensor."""

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.impl = "original"
        self.transformer = copy.deepcopy(transformer)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> torch.Tensor:
        return self.transformer(hidden_states, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]


def _as_float64(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(tensor, torch.Tensor):
        return tensor.detach().to(device="cpu", dtype=torch.float64).numpy()
    return np.asarray(tensor, dtype=np.float64)
