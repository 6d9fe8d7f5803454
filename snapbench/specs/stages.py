"""The paper's stage names and how diffusers' blocks map onto them.

SnapFusion names stages by resolution relative to the image: Down-1/Up-3 at H/8 (the latent's own
size), Down-2/Up-2 at H/16, Down-3/Up-1 at H/32 and Mid at H/64 and below. Mapping by resolution level
rather than by diffusers index keeps the names right for UNets with fewer levels (BK-SDM-Tiny has no
H/64 level, so its Mid stage holds only what diffusers calls the mid block, if any).
"""

from __future__ import annotations

STAGES: tuple[str, ...] = ("Down-1", "Down-2", "Down-3", "Mid", "Up-1", "Up-2", "Up-3")

# Level 0 is the latent's resolution (H/8 of the image); level 3 and deeper are the Mid stage.
_MID_LEVEL = 3


def down_stage(level: int) -> str:
    return "Mid" if level >= _MID_LEVEL else f"Down-{level + 1}"


def up_stage(level: int) -> str:
    return "Mid" if level >= _MID_LEVEL else f"Up-{_MID_LEVEL - level}"


def stage_slug(stage: str) -> str:
    """File-safe spelling: 'Down-1' -> 'down1', 'Mid' -> 'mid'."""
    return stage.lower().replace("-", "")
