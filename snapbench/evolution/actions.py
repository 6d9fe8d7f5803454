"""Evolution actions (SnapFusion Algorithm 1): A- removes and A+ adds one CA or RB block of a stage.

- A- on a block with copies removes its last copy; otherwise it removes the block itself (identity, or
  its shortcut projection where a ResNet changes channels).
- A+ on a removed block restores it; on a kept block it adds one more weight copy, run right after it
  (the paper's "adding copies an existing block").
- S:<move> swaps a kept block for a cheaper variant (moves.py: `evolve --moves separable,mqa,...`); the
  remove phase weighs swaps against removals by the same value, quality lost per ms saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from snapbench.backbones import backbone_for
from snapbench.errors import SnapbenchError
from snapbench.evolution.moves import COPY, DEFAULT_MOVES, REMOVE, SWAPS
from snapbench.specs.arch_spec import MAX_COPIES, ArchSpec, BlockChoice
from snapbench.specs.layout import Slot


@dataclass(frozen=True, order=True)
class Action:
    sign: Literal["-", "+", "S"]
    stage: str
    block: str  # stage-local name: "CA2"
    move: str = ""  # a swap's move name (moves.SWAPS); "" for A- / A+

    @property
    def name(self) -> str:
        return f"S:{self.move}" if self.sign == "S" else f"A{self.sign}"

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
        if self.sign == "S":
            swap = SWAPS[self.move]
            why = swap.blocked(spec, _slot(spec, self.stage, self.block))
            if why:
                raise SnapbenchError(f"{self.label}: cannot apply ({why})")
            new = swap.apply(c, spec)
        elif self.sign == "-":
            if c.copies:
                new = replace(c, copies=c.copies - 1)
            elif c.keep:
                new = replace(c, keep=False, copies=0)
            else:
                raise SnapbenchError(f"{self.label}: the block is already removed")
        else:
            if not c.keep:
                new = replace(c, keep=True, copies=0)
            elif c.copies < MAX_COPIES:
                new = replace(c, copies=c.copies + 1)
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


def _slot(spec: ArchSpec, stage: str, block: str) -> Slot:
    for s in _slots(spec):
        if (s.stage, s.name) == (stage, block):
            return s
    raise SnapbenchError(f"no block {block} in stage {stage} of {spec.name}")


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


def swap_actions(spec: ArchSpec, moves: Sequence[str]) -> list[Action]:
    """Every swap among `moves` that applies to a block of `spec` (kept, not yet that variant)."""
    out = []
    for s in _slots(spec):
        for name in moves:
            swap = SWAPS.get(name)
            if swap is not None and swap.blocked(spec, s) is None:
                out.append(Action("S", s.stage, s.name, name))
    return out


def shrinking_actions(spec: ArchSpec, moves: Sequence[str] = DEFAULT_MOVES) -> list[Action]:
    """The remove phase's candidates under `moves`: removals (if `remove`) and swaps."""
    return (removal_actions(spec) if REMOVE in moves else []) + swap_actions(spec, moves)


def growing_actions(spec: ArchSpec, moves: Sequence[str] = DEFAULT_MOVES) -> list[Action]:
    """The add phase's candidates: every A+ with `copy` in moves, else restoring removed blocks only."""
    return [a for a in addition_actions(spec) if COPY in moves or not _choice(spec, a.stage, a.block).keep]


def parse_action(text: str) -> Action:
    """'A- CA[Up-1, 2]' or 'S:mqa CA[Up-1, 2]' -> Action (used when a saved trajectory is read back)."""
    import re

    m = re.fullmatch(r"(A[+-]|S:[a-z-]+)\s+(CA|RB|TB)\[([A-Za-z0-9-]+),\s*(\d+)\]", text.strip())
    if not m or (m.group(1).startswith("S:") and m.group(1)[2:] not in SWAPS):
        raise SnapbenchError(f"not an action: {text!r} (expected e.g. 'A- CA[Up-1, 2]' or 'S:mqa CA[Up-1, 2]')")
    block = f"{m.group(2)}{m.group(4)}"
    if m.group(1).startswith("S:"):
        return Action("S", m.group(3), block, m.group(1)[2:])
    sign: Literal["-", "+"] = "-" if m.group(1) == "A-" else "+"  # the pattern allows only A- and A+
    return Action(sign, m.group(3), block)
