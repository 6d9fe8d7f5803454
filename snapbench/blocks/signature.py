"""Block signatures: the structural key under which a block's latency is stored.

Two blocks with one signature cost the same on a device whatever their weights, so the latency table
and profile-mode conversion are keyed by it. Settings that change cost for every block (weight bits,
compute units) live in their own table columns; the attention implementation is part of a CA block's
signature only, since it does not change a ResNet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from torch import nn

from snapbench.model.units import AttentionUnit, BlockUnit, ResnetUnit
from snapbench.model.variants import kv_heads_of, separable_ratio

Shape = tuple[int, ...]
# A structural attribute's value (heads, a projection's kind, a ratio): written into the key as text.
AttrValue = str | int | float | bool


@dataclass(frozen=True)
class Signature:
    kind: str  # RB, RB-shortcut, CA, time_embedding, conv_in, downsample, upsample, conv_out
    inputs: tuple[tuple[str, Shape], ...]
    output: Shape
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    precision: str = "fp16"
    attention: str = "-"  # CA blocks only

    def key(self) -> str:
        ins = ",".join(f"{n}={'x'.join(map(str, s))}" for n, s in self.inputs)
        out = "x".join(map(str, self.output))
        attrs = ",".join(f"{k}={v}" for k, v in self.attrs)
        return f"{self.kind}|{ins}|out={out}|{attrs}|{self.precision}|attn={self.attention}"

    def digest(self) -> str:
        """Short stable hash of the key: file names for shared profile-mode packages."""
        return hashlib.sha1(self.key().encode()).hexdigest()[:12]

    def with_settings(self, *, precision: str | None = None, attention: str | None = None) -> Signature:
        return Signature(
            self.kind, self.inputs, self.output, self.attrs,
            precision or self.precision,
            (attention or self.attention) if self.kind in ("CA", "TB") else "-",
        )


def signature_kind(unit: BlockUnit) -> str:
    if isinstance(unit, ResnetUnit):
        return "RB-shortcut" if unit.removed else "RB"
    if isinstance(unit, AttentionUnit):
        return "CA"
    return unit.slot.name


def _structure(unit: BlockUnit) -> tuple[tuple[str, AttrValue], ...]:
    """Attributes that change cost but not input shapes. SnapGen-style variants add an attribute only
    where they differ from the diffusers block, so existing signatures (and tables keyed by them) stay."""
    if isinstance(unit, AttentionUnit):
        t = unit.transformer
        block = t.transformer_blocks[0]
        self_attn = getattr(block, "attn1", None)
        attn = self_attn if self_attn is not None else block.attn2
        attrs: list[tuple[str, AttrValue]] = [
            ("heads", attn.heads),
            ("head_dim", attn.inner_dim // attn.heads if hasattr(attn, "inner_dim") else "?"),
            ("layers", len(t.transformer_blocks)),
            ("proj", "linear" if getattr(t, "use_linear_projection", False) else "conv"),
            ("ff_mult", block.ff.net[2].in_features // attn.inner_dim if hasattr(attn, "inner_dim") else "?"),
        ]
        if hasattr(attn, "inner_kv_dim") and kv_heads_of(attn) != attn.heads:
            attrs.append(("kv_heads", kv_heads_of(attn)))
        if self_attn is None:
            attrs.append(("self_attn", 0))
        return tuple(attrs)
    if isinstance(unit, ResnetUnit):
        r = unit.resnet
        ratio = separable_ratio(r)
        extra = (("separable", ratio),) if ratio is not None and not unit.removed else ()
        return (("groups", r.norm1.num_groups), ("shortcut", int(r.conv_shortcut is not None))) + extra
    if unit.slot.name in ("downsample", "upsample"):
        sampler = next(iter(unit.children()))
        return (("conv", int(getattr(sampler, "use_conv", False) or getattr(sampler, "conv", None) is not None)),)
    return ()


def make_signature(unit: BlockUnit, inputs: tuple[tuple[str, Shape], ...], output: Shape,
                   *, precision: str = "fp16", attention: str = "original") -> Signature:
    kind = signature_kind(unit)
    return Signature(kind, inputs, output, _structure(unit), precision, attention if kind == "CA" else "-")


def unique_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
