"""The numbers of a UNet config a user wrote, checked before anything is built from them: channels, layer
counts, groups, sample size and widths must be whole positive numbers that fit together. diffusers itself
fails on these with messages such as "not all arguments converted during string formatting" or, for a
negative channel count, deep inside torch; here each is one line naming the field and what fits.

The block count is bounded too (`SizeLimits.blocks`): the layout makes one slot per block, so a billion
layers per block would fill memory before any network exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from snapbench.errors import SnapbenchError
from snapbench.size_limits import DEFAULT_LIMITS, LIFT_HINT, ModelTooLarge, limits_lifted

# Fields that are one positive whole number, or one per down block.
_PER_BLOCK = ("layers_per_block", "attention_head_dim", "num_attention_heads", "transformer_layers_per_block")
_SINGLE = ("in_channels", "out_channels", "norm_num_groups", "cross_attention_dim", "sample_size")


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _bad(field: str, value: object, want: str) -> SnapbenchError:
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return SnapbenchError(f"UNet config {field} is {shown}; {want}")


def check_config_values(config: Mapping[str, Any], n_blocks: int) -> None:
    """Refuse a config whose numbers cannot make a UNet, naming the field (before diffusers sees it)."""
    channels = config.get("block_out_channels")
    if not isinstance(channels, (list, tuple)) or not channels or not all(_is_count(c) for c in channels):
        raise _bad("block_out_channels", channels, "give one positive whole number per down block, e.g. [320, 640, 1280, 1280]")
    if len(channels) != n_blocks:
        raise SnapbenchError(f"UNet config block_out_channels has {len(channels)} entries for {n_blocks} down blocks")
    for field in _SINGLE:
        v = config.get(field)
        if v is None:
            continue
        if (field == "sample_size" and isinstance(v, (list, tuple))  # diffusers allows (height, width)
                and len(v) == 2 and all(_is_count(x) for x in v)):
            continue
        if field == "cross_attention_dim" and isinstance(v, (list, tuple)) and v and all(_is_count(x) for x in v):
            continue
        if not _is_count(v):
            raise _bad(field, v, "must be a positive whole number")
    for field in _PER_BLOCK:
        v = config.get(field)
        if v is None:
            continue
        values = v if isinstance(v, (list, tuple)) else [v]
        if not values or not all(_is_count(x) for x in values):
            raise _bad(field, v, "must be a positive whole number (or one per down block)")
    groups = config.get("norm_num_groups", 32)
    if groups is not None:
        for c in channels:
            if c % groups:
                raise SnapbenchError(f"UNet config block_out_channels has {c}, not divisible by norm_num_groups "
                                     f"{groups}; group norm needs channels that are multiples of it")
    layers = config.get("layers_per_block", 2)
    per_block = list(layers) if isinstance(layers, (list, tuple)) else [layers] * n_blocks
    # each down layer is an RB (+ CA), each up layer one more; a rough count is enough to bound it
    blocks = 2 * (2 * sum(per_block) + n_blocks)
    if blocks > DEFAULT_LIMITS.blocks and not limits_lifted():
        raise ModelTooLarge(f"UNet config layers_per_block {layers!r} makes about {blocks:,} blocks, far more than "
                            f"any real UNet has (SD-v1.5: 38); check layers_per_block ({LIFT_HINT})")
