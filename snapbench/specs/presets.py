"""Shipped arch specs (package data under specs/presets/)."""

from __future__ import annotations

import json
from importlib import resources

from snapbench.errors import SnapbenchError
from snapbench.specs.arch_spec import ArchSpec


def preset_names() -> list[str]:
    folder = resources.files("snapbench.specs") / "presets"
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def load_preset(name: str) -> ArchSpec:
    names = preset_names()
    if name not in names:
        raise SnapbenchError(f"unknown model preset {name!r}; presets: {', '.join(names)} "
                             "(or give an arch spec .json or a diffusers UNet folder)")
    text = (resources.files("snapbench.specs") / "presets" / f"{name}.json").read_text()
    return ArchSpec.from_dict(json.loads(text), source=f"preset {name}")
