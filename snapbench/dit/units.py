"""DiT blocks as modules with plain tensor inputs and outputs: what is converted, profiled and priced.

Each unit wraps diffusers' own submodules (the same objects, so weights are shared with the model) and
does exactly what the model's forward does between them; `run_chain` runs a DiT unit by unit, and the
tests check that it equals diffusers' forward. A transformer block (kind "TB") is a first-class block:
SD3's joint block takes and returns the image and text streams, PixArt's and Sana's take the text as
context and return the image stream.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

AUX_TITLES = {"patch_embed": "PatchEmbed", "time_embed": "TimeEmbed", "caption_embed": "CaptionEmbed",
              "final_layer": "FinalLayer"}


class DitUnit(nn.Module):
    kind: str = "aux"
    name: str = ""  # aux: a key of AUX_TITLES
    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    module_path: str = ""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage
        self.index: int | None = None  # TB: 0-based depth

    @property
    def block_id(self) -> str:
        return f"TB{self.index + 1}" if self.index is not None else AUX_TITLES[self.name]

    @property
    def file_id(self) -> str:
        return f"tb{self.index + 1:02d}" if self.index is not None else self.name

    @property
    def status(self) -> str:
        return "kept"


class PatchEmbedUnit(DitUnit):
    name, input_names, output_names = "patch_embed", ("sample",), ("hidden",)

    def __init__(self, stage: str, patch: nn.Module, path: str) -> None:
        super().__init__(stage)
        self.patch, self.module_path = patch, path

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.patch(sample)


class TextTimeEmbedUnit(DitUnit):
    """SD3: timestep + pooled text -> the conditioning vector every block and the final layer read."""

    name, input_names, output_names, module_path = "time_embed", ("timestep", "pooled"), ("temb",), "time_text_embed"

    def __init__(self, stage: str, embed: nn.Module) -> None:
        super().__init__(stage)
        self.embed = embed

    def forward(self, timestep: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        return self.embed(timestep, pooled)


class AdaSingleUnit(DitUnit):
    """PixArt / Sana (adaLN-single): timestep -> the blocks' 6 x D modulation and the final layer's D."""

    name, input_names, output_names = "time_embed", ("timestep",), ("temb", "embedded")

    def __init__(self, stage: str, embed: nn.Module, path: str) -> None:
        super().__init__(stage)
        self.embed, self.module_path = embed, path

    def forward(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(timestep, None, batch_size=timestep.shape[0], hidden_dtype=timestep.dtype)


class CaptionEmbedUnit(DitUnit):
    name, input_names, output_names = "caption_embed", ("context",), ("context",)

    def __init__(self, stage: str, modules: Sequence[nn.Module], path: str) -> None:
        super().__init__(stage)
        self.steps, self.module_path = nn.ModuleList(modules), path

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        for m in self.steps:
            context = m(context)
        return context


class JointBlockUnit(DitUnit):
    """SD3's MMDiT block: one attention over the joint (text + image) sequence, then per-stream MLPs. The
    last block updates only the image stream (context_pre_only)."""

    kind = "TB"

    def __init__(self, stage: str, index: int, block: nn.Module) -> None:
        super().__init__(stage)
        self.index, self.block = index, block
        self.module_path = f"transformer_blocks.{index}"
        self.input_names = ("hidden", "context", "temb")
        self.output_names = ("hidden",) if block.context_pre_only else ("hidden", "context")

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, temb: torch.Tensor) -> Any:
        context_out, hidden_out = self.block(hidden_states=hidden, encoder_hidden_states=context, temb=temb)
        return hidden_out if context_out is None else (hidden_out, context_out)


class CrossBlockUnit(DitUnit):
    """PixArt's and Sana's block: self-attention over the image tokens, cross-attention to the text, MLP
    (Sana: linear self-attention and a convolutional Mix-FFN over the token grid)."""

    kind = "TB"
    input_names, output_names = ("hidden", "context", "temb"), ("hidden",)

    def __init__(self, stage: str, index: int, block: nn.Module, grid: tuple[int, int] | None = None) -> None:
        super().__init__(stage)
        self.index, self.block, self.grid = index, block, grid
        self.module_path = f"transformer_blocks.{index}"

    def forward(self, hidden: torch.Tensor, context: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        if self.grid is not None:  # Sana: the Mix-FFN needs the token grid
            return self.block(hidden, None, context, None, temb, *self.grid)
        return self.block(hidden, encoder_hidden_states=context, timestep=temb)


def unpatchify(hidden: torch.Tensor, grid: tuple[int, int], patch: int) -> torch.Tensor:
    """[B, h*w, p*p*C] tokens -> [B, C, h*p, w*p], as diffusers' DiTs do it."""
    b, (h, w) = hidden.shape[0], grid
    x = hidden.reshape(b, h, w, patch, patch, -1)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(b, -1, h * patch, w * patch)


class FinalLayerUnit(DitUnit):
    """Final norm (modulated by the conditioning), projection to patches, and back to the latent grid."""

    name, output_names = "final_layer", ("sample",)

    def __init__(self, stage: str, family: str, model: nn.Module, grid: tuple[int, int], patch: int) -> None:
        super().__init__(stage)
        # SD3 modulates with the conditioning vector; adaLN-single models with the embedded timestep
        self.input_names = ("hidden", "temb") if family == "mmdit" else ("hidden", "embedded")
        self.family, self.grid, self.patch = family, grid, patch
        self.norm_out, self.proj_out = model.norm_out, model.proj_out
        self.module_path = "norm_out, proj_out"
        if family != "mmdit":
            self.scale_shift_table = model.scale_shift_table  # the same Parameter as the model's
            self.module_path = "scale_shift_table, norm_out, proj_out"

    def forward(self, hidden: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # temb: SD3's conditioning vector, or PixArt's / Sana's embedded timestep
        if self.family == "mmdit":
            hidden = self.norm_out(hidden, temb)
        elif self.family == "sana":
            hidden = self.norm_out(hidden, temb, self.scale_shift_table)
        else:  # PixArt
            shift, scale = (self.scale_shift_table[None] + temb[:, None]).chunk(2, dim=1)
            hidden = self.norm_out(hidden) * (1 + scale) + shift
        return unpatchify(self.proj_out(hidden), self.grid, self.patch)
