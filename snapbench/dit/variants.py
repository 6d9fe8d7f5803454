"""Efficient attention for DiT blocks, as a spec option (`"attention_variant"` in a snapbench.dit/1 spec):
the SnapGen++ pattern of attention that does not grow with the square of the image tokens.

    {"kind": "window", "window": 256}   blockwise-local: each image query attends to the image tokens of
                                         its own block of `window` consecutive tokens (raster order: bands
                                         of rows), plus every text token in SD3's joint attention; text
                                         queries still attend to everything
    {"kind": "pooled_kv", "pool": 2}     compressed-global: image keys and values average-pooled over
                                         `pool` x `pool` patches of the token grid (4x fewer for 2), queries
                                         at full resolution

Both replace the maths of the image self-attention (SD3's joint attention, PixArt's attn1) and keep every
weight, so a variant starts from the full model's checkpoint and is fine-tuned (robust training) rather
than trained from scratch; cross-attention to the text is unchanged. They change what the block computes,
so they are architecture choices (priced per block signature), not conversions checked by PSNR. Sana's
self-attention is linear already: variants are refused for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

if TYPE_CHECKING:
    from diffusers.models.attention_processor import Attention, AttentionProcessor

MAX_WINDOW = 65536
MAX_POOL = 16


@dataclass(frozen=True)
class AttentionVariant:
    kind: str  # "window" | "pooled_kv"
    size: int  # window tokens, or pool factor per side

    def label(self) -> str:
        return f"window={self.size}" if self.kind == "window" else f"pooled_kv={self.size}"

    def to_dict(self) -> JSONObject:
        return {"kind": self.kind, ("window" if self.kind == "window" else "pool"): self.size}


def parse_variant(data: object, where: str) -> AttentionVariant | None:
    if data is None:
        return None
    field = {"window": "window", "pooled_kv": "pool"}.get(str(data.get("kind"))) if isinstance(data, dict) else None
    if field is None or not isinstance(data, dict):
        raise SnapbenchError(f"{where}: attention_variant must be {{\"kind\": \"window\", \"window\": N}} or "
                             "{\"kind\": \"pooled_kv\", \"pool\": N}")
    size, limit = data.get(field), MAX_WINDOW if field == "window" else MAX_POOL
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= limit:
        raise SnapbenchError(f"{where}: attention_variant.{field} must be a whole number from 1 to {limit}")
    if set(data) - {"kind", field}:
        raise SnapbenchError(f"{where}: attention_variant takes only kind and {field}")
    return AttentionVariant(str(data["kind"]), int(size))


def check_fits(variant: AttentionVariant, image_tokens: int, name: str) -> None:
    """The variant must tile the token grid: one line naming the sizes that do."""
    side = math.isqrt(image_tokens)
    if variant.kind == "window" and image_tokens % variant.size:
        raise SnapbenchError(f"{name}: attention window {variant.size} does not divide the {image_tokens} image "
                             f"tokens; use a multiple of the grid width {side} that divides {image_tokens}")
    if variant.kind == "pooled_kv" and side % variant.size:
        raise SnapbenchError(f"{name}: pool {variant.size} does not divide the {side}x{side} token grid")


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)  # (B, h, N, d)


def _pool(x: torch.Tensor, pool: int) -> torch.Tensor:
    """(B, h, S, d) image keys or values -> (B, h, S / pool^2, d), averaged over pool x pool patches."""
    b, h, s, d = x.shape
    side = math.isqrt(s)
    grid = x.transpose(2, 3).reshape(b, h * d, side, side)
    pooled = F.avg_pool2d(grid, pool)
    return pooled.reshape(b, h, d, -1).transpose(2, 3)


class VariantAttnProcessor:
    """diffusers' self / joint attention (JointAttnProcessor2_0 / AttnProcessor2_0 maths) with the image
    keys and values windowed or pooled; cross-attention runs as diffusers does."""

    def __init__(self, variant: AttentionVariant, fallback: AttentionProcessor) -> None:
        self.variant, self.fallback = variant, fallback

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, **kwargs: object
                 ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        joint = encoder_hidden_states is not None and getattr(attn, "add_q_proj", None) is not None
        if encoder_hidden_states is not None and not joint:  # cross-attention to the text: unchanged
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, **kwargs)
        h, n = int(attn.heads), hidden_states.shape[1]
        q, k, v = (_heads(attn.to_q(hidden_states), h), _heads(attn.to_k(hidden_states), h),
                   _heads(attn.to_v(hidden_states), h))
        if attn.norm_q is not None:
            q, k = attn.norm_q(q), attn.norm_k(k)
        if joint:
            assert encoder_hidden_states is not None
            cq = _heads(attn.add_q_proj(encoder_hidden_states), h)
            ck = _heads(attn.add_k_proj(encoder_hidden_states), h)
            cv = _heads(attn.add_v_proj(encoder_hidden_states), h)
            if attn.norm_added_q is not None:
                cq, ck = attn.norm_added_q(cq), attn.norm_added_k(ck)
        else:
            cq = ck = cv = q[:, :, :0]
        if self.variant.kind == "pooled_kv":
            k_img, v_img = _pool(k, self.variant.size), _pool(v, self.variant.size)
            keys, values = torch.cat([k_img, ck], dim=2), torch.cat([v_img, cv], dim=2)
            out = F.scaled_dot_product_attention(torch.cat([q, cq], dim=2), keys, values)
            img, txt = out[:, :, :n], out[:, :, n:]
        else:
            w = self.variant.size
            b, _, _, d = q.shape
            blocks = n // w
            qb, kb, vb = (t.reshape(b, h, blocks, w, d) for t in (q, k, v))  # (B, h, blocks, w, d)
            if joint:  # every image block also sees the whole text
                t = ck.shape[2]
                kb = torch.cat([kb, ck.unsqueeze(2).expand(b, h, blocks, t, d)], dim=3)
                vb = torch.cat([vb, cv.unsqueeze(2).expand(b, h, blocks, t, d)], dim=3)
            img = F.scaled_dot_product_attention(qb, kb, vb).reshape(b, h, n, d)
            txt = F.scaled_dot_product_attention(cq, torch.cat([k, ck], dim=2), torch.cat([v, cv], dim=2))
        b = hidden_states.shape[0]
        image = attn.to_out[0](img.transpose(1, 2).reshape(b, n, -1))
        if not joint:
            return image
        text = txt.transpose(1, 2).reshape(b, txt.shape[2], -1)
        if not attn.context_pre_only:
            text = attn.to_add_out(text)
        return image, text


def apply_variant(model: torch.nn.Module, variant: AttentionVariant | None, family: str) -> None:
    """Give every transformer block's image self-attention the variant's processor (in place)."""
    if variant is None:
        return
    if family == "sana":
        raise SnapbenchError("attention_variant: Sana's self-attention is linear already; variants apply to "
                             "SD3 and PixArt blocks")
    for block in model.transformer_blocks:
        for name in ("attn", "attn1", "attn2"):
            attn = getattr(block, name, None)
            # PixArt's attn2 is cross-attention: the processor passes it through to diffusers' maths
            if attn is not None:
                attn.set_processor(VariantAttnProcessor(variant, attn.processor))


def variant_of(config_notes: Mapping[str, object]) -> AttentionVariant | None:
    return parse_variant(config_notes.get("attention_variant"), "spec")
