"""A diffusion transformer's slots, torch-free: what an `ArchSpec` of a DiT (`dit/source.py: to_arch_spec`)
needs to check and read its per-block choices without building anything.

Stages are groups of consecutive transformer blocks: the stack is split into (up to) four near-equal runs,
DiT-1 .. DiT-4, between an Embed stage (patch, timestep and caption embeddings) and a Final stage (final
norm and projection). Block `TB[DiT-2, 7]` is `transformer_blocks.6`: numbered by depth through the stack.
"""

from __future__ import annotations

from collections.abc import Mapping

from snapbench.errors import SnapbenchError
from snapbench.specs.layout import Slot

MAX_STAGES = 4
STAGES: tuple[str, ...] = ("Embed", *(f"DiT-{i + 1}" for i in range(MAX_STAGES)), "Final")
DIT_CLASSES = ("SD3Transformer2DModel", "PixArtTransformer2DModel", "SanaTransformer2DModel")


def is_dit_config(config: Mapping[str, object]) -> bool:
    return config.get("_class_name") in DIT_CLASSES


def block_stages(num_layers: int) -> list[str]:
    """The stage of each transformer block: near-equal consecutive groups, the larger ones first."""
    groups = min(MAX_STAGES, num_layers)
    size, extra = divmod(num_layers, groups) if groups else (0, 0)
    out: list[str] = []
    for g in range(groups):
        out += [f"DiT-{g + 1}"] * (size + (g < extra))
    return out


def aux_slot(name: str, stage: str, path: str) -> Slot:
    return Slot("aux", stage, name, path)


def block_slot(index: int, stage: str) -> Slot:
    """transformer_blocks.<index> as 'TB[<stage>, <index + 1>]': numbered by depth through the stack."""
    return Slot("TB", stage, f"TB{index + 1}", f"transformer_blocks.{index}")


def block_slots(num_layers: int) -> list[Slot]:
    """The elastic blocks of a DiT with `num_layers` transformer blocks, in execution order."""
    return [block_slot(i, st) for i, st in enumerate(block_stages(num_layers))]


def dit_layout(config: Mapping[str, object]) -> tuple[Slot, ...]:
    """Every slot of a DiT config in execution order (auxiliary blocks included). An ArchSpec's DiT config
    always states num_layers (`dit/source.py: to_arch_spec` writes it)."""
    n = config.get("num_layers")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SnapbenchError(f"a DiT base_config needs num_layers, a whole number >= 1; got {n!r}")
    embed = [aux_slot(name, "Embed", name) for name in ("patch_embed", "time_embed", "caption_embed")]
    return (*embed, *block_slots(n), aux_slot("final_layer", "Final", "norm_out, proj_out"))
