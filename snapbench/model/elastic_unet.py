"""The elastic UNet: runs a diffusers UNet2DConditionModel's blocks the way an arch spec says.

Removed blocks run as the identity (or their shortcut projection alone), copies run right after their
original, and skip connections stay consistent because skips are stored per diffusers layer, after the
layer's last block and its copies, exactly where diffusers stores them. With every block kept, the
output equals diffusers' own forward.

Robust training (SnapFusion 3.1.1): in training mode each RB / CA unit runs as removed with its
`skip_probability`; at inference `disabled` gives a deterministic set of block ids to treat as removed.
"""

from __future__ import annotations

import copy
from typing import Collection, Iterator

import torch
from torch import nn

from snapbench.errors import SnapbenchError
from snapbench.model.units import (
    AttentionUnit,
    BlockUnit,
    ConvInUnit,
    ConvOutUnit,
    ResnetUnit,
    SamplerUnit,
    TimeEmbeddingUnit,
    copy_resnet,
)
from snapbench.specs.arch_spec import ArchSpec
from snapbench.specs.layout import Slot


class ElasticUNet(nn.Module):
    def __init__(self, unet: nn.Module, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        self.base = unet  # every base weight lives here (removed blocks' too, so checkpoints round-trip)
        self.copies = nn.ModuleDict()  # weight copies, keyed by file id
        units: list[BlockUnit] = []
        closes_skip: list[bool] = []
        for slot in spec.layout:
            choice = spec.choice(slot)
            made = self._units_for(slot, choice.keep, choice.copies)
            units.extend(made)
            closes_skip.extend([slot.skip_after and i == len(made) - 1 for i in range(len(made))])
        # A plain list, not a ModuleList: the modules are registered once, under base / copies.
        self._units = units
        self._closes_skip = closes_skip
        self.config = unet.config

    # -- construction ---------------------------------------------------------------------------------
    def _units_for(self, slot: Slot, keep: bool, copies: int) -> list[BlockUnit]:
        u = self.base
        if slot.name == "time_embedding":
            return [TimeEmbeddingUnit(slot, u.time_proj, u.time_embedding)]
        if slot.name == "conv_in":
            return [ConvInUnit(slot, u.conv_in)]
        if slot.name in ("downsample", "upsample"):
            return [SamplerUnit(slot, u.get_submodule(slot.module_path))]
        if slot.name == "conv_out":
            return [ConvOutUnit(slot, u.conv_norm_out, u.conv_act, u.conv_out)]
        original = u.get_submodule(slot.module_path)
        made: list[BlockUnit] = []
        if slot.kind == "RB":
            made.append(ResnetUnit(slot, original, removed=not keep))
            for k in range(1, copies + 1):
                dup = copy_resnet(original)
                self.copies[f"{slot.file_id}_copy{k}"] = dup
                made.append(ResnetUnit(slot, dup, instance=k))
        else:
            made.append(AttentionUnit(slot, original, removed=not keep))
            for k in range(1, copies + 1):
                dup = copy.deepcopy(original)
                self.copies[f"{slot.file_id}_copy{k}"] = dup
                made.append(AttentionUnit(slot, dup, instance=k))
        return made

    def with_spec(self, spec: ArchSpec) -> ElasticUNet:
        """The same weights under another spec: base weights shared, existing copies carried over, new
        copies initialised from their originals (what an A+ action does)."""
        new = ElasticUNet(self.base, spec)
        have = self.copies.state_dict()
        want = new.copies.state_dict()
        new.copies.load_state_dict({k: v for k, v in have.items() if k in want and v.shape == want[k].shape},
                                   strict=False)
        new.train(self.training)
        return new

    # -- views ----------------------------------------------------------------------------------------
    @property
    def units(self) -> list[BlockUnit]:
        return list(self._units)

    @property
    def closes_skip(self) -> list[bool]:
        """Per unit: whether its output is pushed as a skip (what running a slice of the units needs)."""
        return list(self._closes_skip)

    def unit(self, block_id: str) -> BlockUnit:
        for u in self._units:
            if block_id in (u.block_id, u.file_id):
                return u
        raise SnapbenchError(f"no block {block_id!r} in {self.spec.name}")

    def elastic_units(self) -> Iterator[BlockUnit]:
        return (u for u in self._units if isinstance(u, (ResnetUnit, AttentionUnit)))

    def set_skip_probabilities(self, *, ca: float, rb: float) -> None:
        """Robust training: the chance that each CA / RB block runs as removed in a training step."""
        for p, name in ((ca, "ca"), (rb, "rb")):
            if not 0.0 <= p < 1.0:
                raise SnapbenchError(f"skip probability for {name} must be in [0, 1), got {p}")
        for u in self.elastic_units():
            u.skip_probability = ca if isinstance(u, AttentionUnit) else rb

    # -- forward --------------------------------------------------------------------------------------
    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        *,
        disabled: Collection[str] = (),
        generator: torch.Generator | None = None,
        record: list | None = None,
    ) -> torch.Tensor:
        """Predict the noise (or v) for `sample` [B, C, H, W] at `timestep` given the text context [B, L, D].

        `disabled`: block ids (paper-style or file-safe) to run as removed, deterministically.
        `record`: if given, gets one (unit, inputs, output) tuple per unit run: how blocks are cut.
        """
        batch = sample.shape[0]
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.tensor([timestep], dtype=torch.float32, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep[None]
        timestep = timestep.to(sample.device).expand(batch)
        self._check_divisible(sample)

        skips: list[torch.Tensor] = []
        temb: torch.Tensor | None = None
        hidden = sample
        for unit, closes in zip(self._units, self._closes_skip):
            if isinstance(unit, TimeEmbeddingUnit):
                args: tuple[torch.Tensor, ...] = (timestep,)
                temb = unit(timestep)
                out = temb
            else:
                if isinstance(unit, ResnetUnit):
                    args = (hidden, skips.pop(), temb) if unit.takes_skip else (hidden, temb)
                    out = unit.run(*args, active=self._active(unit, disabled, generator))
                elif isinstance(unit, AttentionUnit):
                    args = (hidden, encoder_hidden_states)
                    out = unit.run(*args, active=self._active(unit, disabled, generator))
                else:
                    args = (hidden,)
                    out = unit(hidden)
                hidden = out
            if record is not None:
                record.append((unit, args, out))
            if closes:
                skips.append(hidden)
        return hidden

    def _active(self, unit: BlockUnit, disabled: Collection[str], generator: torch.Generator | None) -> bool:
        if unit.removed or unit.block_id in disabled or unit.file_id in disabled:
            return False
        if self.training and unit.skip_probability > 0.0:
            draw = torch.rand((), generator=generator)
            return bool(draw >= unit.skip_probability)
        return True

    def _check_divisible(self, sample: torch.Tensor) -> None:
        factor = 2 ** sum(1 for u in self._units if u.slot.name == "upsample")
        h, w = sample.shape[-2:]
        if h % factor or w % factor:
            raise SnapbenchError(
                f"latent {h}x{w} is not a multiple of {factor} (the UNet halves it {factor.bit_length() - 1} times); "
                "pick a latent size divisible by it"
            )
