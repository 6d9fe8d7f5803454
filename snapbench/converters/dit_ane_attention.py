"""Neural-Engine attention for DiT blocks: diffusers' attention maths in the (B, C, 1, S) layout, per head
as a pair of einsums (split_einsum), queries chunked (split_einsum_v2), and Sana's linear attention as
einsums over the token axis.

The rewrite swaps the attention processor of each `Attention` module in a block (weights untouched), so
every other part of the block is diffusers' own. Inside, activations are (B, C, 1, S): the projections
are 1x1 convolutions over channels, q/k RMS norms reduce over the channel axis, and heads are slices of
the channel axis (no rank-5 tensor, no (B, h, S, d) reshape). Joint attention (SD3's MMDiT) concatenates
the image and text tokens on the sequence axis, image first, as diffusers does. The layout changes at
the processor's edges (the block around it stays (B, S, C)): two transposes per attention, which the
estimate prices.

Sana's linear attention, relu(q) . (relu(k)^T v) / (relu(q) . sum relu(k)), never builds an S x S map;
per head it is two einsums and a sum over the tokens, all of which the engine runs; the denominator is
computed apart instead of padding v with a row of ones (a concat and a slice fewer).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from snapbench.converters.ane_attention import DEFAULT_QUERY_CHUNK_SIZE, _attend
from snapbench.errors import SnapbenchError

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention

DIT_ATTENTION_IMPLS = ("original", "split_einsum", "split_einsum_v2")


def to_bc1s(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).unsqueeze(2)  # (B, S, C) -> (B, C, 1, S)


def from_bc1s(x: torch.Tensor) -> torch.Tensor:
    return x.squeeze(2).transpose(1, 2)  # (B, C, 1, S) -> (B, S, C)


def conv1x1(x: torch.Tensor, linear: nn.Linear, scale: float = 1.0) -> torch.Tensor:
    """nn.Linear over the channel axis of (B, C, 1, S) as a 1x1 convolution (a scale folds into the weights)."""
    w = linear.weight[:, :, None, None] * scale
    b = linear.bias * scale if linear.bias is not None else None
    return F.conv2d(x, w, b)


def channel_rms_norm(x: torch.Tensor, norm: nn.Module | None) -> torch.Tensor:
    """diffusers' RMSNorm over the channel axis of one head's (B, d, 1, S) slice."""
    if norm is None:
        return x
    x = x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + norm.eps)
    if norm.weight is not None:
        x = x * norm.weight[None, :, None, None]
    return x


def _shared(kv: list[torch.Tensor], heads: int) -> list[torch.Tensor]:
    """Key or value heads, one per query head: with k < heads of them (grouped-query / multi-query
    variants) each serves heads / k consecutive query heads, as diffusers' grouped attention does."""
    return kv if len(kv) == heads else [kv[i // (heads // len(kv))] for i in range(heads)]


class ANEAttnProcessor:
    """Softmax attention (self, cross or SD3's joint) on (B, C, 1, S), split per head."""

    def __init__(self, impl: str, query_chunk_size: int = DEFAULT_QUERY_CHUNK_SIZE) -> None:
        self.impl, self.query_chunk_size = impl, query_chunk_size

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise SnapbenchError("ANE attention for DiTs takes no attention mask (the whole context is attended)")
        heads = int(attn.heads)
        joint = encoder_hidden_states is not None and getattr(attn, "add_q_proj", None) is not None
        x = to_bc1s(hidden_states)                                        # (B, C, 1, S)
        source = x if encoder_hidden_states is None or joint else to_bc1s(encoder_hidden_states)
        q = conv1x1(x, attn.to_q)                                         # (B, h*d, 1, S)
        k = conv1x1(source, attn.to_k)                                    # (B, h*d, 1, L)
        v = conv1x1(source, attn.to_v)
        d = q.shape[1] // heads
        q_heads = [channel_rms_norm(t, attn.norm_q) for t in q.split(d, dim=1)]   # h x (B, d, 1, S)
        k_heads = [channel_rms_norm(t, attn.norm_k) for t in k.split(d, dim=1)]
        v_heads = list(v.split(d, dim=1))
        n_image = x.shape[3]
        if joint:
            c = to_bc1s(encoder_hidden_states)                            # (B, C, 1, T)
            cq, ck, cv = conv1x1(c, attn.add_q_proj), conv1x1(c, attn.add_k_proj), conv1x1(c, attn.add_v_proj)
            # the joint sequence: image tokens then text tokens, on the last axis
            q_heads = [torch.cat([qi, channel_rms_norm(t, attn.norm_added_q)], dim=3)
                       for qi, t in zip(q_heads, cq.split(d, dim=1))]
            k_heads = [torch.cat([ki, channel_rms_norm(t, attn.norm_added_k)], dim=3)
                       for ki, t in zip(k_heads, ck.split(d, dim=1))]
            v_heads = [torch.cat([vi, t], dim=3) for vi, t in zip(v_heads, cv.split(d, dim=1))]
        # fewer key/value heads (a kv_heads variant): each shared by its group of query heads
        k_heads, v_heads = _shared(k_heads, heads), _shared(v_heads, heads)
        scale = float(attn.scale)
        outs = []
        for q_h, k_h, v_h in zip(q_heads, k_heads, v_heads):
            q_h = q_h * scale                                             # (B, d, 1, S) pre-scaled
            k_t = k_h.transpose(1, 3)                                     # (B, L, 1, d): keys on channels
            if self.impl == "split_einsum_v2" and q_h.shape[3] > self.query_chunk_size:
                # each score map is (B, L, 1, chunk), never (B, L, 1, S)
                outs.append(torch.cat([_attend(qc, k_t, v_h) for qc in q_h.split(self.query_chunk_size, dim=3)], dim=3))
            else:
                outs.append(_attend(q_h, k_t, v_h))                       # (B, d, 1, S)
        out = torch.cat(outs, dim=1)                                      # (B, h*d, 1, S [+ T])
        image = from_bc1s(conv1x1(out[..., :n_image], attn.to_out[0]))
        if not joint:
            return image
        text = out[..., n_image:]
        if attn.to_add_out is not None:  # the last SD3 block updates the image stream only
            text = conv1x1(text, attn.to_add_out)
        return image, from_bc1s(text)


class ANELinearAttnProcessor:
    """Sana's ReLU linear attention on (B, C, 1, S), per head, with no S x S map."""

    eps = 1e-15  # diffusers' guard against an all-zero denominator

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = to_bc1s(hidden_states)                                        # (B, C, 1, N)
        q, k, v = F.relu(conv1x1(x, attn.to_q)), F.relu(conv1x1(x, attn.to_k)), conv1x1(x, attn.to_v)
        heads = int(attn.heads)
        d = q.shape[1] // heads
        outs = []
        for q_h, k_h, v_h in zip(q.split(d, dim=1), _shared(list(k.split(d, dim=1)), heads),
                                 _shared(list(v.split(d, dim=1)), heads)):
            kv = torch.einsum("nchs,nkhs->nchk", v_h, k_h)                # (B, d_v, 1, d_k): summed over tokens
            num = torch.einsum("nchk,nkhs->nchs", kv, q_h)                # (B, d_v, 1, N)
            den = (q_h * k_h.sum(dim=3, keepdim=True)).sum(dim=1, keepdim=True)  # (B, 1, 1, N)
            outs.append(num / (den + self.eps))
        out = torch.cat(outs, dim=1)                                      # (B, h*d, 1, N)
        return from_bc1s(conv1x1(out, attn.to_out[0]))


def rewrite_block(unit: nn.Module, impl: str, *, query_chunk_size: int = DEFAULT_QUERY_CHUNK_SIZE) -> nn.Module:
    """A copy of a DiT unit whose attention modules compute in the Neural Engine's layout."""
    if impl not in DIT_ATTENTION_IMPLS:
        raise SnapbenchError(f"--attention {impl!r}: DiT blocks take {', '.join(DIT_ATTENTION_IMPLS)}")
    if impl == "original":
        return unit
    return rewrite_attention(copy.deepcopy(unit), impl, query_chunk_size).eval()


def rewrite_attention(module: nn.Module, impl: str, query_chunk_size: int = DEFAULT_QUERY_CHUNK_SIZE) -> nn.Module:
    """Every diffusers `Attention` under `module` (a block, or a whole DiT) given the Neural-Engine processor,
    in place; the weights are untouched."""
    if impl not in DIT_ATTENTION_IMPLS:
        raise SnapbenchError(f"--attention {impl!r}: DiT blocks take {', '.join(DIT_ATTENTION_IMPLS)}")
    if impl == "original":
        return module
    from diffusers.models.attention_processor import Attention, SanaLinearAttnProcessor2_0

    from snapbench.dit.block_variants import GroupedLinearAttnProcessor

    for m in module.modules():
        if isinstance(m, Attention):
            for norm in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
                n = getattr(m, norm, None)
                if n is not None and type(n).__name__ != "RMSNorm":
                    raise SnapbenchError(f"ANE attention supports RMS q/k norms; this block has {type(n).__name__}")
            # Sana's linear attention, as diffusers builds it or with fewer key/value heads (a variant)
            linear = isinstance(m.processor, (SanaLinearAttnProcessor2_0, GroupedLinearAttnProcessor))
            m.set_processor(ANELinearAttnProcessor() if linear else ANEAttnProcessor(impl, query_chunk_size))
    return module
