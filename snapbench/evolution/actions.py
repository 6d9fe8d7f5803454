"""Evolution actions (SnapFusion Algorithm 1): A- removes and A+ adds one CA or RB block of a stage.

- A- on a block with copies removes its last copy; otherwise it removes the block itself (identity, or
  its shortcut projection where a ResNet changes channels).
- A+ on a removed block restores it; on a kept block it adds one more weight copy, run right after it
  (the paper's "adding copies an existing block").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from snapbench.backbones import backbone_for
from snapbench.errors import SnapbenchError
from snapbench.specs.arch_spec import MAX_COPIES, ArchSpec, BlockChoice
from snapbench.specs.layout import Slot


@dataclass(frozen=True, order=True)
class Action:
    sign: Literal["-", "+"]
    stage: str
    block: str  # stage-local name: "CA2"

    @property
    def name(self) -> str:
        return f"A{self.sign}"

    @property
    def kind(self) -> str:
        return self.block[:2]

    @property
    def block_id(self) -> str:
        return f"{self.kind}[{self.stage}, {int(self.block[2:])}]"

    @property
    def label(self) -> str:
        return f"{self.name} {self.block_id}"

    def apply(self, spec: ArchSpec) -> ArchSpec:
        c = _choice(spec, self.stage, self.block)
        if self.sign == "-":
            if c.copies:
                new = BlockChoice(c.block, True, c.copies - 1)
            elif c.keep:
                new = BlockChoice(c.block, False, 0)
            else:
                raise SnapbenchError(f"{self.label}: the block is already removed")
        else:
            if not c.keep:
                new = BlockChoice(c.block, True, 0)
            elif c.copies < MAX_COPIES:
                new = BlockChoice(c.block, True, c.copies + 1)
            else:
                raise SnapbenchError(f"{self.label}: the block already has {MAX_COPIES} copies")
        return spec.with_choices(spec.name, {(self.stage, self.block): new})


def _choice(spec: ArchSpec, stage: str, block: str) -> BlockChoice:
    for c in spec.stages.get(stage, ()):
        if c.block == block:
            return c
    raise SnapbenchError(f"no block {block} in stage {stage} of {spec.name}")


def _slots(spec: ArchSpec) -> list[Slot]:
    return backbone_for(spec).removable(spec)


def removal_actions(spec: ArchSpec) -> list[Action]:
    """Every A- that changes something (blocks still running, copies included)."""
    out = []
    for s in _slots(spec):
        c = spec.choice(s)
        if c.keep or c.copies:
            out.append(Action("-", s.stage, s.name))
    return out


def addition_actions(spec: ArchSpec) -> list[Action]:
    """Every A+: restore a removed block, or copy a kept one."""
    out = []
    for s in _slots(spec):
        c = spec.choice(s)
        if not c.keep or c.copies < MAX_COPIES:
            out.append(Action("+", s.stage, s.name))
    return out


def parse_action(text: str) -> Action:
    """'A- CA[Up-1, 2]' -> Action (used when a saved trajectory is read back)."""
    import re

    m = re.fullmatch(r"A([+-])\s+(CA|RB|TB)\[([A-Za-z0-9-]+),\s*(\d+)\]", text.strip())
    if not m:
        raise SnapbenchError(f"not an action: {text!r} (expected e.g. 'A- CA[Up-1, 2]')")
    sign: Literal["-", "+"] = "-" if m.group(1) == "-" else "+"  # the pattern allows only these two
    return Action(sign, m.group(3), f"{m.group(2)}{m.group(4)}")
