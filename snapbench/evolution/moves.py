"""Evolution's design moves (`evolve --moves`): what one action may do to one block.

- `remove` (A-) and `copy` (A+), SnapFusion's two (actions.py): the defaults.
- Swaps (`S`): replace a kept block by a cheaper SnapGen-style variant (specs/variants.py), priced from the
  latency table like any block (the variant's own signature, estimated on demand and labelled) and valued
  like a removal, quality lost per ms saved:
    separable       RB: 3x3 convolutions -> expanded depthwise-separable ones (ratio 2)
    mqa             CA, TB: every attention -> multi-query (one key/value head)
    ffn             CA, TB: feed-forward ratio 4 -> 3 (Sana's 2.5 -> 2)
    drop-self-attn  CA: transformer layers of cross-attention + feed-forward only

A swap is a field value on the block's arch-spec entry, so a swapped block can still be removed or
copied (its copies run the variant) and every later tool (convert, profile, report) reads it as is. The
table of swaps is data: another family adds rows whose `kind` is its own (a DiT's `TB`), nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from snapbench.errors import SnapbenchError
from snapbench.specs.arch_spec import ArchSpec, BlockChoice
from snapbench.specs.layout import Slot

REMOVE, COPY = "remove", "copy"
DEFAULT_MOVES: tuple[str, ...] = (REMOVE, COPY)


@dataclass(frozen=True)
class Swap:
    """A move that sets one variant field of a block to a cheaper value."""

    name: str  # the --moves name
    kinds: tuple[str, ...]  # the block kinds it applies to (RB, CA, a DiT's TB)
    field: str  # the Variant field it sets
    value: int | bool  # bool: self_attention (drop-self-attn); int: a ratio or a head count
    what: str  # one line for help and errors

    @property
    def kind(self) -> str:
        return " / ".join(self.kinds)

    def blocked(self, spec: ArchSpec, slot: Slot) -> str | None:
        """Why this swap cannot apply to `slot` of `spec` (None: it can)."""
        if slot.kind not in self.kinds:
            return f"applies to {self.kind} blocks, not {slot.kind}"
        c = spec.choice(slot)
        if not c.keep:
            return "the block is removed"
        have = getattr(c.variant, self.field)
        if have == self.value_for(spec) or (self.field == "kv_heads" and have is not None and have <= self.value):
            return f"the block already has {self.field}={have}"
        if self.field == "kv_heads" and heads_of(spec.base_config, slot) <= self.value:
            return f"the block has {heads_of(spec.base_config, slot)} attention head(s): nothing to share"
        if self.field == "ff_mult" and (have or ff_ratio(spec.base_config)) <= self.value_for(spec):
            return f"the block's feed-forward ratio is already {have or ff_ratio(spec.base_config)}"
        return None

    def value_for(self, spec: ArchSpec | None) -> int | bool:
        """The field's value for `spec`'s blocks: a feed-forward ratio one below the config's (4 -> 3; Sana's
        2.5 -> 2), else the swap's own."""
        if self.field == "ff_mult" and spec is not None:
            return min(self.value, math.ceil(ff_ratio(spec.base_config)) - 1)
        return self.value

    def apply(self, choice: BlockChoice, spec: ArchSpec | None = None) -> BlockChoice:
        v, variant = self.value_for(spec), choice.variant
        if self.field == "self_attention":
            return replace(choice, variant=replace(variant, self_attention=bool(v)))
        if self.field == "separable":
            return replace(choice, variant=replace(variant, separable=int(v)))
        if self.field == "kv_heads":
            return replace(choice, variant=replace(variant, kv_heads=int(v)))
        return replace(choice, variant=replace(variant, ff_mult=int(v)))


def ff_ratio(config: Mapping[str, object]) -> float:
    """A transformer block's feed-forward inner width over its channels: diffusers' 4, Sana's mlp_ratio."""
    if config.get("_class_name") == "SanaTransformer2DModel":
        ratio = config.get("mlp_ratio", 2.5)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise SnapbenchError(f"DiT config mlp_ratio is {ratio!r}; give a number")
        return float(ratio)
    return 4.0


def _whole(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise SnapbenchError(f"config {field} is {value!r}; give a whole number")
    return int(value)


SWAPS: Mapping[str, Swap] = {s.name: s for s in (
    Swap("separable", ("RB",), "separable", 2, "ResNet 3x3 convolutions -> expanded depthwise-separable (ratio 2)"),
    Swap("mqa", ("CA", "TB"), "kv_heads", 1, "attention -> multi-query (one key/value head)"),
    Swap("ffn", ("CA", "TB"), "ff_mult", 3, "feed-forward ratio 4 -> 3"),
    # a DiT block without self-attention would have no image attention at all: UNet CA blocks only
    Swap("drop-self-attn", ("CA",), "self_attention", False, "transformer layers without self-attention"),
)}
MOVE_NAMES: tuple[str, ...] = (REMOVE, COPY, *SWAPS)


def parse_moves(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """'remove,copy,mqa' -> the move names, in MOVE_NAMES order; an unknown name is one line."""
    if text is None:
        return DEFAULT_MOVES
    parts = [p.strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    unknown = [p for p in parts if p not in MOVE_NAMES]
    if unknown:
        raise SnapbenchError(f"--moves: unknown move {unknown[0]!r}; moves are {', '.join(MOVE_NAMES)} "
                             "(comma-separated)")
    if not parts:
        raise SnapbenchError(f"--moves is empty; give some of {', '.join(MOVE_NAMES)}")
    return tuple(m for m in MOVE_NAMES if m in parts)


def check_moves_apply(moves: Sequence[str], spec: ArchSpec, slots: Sequence[Slot], flag: str = "--moves") -> None:
    """Every swap asked for must apply to some block of the starting model; one line naming why not."""
    for name in moves:
        swap = SWAPS.get(name)
        if swap is None:
            continue
        reasons = [swap.blocked(spec, s) for s in slots]
        if all(reasons):
            kinds = [r for r in reasons if r and not r.startswith("applies to")]
            why = kinds[0] if kinds else f"it has no {swap.kind} blocks"
            raise SnapbenchError(f"{flag} {name}: applies to no block of {spec.name} ({why}); "
                                 f"drop {name} from {flag}")


def heads_of(config: Mapping[str, object], slot: Slot) -> int:
    """Attention heads of a UNet CA slot, from the config as diffusers reads it (num_attention_heads, or
    attention_head_dim standing in for it; per level for down blocks, reversed for up blocks, the last
    level's for the mid block); a DiT block's are its config's num_attention_heads."""
    if slot.kind == "TB":
        return _whole(config["num_attention_heads"], "num_attention_heads")
    heads = config.get("num_attention_heads") or config.get("attention_head_dim") or 8
    channels = config["block_out_channels"]
    levels = len(channels) if isinstance(channels, (list, tuple)) else 0
    per = [_whole(h, "num_attention_heads") for h in (heads if isinstance(heads, (list, tuple)) else [heads] * levels)]
    parts = slot.module_path.split(".")
    if parts[0] == "down_blocks":
        return per[int(parts[1])]
    if parts[0] == "up_blocks":
        return per[::-1][int(parts[1])]
    return per[-1]
