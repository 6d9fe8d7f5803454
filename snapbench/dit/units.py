"""DiT blocks as modules with plain tensor inputs and outputs: what is converted, profiled and priced.

Each unit wraps diffusers' own submodules (the same objects, so weights are shared with the model) and
does exactly what the model's forward does between them; `run_chain` runs a DiT unit by unit, and the
tests check that it equals diffusers' forward. A transformer block (kind "TB") is a first-class block:
SD3's joint block takes and returns the image and text streams, PixArt's and Sana's take the text as
context and return the image stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from snapbench.model.units import BlockUnit
from snapbench.specs.dit_layout import aux_slot, block_slot


class DitUnit(BlockUnit):
    """A DiT block: a `BlockUnit` (slot, block id, file id, status) with named outputs as well as inputs."""

    output_names: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return self.slot.kind

    @property
    def name(self) -> str:
        return self.slot.name

    @property
    def stage(self) -> str:
        return self.slot.stage

    @property
    def module_path(self) -> str:
        return self.slot.module_path

    @property
    def index(self) -> int | None:
        return self.slot.index - 1 if self.slot.kind == "TB" and self.slot.index is not None else None


def square_grid(tokens: int) -> tuple[int, int]:
    """The (h, w) patch grid of a square latent's `tokens` image tokens."""
    side = math.isqrt(tokens)
    return side, side


class PatchEmbedUnit(DitUnit):
    input_names, output_names = ("sample",), ("hidden",)

    def __init__(self, patch: nn.Module, path: str) -> None:
        super().__init__(aux_slot("patch_embed", "Embed", path))
        self.patch = patch

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.patch(sample)


class TextTimeEmbedUnit(DitUnit):
    """SD3: timestep + pooled text -> the conditioning vector every block and the final layer read."""

    input_names, output_names = ("timestep", "pooled"), ("temb",)

    def __init__(self, embed: nn.Module) -> None:
        super().__init__(aux_slot("time_embed", "Embed", "time_text_embed"))
        self.embed = embed

    def forward(self, timestep: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.embed(timestep, pooled)


class AdaSingleUnit(DitUnit):
    """PixArt / Sana (adaLN-single): timestep -> the blocks' 6 x D modulation and the final layer's D."""

    input_names, output_names = ("timestep",), ("temb", "embedded")

    def __init__(self, embed: nn.Module, path: str) -> None:
        super().__init__(aux_slot("time_embed", "Embed", path))
        self.embed = embed

    def forward(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(timestep, None, batch_size=timestep.shape[0], hidden_dtype=timestep.dtype)


class CaptionEmbedUnit(DitUnit):
    input_names, output_names = ("context",), ("context",)

    def __init__(self, modules: Sequence[nn.Module], path: str) -> None:
        super().__init__(aux_slot("caption_embed", "Embed", path))
        self.steps = nn.ModuleList(modules)

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        for m in self.steps:
            context = m(context)
        return context


class JointBlockUnit(DitUnit):
    """SD3's MMDiT block: one attention over the joint (text + image) sequence, then per-stream MLPs. The
    last block updates only the image stream (context_pre_only)."""

    def __init__(self, stage: str, index: int, block: nn.Module) -> None:
        super().__init__(block_slot(index, stage))
        self.block = block
        self.input_names = ("hidden", "context", "temb")
        self.output_names = ("hidden",) if block.context_pre_only else ("hidden", "context")

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, temb: torch.Tensor
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        context_out, hidden_out = self.block(hidden_states=hidden, encoder_hidden_states=context, temb=temb)
        return hidden_out if context_out is None else (hidden_out, context_out)


class CrossBlockUnit(DitUnit):
    """PixArt's and Sana's block: self-attention over the image tokens, cross-attention to the text, MLP
    (Sana: linear self-attention and a convolutional Mix-FFN over the token grid)."""

    input_names, output_names = ("hidden", "context", "temb"), ("hidden",)

    def __init__(self, stage: str, index: int, block: nn.Module, needs_grid: bool = False) -> None:
        super().__init__(block_slot(index, stage))
        self.block, self.needs_grid = block, needs_grid

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if self.needs_grid:  # Sana: the Mix-FFN convolves over the token grid
            return self.block(hidden, None, context, None, temb, *square_grid(hidden.shape[1]))
        return self.block(hidden, encoder_hidden_states=context, timestep=temb)


def unpatchify(hidden: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, h*w, p*p*C] tokens of a square grid -> [B, C, h*p, w*p], as diffusers' DiTs do it."""
    b, (h, w) = hidden.shape[0], square_grid(hidden.shape[1])
    x = hidden.reshape(b, h, w, patch, patch, -1)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, -1, h * patch, w * patch)


class FinalLayerUnit(DitUnit):
    """Final norm (modulated by the conditioning), projection to patches, and back to the latent grid."""

    output_names = ("sample",)

    def __init__(self, family: str, model: nn.Module, patch: int) -> None:
        path = "norm_out, proj_out" if family == "mmdit" else "scale_shift_table, norm_out, proj_out"
        super().__init__(aux_slot("final_layer", "Final", path))
        # SD3 modulates with the conditioning vector; adaLN-single models with the embedded timestep
        self.input_names = ("hidden", "temb") if family == "mmdit" else ("hidden", "embedded")
        self.family, self.patch = family, patch
        self.norm_out, self.proj_out = model.norm_out, model.proj_out
        if family != "mmdit":
            self.scale_shift_table = model.scale_shift_table  # the same Parameter as the model's

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # temb: SD3's conditioning vector, or PixArt's / Sana's embedded timestep
        if self.family == "mmdit":
            hidden = self.norm_out(hidden, temb)
        elif self.family == "sana":
            hidden = self.norm_out(hidden, temb, self.scale_shift_table)
        else:  # PixArt
            shift, scale = (self.scale_shift_table[None] + temb[:, None]).chunk(2, dim=1)
            hidden = self.norm_out(hidden) * (1 + scale) + shift
        return unpatchify(self.proj_out(hidden), self.patch)
