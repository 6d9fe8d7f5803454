"""Block signatures: the structural key under which a block's latency is stored.

Two blocks with one signature cost the same on a device whatever their weights, so the latency table
and profile-mode conversion are keyed by it. Settings that change cost for every block (weight bits,
compute units) live in their own table columns; the attention implementation is part of a CA block's
signature only, since it does not change a ResNet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from snapbench.model.units import AttentionUnit, BlockUnit, ResnetUnit

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    kind: str  # RB, RB-shortcut, CA, time_embedding, conv_in, downsample, upsample, conv_out
    inputs: tuple[tuple[str, Shape], ...]
    output: Shape
    attrs: tuple[tuple[str, Any], ...] = ()
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

    def with_settings(self, *, precision: str | None = None, attention: str | None = None) -> "Signature":
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


def _structure(unit: BlockUnit) -> tuple[tuple[str, Any], ...]:
    """Attributes that change cost but not input shapes."""
    if isinstance(unit, AttentionUnit):
        t = unit.transformer
        block = t.transformer_blocks[0]
        attn = block.attn1
        return (
            ("heads", attn.heads),
            ("head_dim", attn.inner_dim // attn.heads if hasattr(attn, "inner_dim") else "?"),
            ("layers", len(t.transformer_blocks)),
            ("proj", "linear" if getattr(t, "use_linear_projection", False) else "conv"),
            ("ff_mult", block.ff.net[2].in_features // attn.inner_dim if hasattr(attn, "inner_dim") else "?"),
        )
    if isinstance(unit, ResnetUnit):
        r = unit.resnet
        return (("groups", r.norm1.num_groups), ("shortcut", int(r.conv_shortcut is not None)))
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
