"""The DiT spec: a diffusers DiT config plus provenance, and the presets shipped under dit/presets/.

JSON form (format "snapbench.dit/1"):

    {
      "format": "snapbench.dit/1",
      "name": "sd3-medium",
      "description": "what it is",
      "config": { ...a diffusers SD3Transformer2DModel / PixArtTransformer2DModel / SanaTransformer2DModel config,
                  with its "_class_name"... },
      "tokens": 333,                      optional: the text length its pipeline uses (default: the family's)
      "attention_variant": {"kind": "window", "window": 256},   optional: efficient attention (variants.py)
      "stages": {"DiT-2": [{"block": "TB4"}, {"block": "TB5", "keep": false}, {"block": "TB6", "copies": 1}]},
                                          optional: the elastic DiT's choices per transformer block (kept,
                                          removed, copied, a variant: kv_heads, ff_mult), as an arch spec's;
                                          a stage left out keeps every block (evolution writes these)
      "notes": { "published_params": 2000000000, "published_params_label": "2B", "config_source": ... }
    }
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from snapbench.dit.family import Family, check_config
from snapbench.dit.variants import AttentionVariant, parse_variant
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSON, JSONObject
from snapbench.specs.arch_spec import BlockChoice, parse_stages
from snapbench.specs.dit_layout import STAGES, block_slots
from snapbench.user_files import read_user_json

FORMAT = "snapbench.dit/1"
MAX_TOKENS = 4096  # bounds the context a user can ask for (attention memory grows with it)


@dataclass(frozen=True)
class DitSpec:
    name: str
    config: Mapping[str, Any]  # the diffusers config, "_class_name" included
    description: str = ""
    tokens: int | None = None  # None: the family's
    notes: Mapping[str, JSON] = field(default_factory=dict)
    attention_variant: AttentionVariant | None = None  # None: the attention diffusers' class computes
    stages: Mapping[str, tuple[BlockChoice, ...]] | None = None  # None: every transformer block kept once

    @property
    def family(self) -> Family:
        return check_config(self.config, f"DiT spec {self.name}")

    @property
    def class_name(self) -> str:
        return str(self.config["_class_name"])

    @property
    def num_layers(self) -> int:
        return int(self.family.setting(self.config, "num_layers"))

    def text_tokens(self) -> int:
        return self.tokens if self.tokens is not None else self.family.tokens

    def to_dict(self) -> JSONObject:
        d: JSONObject = {"format": FORMAT, "name": self.name, "description": self.description,
                             "config": dict(self.config)}
        if self.tokens is not None:
            d["tokens"] = self.tokens
        if self.attention_variant is not None:
            d["attention_variant"] = self.attention_variant.to_dict()
        if self.stages is not None:
            d["stages"] = {st: [c.to_dict() for c in cs] for st, cs in self.stages.items()}
        d["notes"] = dict(self.notes)
        return d

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<spec>") -> DitSpec:
        if not isinstance(data, dict):
            raise SnapbenchError(f"{source}: a DiT spec is a JSON object")
        if data.get("format") != FORMAT:
            raise SnapbenchError(f"{source}: format is {data.get('format')!r}; a DiT spec says {FORMAT!r}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise SnapbenchError(f"{source}: name missing or not a string")
        config = data.get("config")
        if not isinstance(config, dict):
            raise SnapbenchError(f"{source}: config missing; give the diffusers transformer config as an object")
        check_config(config, source)
        tokens = data.get("tokens")
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)
                                   or not 1 <= tokens <= MAX_TOKENS):
            raise SnapbenchError(f"{source}: tokens must be a whole number from 1 to {MAX_TOKENS}")
        notes = data.get("notes", {})
        if not isinstance(notes, dict):
            raise SnapbenchError(f"{source}: notes must be an object")
        unknown = set(data) - {"format", "name", "description", "config", "tokens", "notes", "attention_variant",
                               "stages"}
        if unknown:
            raise SnapbenchError(f"{source}: unknown field(s) {sorted(unknown)}; "
                                 "allowed: format, name, description, config, tokens, attention_variant, stages, notes")
        variant = parse_variant(data.get("attention_variant"), source)
        if variant is not None and config.get("_class_name") == "SanaTransformer2DModel":
            raise SnapbenchError(f"{source}: attention_variant: Sana's self-attention is linear already; variants "
                                 "apply to SD3 and PixArt blocks")
        stages = _stages(data.get("stages"), config, source)
        return cls(name, config, str(data.get("description", "")), tokens, notes, variant, stages)


def _stages(raw: object, config: Mapping[str, object], source: str) -> dict[str, tuple[BlockChoice, ...]] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SnapbenchError(f"{source}: stages must be an object keyed by stage name")
    num_layers = int(check_config(config, source).setting(config, "num_layers"))

    def bad(where: str, why: str) -> SnapbenchError:
        return SnapbenchError(f"{source}: {where}: {why}")

    return parse_stages(raw, block_slots(num_layers), bad, source, STAGES)



def is_dit_spec_data(data: object) -> bool:
    return isinstance(data, dict) and data.get("format") == FORMAT


def preset_names() -> list[str]:
    folder = resources.files("snapbench.dit") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> DitSpec:
    if name not in preset_names():
        raise SnapbenchError(f"unknown DiT preset {name!r}; DiT presets: {', '.join(preset_names())}")
    text = (resources.files("snapbench.dit") / "presets" / f"{name}.json").read_text()
    return DitSpec.from_dict(json.loads(text), source=f"preset {name}")


def load_spec(path: str | os.PathLike) -> DitSpec:
    p = Path(path)
    return DitSpec.from_dict(read_user_json(p, "DiT spec file"), source=str(p))
