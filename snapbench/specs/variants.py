"""The block variants an arch spec can ask for (SnapGen, arXiv 2412.09619); the modules are in
`model/variants.py`. Torch-free, so specs stay readable without building anything."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

MAX_RATIO = 8  # separable expansion and feed-forward ratios: beyond this a variant is not a cheaper block


@dataclass(frozen=True)
class Variant:
    """Which variant a block runs as; the defaults are the diffusers block unchanged."""

    separable: int | None = None  # RB: expansion ratio of depthwise-separable convolutions
    kv_heads: int | None = None  # CA: key/value heads (1: multi-query)
    ff_mult: int | None = None  # CA: feed-forward inner width / channels
    self_attention: bool = True  # CA: False drops every self-attention of the block

    RB_FIELDS: ClassVar[tuple[str, ...]] = ("separable",)
    CA_FIELDS: ClassVar[tuple[str, ...]] = ("kv_heads", "ff_mult", "self_attention")

    @property
    def is_default(self) -> bool:
        return self == Variant()

    def label(self) -> str:
        """Short words for tables and chips: 'separable x2', 'MQA', 'GQA 4', 'FFN x3', 'no self-attn'."""
        parts = []
        if self.separable is not None:
            parts.append(f"separable x{self.separable}")
        if self.kv_heads is not None:
            parts.append("MQA" if self.kv_heads == 1 else f"GQA {self.kv_heads}")
        if self.ff_mult is not None:
            parts.append(f"FFN x{self.ff_mult}")
        if not self.self_attention:
            parts.append("no self-attn")
        return ", ".join(parts)

    def to_dict(self) -> JSONObject:
        d: JSONObject = {}
        for name in ("separable", "kv_heads", "ff_mult"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if not self.self_attention:
            d["self_attention"] = False
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, object], kind: str, where: str) -> Variant:
        """Parse the variant fields of an arch-spec entry; `kind` is the block's (RB or CA)."""
        allowed = cls.RB_FIELDS if kind == "RB" else cls.CA_FIELDS
        wrong = [k for k in cls.RB_FIELDS + cls.CA_FIELDS if k in data and k not in allowed]
        if wrong:
            raise SnapbenchError(f"{where}: {wrong[0]} applies to {'CA' if kind == 'RB' else 'RB'} blocks, not "
                                 f"{kind}; {kind} variants: {', '.join(allowed)}")
        values: dict[str, int] = {}
        for name in ("separable", "kv_heads", "ff_mult"):
            if name in data:
                v = data[name]
                top = MAX_RATIO if name != "kv_heads" else 1024
                if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= top:
                    raise SnapbenchError(f"{where}.{name}: must be a whole number from 1 to {top}, got {v!r}")
                values[name] = v
        self_attention = data.get("self_attention", True)
        if not isinstance(self_attention, bool):
            raise SnapbenchError(f"{where}.self_attention: must be true or false")
        return cls(values.get("separable"), values.get("kv_heads"), values.get("ff_mult"), self_attention)
