"""The arch spec: a base diffusers UNet config plus, per paper stage, which blocks are kept, removed or copied.

JSON form (format "snapbench.arch/1"):

    {
      "format": "snapbench.arch/1",
      "name": "snapfusion",
      "description": "why the blocks are where they are",
      "base_config": { ...diffusers UNet2DConditionModel config... },
      "stages": {
        "Down-1": [{"block": "RB1"}, {"block": "CA1", "keep": false}, ...],
        "Up-1":   [{"block": "RB1"}, {"block": "CA1", "copies": 1}, ...]
      },
      "notes": { free-form provenance, e.g. the paper's claims }
    }

Each listed stage names every RB/CA of that stage in execution order. A stage left out keeps all its
blocks. `keep: false` replaces the block by the identity (or, for a ResNet that changes the channel
count, by its 1x1 shortcut projection alone); `copies: k` inserts k weight copies right after it.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from snapbench.atomic import atomic_write_text
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSON, JSONObject
from snapbench.specs.dit_layout import STAGES as DIT_STAGES
from snapbench.specs.dit_layout import dit_layout, is_dit_config
from snapbench.specs.layout import Slot, layout_from_config, removable_slots
from snapbench.specs.stages import STAGES
from snapbench.specs.variants import Variant
from snapbench.user_files import read_user_json

FORMAT = "snapbench.arch/1"
MAX_COPIES = 8


@dataclass(frozen=True)
class BlockChoice:
    block: str  # stage-local name: "RB1", "CA2"
    keep: bool = True
    copies: int = 0
    variant: Variant = Variant()  # SnapGen-style cheaper version of the block (copies run it too)

    def to_dict(self) -> JSONObject:
        d: JSONObject = {"block": self.block}
        if not self.keep:
            d["keep"] = False
        if self.copies:
            d["copies"] = self.copies
        d.update(self.variant.to_dict())
        return d


@dataclass(frozen=True)
class ArchSpec:
    name: str
    base_config: Mapping[str, Any]
    stages: Mapping[str, tuple[BlockChoice, ...]]  # complete: every stage of the layout, every RB/CA
    description: str = ""
    notes: Mapping[str, JSON] = field(default_factory=dict)

    # -- derived views -------------------------------------------------------------------------------
    @property
    def layout(self) -> tuple[Slot, ...]:
        if is_dit_config(self.base_config):
            return dit_layout(self.base_config)
        return layout_from_config(self.base_config)

    @property
    def stage_names(self) -> tuple[str, ...]:
        """The stages of this spec's family, in execution order (a UNet's paper stages, a DiT's groups)."""
        return DIT_STAGES if is_dit_config(self.base_config) else STAGES

    def choice(self, slot: Slot) -> BlockChoice:
        if slot.kind == "aux":
            return BlockChoice(slot.name)
        for c in self.stages.get(slot.stage, ()):
            if c.block == slot.name:
                return c
        raise KeyError(slot.block_id)

    def counts(self) -> dict[str, dict[str, int]]:
        """Blocks that run per stage and kind (kept originals plus copies), as paper Table 3 counts."""
        kinds = ("TB",) if is_dit_config(self.base_config) else ("CA", "RB")
        out = {s: dict.fromkeys(kinds, 0) for s in self.stage_names}
        for slot in self.layout:
            if slot.kind in kinds:
                c = self.choice(slot)
                out[slot.stage][slot.kind] += int(c.keep) + c.copies
        return out

    def with_choices(self, name: str, changes: Mapping[tuple[str, str], BlockChoice], *,
                     description: str | None = None, notes: Mapping[str, JSON] | None = None) -> ArchSpec:
        """A new spec with some (stage, block) choices replaced: what evolution actions produce."""
        stages = {
            st: tuple(changes.get((st, c.block), c) for c in choices) for st, choices in self.stages.items()
        }
        return ArchSpec(name, self.base_config, stages, self.description if description is None else description,
                        self.notes if notes is None else notes)

    # -- (de)serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> JSONObject:
        return {
            "format": FORMAT,
            "name": self.name,
            "description": self.description,
            "base_config": dict(self.base_config),
            "stages": {st: [c.to_dict() for c in choices] for st, choices in self.stages.items()},
            "notes": dict(self.notes),
        }

    @classmethod
    def from_dict(cls, data: object, *, source: str = "<spec>") -> ArchSpec:
        def bad(where: str, why: str) -> SnapbenchError:
            return SnapbenchError(f"{source}: {where}: {why}")

        if not isinstance(data, dict):
            raise bad("top level", "an arch spec is a JSON object")
        if data.get("format", FORMAT) != FORMAT:
            raise bad("format", f"is {data.get('format')!r}; this snapbench reads {FORMAT!r}")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise bad("name", "missing or not a string")
        config = data.get("base_config")
        if not isinstance(config, dict):
            raise bad("base_config", "missing; give the diffusers UNet2DConditionModel config as an object")
        if is_dit_config(config):  # a DiT's spec as evolution writes it (dit/source.py: to_arch_spec)
            try:
                slots = [s for s in dit_layout(config) if s.kind == "TB"]
            except SnapbenchError as e:
                raise bad("base_config", str(e)) from None
            raw = data.get("stages", {})
            if not isinstance(raw, dict):
                raise bad("stages", "must be an object keyed by stage name")
            notes = data.get("notes", {})
            if not isinstance(notes, dict):
                raise bad("notes", "must be an object")
            return cls(name, config, parse_stages(raw, slots, bad, source, DIT_STAGES),
                       str(data.get("description", "")), notes)
        for key in ("down_block_types", "up_block_types", "block_out_channels"):
            if key not in config:
                raise bad(f"base_config.{key}", "missing")
        try:
            layout = layout_from_config(config)
        except SnapbenchError as e:
            raise bad("base_config", str(e)) from None
        raw_stages = data.get("stages", {})
        if not isinstance(raw_stages, dict):
            raise bad("stages", "must be an object keyed by stage name")
        stages = parse_stages(raw_stages, removable_slots(layout), bad, source)
        notes = data.get("notes", {})
        if not isinstance(notes, dict):
            raise bad("notes", "must be an object")
        return cls(name, config, stages, str(data.get("description", "")), notes)


