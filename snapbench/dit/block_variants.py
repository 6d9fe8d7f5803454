"""Block variants (`kv_heads`, `ff_mult`) for SD3's joint blocks and Sana's linear-attention blocks; PixArt's
blocks are diffusers' BasicTransformerBlock and take the UNet's variant code (model/variants.py).

- `kv_heads=k`: the key and value projections (SD3: the image's and the text's) keep k heads, each the mean
  of its group's heads (as grouped-query uptraining starts), and each group of query heads shares one.
  SD3's joint attention: softmax over the image and text tokens together, as diffusers' JointAttnProcessor2_0;
  Sana's linear attention: relu(q) . (relu(k)^T v) per key/value head, as SanaLinearAttnProcessor2_0.
  Both equal diffusers' processors when k is the number of heads (tests).
- `ff_mult=m`: SD3's feed-forwards (image and text) keep their first m x C inner units (FeedForward);
  Sana's GLUMBConv keeps its first m x C channels of each GLU half, and its depthwise convolution's.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from snapbench.errors import SnapbenchError
from snapbench.specs.variants import Variant

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention


def _pooled_linear(linear: nn.Linear, kv_heads: int, heads: int) -> nn.Linear:
    """`linear` (heads x d outputs) with kv_heads x d outputs, each head the mean of its group's."""
    d = linear.out_features // heads
    new = nn.Linear(linear.in_features, kv_heads * d, bias=linear.bias is not None,
                    device=linear.weight.device, dtype=linear.weight.dtype)
    if linear.weight.device.type == "meta":
        return new
    with torch.no_grad():
        new.weight.copy_(linear.weight.view(kv_heads, heads // kv_heads, d, -1).mean(dim=1).reshape(kv_heads * d, -1))
        if linear.bias is not None:
            new.bias.copy_(linear.bias.view(kv_heads, heads // kv_heads, d).mean(dim=1).reshape(-1))
    return new


def _share(x: torch.Tensor, heads: int, kv_heads: int) -> torch.Tensor:
    """(B, k, S, d) key/value heads -> (B, heads, S, d): each shared by its group of query heads. The group
    size is a Python int and the copies a concatenation: `repeat_interleave` by a count read from the traced
    shape becomes a Core ML `tile` whose repeats are computed in fp32, which coremltools 9 refuses (a Sana
    toy's blocks at head width 16 hit it)."""
    if heads == kv_heads:
        return x
    return torch.stack([x] * (heads // kv_heads), dim=2).flatten(1, 2)  # head i reads kv head i // group


def _split(x: torch.Tensor, d: int) -> torch.Tensor:
    b, s, _ = x.shape
    return x.view(b, s, -1, d).transpose(1, 2)  # (B, S, n*d) -> (B, n, S, d)


class GroupedJointAttnProcessor:
    """diffusers' JointAttnProcessor2_0 (SD3), or AttnProcessor2_0 (SD3.5's image-only attn2, Sana's
    cross-attention), with fewer key/value heads."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **_: object
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise SnapbenchError("grouped-query attention here takes no attention mask (the whole text is attended)")
        h = int(attn.heads)
        d = attn.to_q.out_features // h
        n = hidden_states.shape[1]
        joint = encoder_hidden_states is not None and getattr(attn, "add_q_proj", None) is not None
        source = hidden_states if encoder_hidden_states is None or joint else encoder_hidden_states
        q = _split(attn.to_q(hidden_states), d)
        k, v = _split(attn.to_k(source), d), _split(attn.to_v(source), d)
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if joint:
            assert encoder_hidden_states is not None
            cq, ck, cv = (_split(f(encoder_hidden_states), d) for f in (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj))
            if attn.norm_added_q is not None:
                cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
            q, k, v = torch.cat([q, cq], dim=2), torch.cat([k, ck], dim=2), torch.cat([v, cv], dim=2)
        kv = attn.to_k.out_features // d
        out = F.scaled_dot_product_attention(q, _share(k, h, kv), _share(v, h, kv))
        out = out.transpose(1, 2).reshape(out.shape[0], -1, h * d)
        image = attn.to_out[1](attn.to_out[0](out[:, :n]))
        if not joint:
            return image
        text = out[:, n:]
        if not attn.context_pre_only:
            text = attn.to_add_out(text)
        return image, text


class GroupedLinearAttnProcessor:
    """diffusers' SanaLinearAttnProcessor2_0 with fewer key/value heads: relu(q) . (relu(k)^T [v; 1]) per head."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = int(attn.heads)
        d = attn.to_q.out_features // h
        kv = attn.to_k.out_features // d
        q = F.relu(_split(attn.to_q(hidden_states), d)).float()                 # (B, h, N, d)
        k = _share(F.relu(_split(attn.to_k(hidden_states), d)), h, kv).float()  # (B, h, N, d)
        v = _share(_split(attn.to_v(hidden_states), d), h, kv).float()
        v = F.pad(v, (0, 1), value=1.0)                                          # (B, h, N, d + 1)
        kv = torch.einsum("bhnk,bhnv->bhkv", k, v)                               # summed over the tokens
        out = torch.einsum("bhnk,bhkv->bhnv", q, kv)
        out = out[..., :-1] / (out[..., -1:] + 1e-15)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, h * d).to(hidden_states.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def fewer_kv_heads(attn: nn.Module, kv_heads: int, where: str) -> nn.Module:
    """A copy of a diffusers Attention whose keys and values have `kv_heads` heads (the text's too in a joint
    attention), run by the grouped processor of its kind."""
    from diffusers.models.attention_processor import SanaLinearAttnProcessor2_0

    heads = int(attn.heads)
    if kv_heads < 1 or heads % kv_heads:
        raise SnapbenchError(f"{where}: kv_heads={kv_heads} does not divide the block's {heads} heads; "
                             f"use a divisor of {heads} (1 = multi-query)")
    linear = isinstance(attn.processor, SanaLinearAttnProcessor2_0)
    new = copy.deepcopy(attn)
    for name in ("to_k", "to_v", "add_k_proj", "add_v_proj"):
        if getattr(new, name, None) is not None:
            setattr(new, name, _pooled_linear(getattr(new, name), kv_heads, heads))
    new.set_processor(GroupedLinearAttnProcessor() if linear else GroupedJointAttnProcessor())
    return new


def narrower_glumbconv(ff: nn.Module, dim: int, mult: int) -> nn.Module:
    """Sana's GLUMBConv with mult x dim hidden channels, keeping the first ones of each GLU half."""
    from diffusers.models.transformers.sana_transformer import GLUMBConv

    new = GLUMBConv(dim, ff.conv_point.out_channels, mult, norm_type=ff.norm_type,
                    residual_connection=ff.residual_connection)
    new = new.to(device=ff.conv_point.weight.device, dtype=ff.conv_point.weight.dtype)
    if ff.conv_point.weight.device.type == "meta":
        return new
    old, hidden = ff.conv_point.in_channels, new.conv_point.in_channels
    keep = min(old, hidden)
    halves = [(h * old, h * hidden) for h in range(2)]  # value half, then gate half
    with torch.no_grad():
        for conv in ("conv_inverted", "conv_depth"):
            src, dst = getattr(ff, conv), getattr(new, conv)
            dst.weight.zero_()
            dst.bias.zero_()
            for o, n in halves:
                dst.weight[n:n + keep] = src.weight[o:o + keep]
                dst.bias[n:n + keep] = src.bias[o:o + keep]
        new.conv_point.weight.zero_()
        new.conv_point.weight[:, :keep] = ff.conv_point.weight[:, :keep]
        if ff.norm is not None:
            new.norm.load_state_dict(ff.norm.state_dict())
    return new


def dit_block_variant(block: nn.Module, v: Variant, where: str) -> nn.Module:
    """A copy of an SD3 JointTransformerBlock or a SanaTransformerBlock made the variant `v`."""
    from snapbench.model.variants import narrower_feed_forward

    kind = type(block).__name__
    new = copy.deepcopy(block)
    if kind == "JointTransformerBlock":
        dim = new.attn.query_dim
        if v.kv_heads is not None:
            new.attn = fewer_kv_heads(new.attn, v.kv_heads, where)
            if getattr(new, "attn2", None) is not None:  # SD3.5's dual attention: the image's own
                new.attn2 = fewer_kv_heads(new.attn2, v.kv_heads, where)
        if v.ff_mult is not None:
            new.ff = narrower_feed_forward(new.ff, dim, v.ff_mult)
            if new.ff_context is not None:
                new.ff_context = narrower_feed_forward(new.ff_context, dim, v.ff_mult)
        return new
    if kind == "SanaTransformerBlock":
        if v.kv_heads is not None:
            new.attn1 = fewer_kv_heads(new.attn1, v.kv_heads, where)
            new.attn2 = fewer_kv_heads(new.attn2, v.kv_heads, where)  # cross-attention: softmax, no text
        if v.ff_mult is not None:
            new.ff = narrower_glumbconv(new.ff, new.attn1.query_dim, v.ff_mult)
        return new
    raise SnapbenchError(f"{where}: block variants (kv_heads, ff_mult) apply to PixArt, SD3 and Sana blocks; "
                         f"this block is a {kind}")
