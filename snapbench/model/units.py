"""Block units: every RB, CA and auxiliary block of the UNet behind one call convention.

A unit is what gets converted to one Core ML package and profiled on its own, so each takes plain
tensors (named in `input_names`) and returns one tensor. Up-stage ResNets take their skip as a separate
input and concatenate it themselves, so that units add up exactly to the whole UNet.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from snapbench.specs.layout import Slot


def names_in_root(root: nn.Module) -> Callable[[nn.Module], dict[str, str]]:
    """For a unit of `root` (holding `root`'s own tensors, as a cut's units do): {the unit's parameter or buffer
    name: its name in `root`}, the name a checkpoint or a mixed-bit recipe uses. `root` is read once."""
    full = {id(t): n for n, t in root.state_dict(keep_vars=True).items()}
    return lambda unit: {k: full[id(t)] for k, t in unit.state_dict(keep_vars=True).items()}


class BlockUnit(nn.Module):
    input_names: tuple[str, ...] = ("hidden",)

    def __init__(self, slot: Slot, instance: int = 0, removed: bool = False) -> None:
        super().__init__()
        self.slot = slot
        self.instance = instance  # 0: the original block; k >= 1: its k-th copy
        self.removed = removed
        self.skip_probability = 0.0  # robust training: chance of running as removed

    @property
    def block_id(self) -> str:
        return self.slot.block_id if self.instance == 0 else f"{self.slot.block_id} (copy {self.instance})"

    @property
    def file_id(self) -> str:
        return self.slot.file_id if self.instance == 0 else f"{self.slot.file_id}_copy{self.instance}"

    @property
    def status(self) -> str:
        return "removed" if self.removed else ("copy" if self.instance else "kept")

    @property
    def has_compute(self) -> bool:
        """False when the block is gone entirely (removed and nothing left to run)."""
        return not self.removed


class TimeEmbeddingUnit(BlockUnit):
    input_names = ("timestep",)

    def __init__(self, slot: Slot, time_proj: nn.Module, time_embedding: nn.Module) -> None:
        super().__init__(slot)
        self.time_proj = time_proj
        self.time_embedding = time_embedding

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        t_emb = self.time_proj(timestep)
        # time_proj computes in fp32; the embedding MLP runs in the model's dtype (as diffusers does)
        t_emb = t_emb.to(dtype=self.time_embedding.linear_1.weight.dtype)
        return self.time_embedding(t_emb)


class TextTimeEmbeddingUnit(BlockUnit):
    """SDXL's added conditioning (diffusers' `addition_embed_type="text_time"`): the pooled text embedding
    and the size / crop ids, embedded and added to the time embedding. Its own auxiliary block, so that
    the blocks still add up to the whole UNet."""

    input_names = ("temb", "text_embeds", "time_ids")

    def __init__(self, slot: Slot, add_time_proj: nn.Module, add_embedding: nn.Module) -> None:
        super().__init__(slot)
        self.add_time_proj = add_time_proj
        self.add_embedding = add_embedding

    def forward(self, temb: torch.Tensor, text_embeds: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
        # as diffusers' UNet2DConditionModel.get_aug_embed: each id gets a sinusoidal embedding, then
        # [B, text width + ids x time width] goes through one MLP
        time_embeds = self.add_time_proj(time_ids.flatten()).reshape((text_embeds.shape[0], -1))
        add_embeds = torch.cat([text_embeds, time_embeds], dim=-1).to(temb.dtype)
        return temb + self.add_embedding(add_embeds)


class ConvInUnit(BlockUnit):
    input_names = ("sample",)

    def __init__(self, slot: Slot, conv_in: nn.Module) -> None:
        super().__init__(slot)
        self.conv_in = conv_in

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        return self.conv_in(sample)


class SamplerUnit(BlockUnit):
    """A downsampler or upsampler (diffusers Downsample2D / Upsample2D)."""

    def __init__(self, slot: Slot, sampler: nn.Module) -> None:
        super().__init__(slot)
        self.sampler = sampler

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.sampler(hidden)


class ConvOutUnit(BlockUnit):
    def __init__(self, slot: Slot, norm: nn.Module, act: nn.Module, conv: nn.Module) -> None:
        super().__init__(slot)
        self.norm, self.act, self.conv = norm, act, conv

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.conv(self.act(self.norm(hidden)))


class ResnetUnit(BlockUnit):
    """A ResNet block; removed (or skipped in robust training) it is the identity, or only its shortcut
    projection where it changes the channel count (so the skip it consumes still flows)."""

    def __init__(self, slot: Slot, resnet: nn.Module, instance: int = 0, removed: bool = False) -> None:
        super().__init__(slot, instance, removed)
        self.resnet = resnet
        self.takes_skip = slot.takes_skip and instance == 0
        self.input_names = ("hidden", "skip", "temb") if self.takes_skip else ("hidden", "temb")

    @property
    def has_compute(self) -> bool:
        return not self.removed or self.resnet.conv_shortcut is not None

    def forward(self, hidden: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return self.run(hidden, *rest, active=not self.removed)

    def run(self, hidden: torch.Tensor, *rest: torch.Tensor, active: bool, module: nn.Module | None = None
            ) -> torch.Tensor:
        """`module`: run it in the block's place (robust training's sampled variant)."""
        if self.takes_skip:
            skip, temb = rest
            hidden = torch.cat([hidden, skip], dim=1)
        else:
            (temb,) = rest
        if active:
            return (module or self.resnet)(hidden, temb)
        if self.resnet.conv_shortcut is not None:
            return self.resnet.conv_shortcut(hidden)
        return hidden


class AttentionUnit(BlockUnit):
    """A cross-attention block (diffusers Transformer2DModel); removed, it is the identity."""

    input_names = ("hidden", "context")

    def __init__(self, slot: Slot, transformer: nn.Module, instance: int = 0, removed: bool = False) -> None:
        super().__init__(slot, instance, removed)
        self.transformer = transformer

    def forward(self, hidden: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.run(hidden, context, active=not self.removed)

    def run(self, hidden: torch.Tensor, context: torch.Tensor, *, active: bool, module: nn.Module | None = None
            ) -> torch.Tensor:
        """`module`: run it in the block's place (robust training's sampled variant)."""
        if not active:
            return hidden
        return (module or self.transformer)(hidden, encoder_hidden_states=context, return_dict=False)[0]


def copy_resnet(resnet: nn.Module) -> nn.Module:
    """A weight copy of a ResNet block that fits after its original (input = the original's output).

    Where the original changes channels (C_in -> C_out, e.g. an up-stage block fed cat(hidden, skip)),
    the copy is a C_out -> C_out block initialised from the original where shapes allow: norm1 and conv1
    take the first min(C_in, C_out) input channels (the hidden part of a concatenation comes first),
    the rest start at identity-friendly values (norm scale 1, conv weights 0); no shortcut is needed.
    """
    if resnet.conv_shortcut is None:
        return copy.deepcopy(resnet)
    from diffusers.models.resnet import ResnetBlock2D

    from snapbench.model.variants import separable_ratio, separable_resnet

    c_out = resnet.conv2.out_channels
    new = ResnetBlock2D(
        in_channels=c_out,
        out_channels=c_out,
        temb_channels=resnet.time_emb_proj.in_features if resnet.time_emb_proj is not None else None,
        eps=resnet.norm1.eps,
        groups=resnet.norm1.num_groups,
        groups_out=resnet.norm2.num_groups,
        dropout=resnet.dropout.p,
        time_embedding_norm=resnet.time_embedding_norm,
        output_scale_factor=resnet.output_scale_factor,
        skip_time_act=resnet.skip_time_act,
    ).to(device=resnet.norm1.weight.device, dtype=resnet.norm1.weight.dtype)  # conv1 may be a separable stack
    old = resnet.state_dict()
    with torch.no_grad():
        for name, tensor in new.state_dict().items():
            src = old.get(name)
            if src is None:
                continue
            if src.shape == tensor.shape:
                tensor.copy_(src)
            elif name in ("norm1.weight", "norm1.bias"):
                k = min(src.shape[0], tensor.shape[0])
                tensor.fill_(1.0 if name.endswith("weight") else 0.0)
                tensor[:k] = src[:k]
            elif name == "conv1.weight":
                k = min(src.shape[1], tensor.shape[1])
                tensor.zero_()
                tensor[:, :k] = src[:, :k]
    ratio = separable_ratio(resnet)  # a copy of a separable variant is separable too (fresh convolutions)
    return separable_resnet(new, ratio) if ratio is not None else new