def parse_stages(raw: dict, slots: list[Slot], bad, source: str,
                 stage_names: tuple[str, ...] = STAGES) -> dict[str, tuple[BlockChoice, ...]]:
    """Per-stage block choices of a spec's "stages" object, checked against the model's elastic `slots`
    (a UNet's RB / CA blocks, a DiT's transformer blocks); `bad(where, why)` makes the error."""
    expected: dict[str, list[str]] = {}
    for slot in slots:
        expected.setdefault(slot.stage, []).append(slot.name)
    for st in raw:
        if st not in stage_names:
            raise bad(f"stages.{st}", f"unknown stage; stages are {', '.join(stage_names)}")
        if st not in expected:
            raise bad(f"stages.{st}", "this model has no elastic blocks in that stage")
    out: dict[str, tuple[BlockChoice, ...]] = {}
    for st, names in expected.items():
        entries = raw.get(st)
        if entries is None:
            out[st] = tuple(BlockChoice(n) for n in names)
            continue
        if not isinstance(entries, list):
            raise bad(f"stages.{st}", "must be a list of {\"block\": ...} entries")
        choices = []
        for k, e in enumerate(entries):
            where = f"stages.{st}[{k}]"
            if isinstance(e, str):
                e = {"block": e}
            if not isinstance(e, dict) or not isinstance(e.get("block"), str):
                raise bad(where, "each entry is an object with a \"block\" name such as \"RB1\" or \"CA2\"")
            fields = {"block", "keep", "copies", *Variant.RB_FIELDS, *Variant.CA_FIELDS}
            unknown = set(e) - fields
            if unknown:
                raise bad(where, f"unknown field(s) {sorted(unknown)}; allowed: block, keep, copies, "
                                 f"RB variants {', '.join(Variant.RB_FIELDS)}, CA variants {', '.join(Variant.CA_FIELDS)}")
            keep, copies = e.get("keep", True), e.get("copies", 0)
            if not isinstance(keep, bool):
                raise bad(f"{where}.keep", "must be true or false")
            if not isinstance(copies, int) or isinstance(copies, bool) or not 0 <= copies <= MAX_COPIES:
                raise bad(f"{where}.copies", f"must be a whole number from 0 to {MAX_COPIES}")
            if not keep and copies:
                raise bad(where, "a removed block cannot also be copied")
            try:
                variant = Variant.from_dict(e, str(e["block"])[:2], where)
            except SnapbenchError as err:
                raise SnapbenchError(f"{source}: {err}") from None
            choices.append(BlockChoice(e["block"], keep, copies, variant))
        got = [c.block for c in choices]
        if got != names:
            dupes = [n for n, c in Counter(got).items() if c > 1]
            missing = [n for n in names if n not in got]
            extra = [n for n in got if n not in names]
            why = (f"duplicated {dupes}" if dupes else f"missing {missing}" if missing
                   else f"no such block(s) {extra}" if extra else "out of execution order")
            raise bad(f"stages.{st}", f"{why}; list every block of the stage in order: {names}")
        out[st] = tuple(choices)
    return out


def full_spec(config: Mapping[str, Any], name: str, description: str = "") -> ArchSpec:
    """The spec that keeps every block of a config: the UNet exactly as diffusers builds it."""
    config = dict(config)
    stages: dict[str, list[BlockChoice]] = {}
    for slot in removable_slots(layout_from_config(config)):
        stages.setdefault(slot.stage, []).append(BlockChoice(slot.name))
    return ArchSpec(name, config, {k: tuple(v) for k, v in stages.items()}, description)


def load_spec(path: str | os.PathLike) -> ArchSpec:
    p = Path(path)
    data = read_user_json(p, "arch spec file")
    return ArchSpec.from_dict(data, source=str(p))


def save_spec(spec: ArchSpec, path: str | os.PathLike) -> Path:
    """Write atomically: a reader never sees a half-written spec."""
    return atomic_write_text(path, json.dumps(spec.to_dict(), indent=2) + "\n")
