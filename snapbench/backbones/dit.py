"""Diffusion transformers (diffusers `SD3Transformer2DModel`, `PixArtTransformer2DModel`,
`SanaTransformer2DModel`) as a `Backbone`: the blocks, stages and signatures of `snapbench/dit/` behind the
seam. Stages are Embed, DiT-1 ... DiT-4 (the stack in near-equal runs of consecutive blocks) and Final;
transformer blocks are kind "TB", auxiliary blocks PatchEmbed, TimeEmbed, CaptionEmbed and FinalLayer.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import torch
from torch import nn

from snapbench.backbones.base import Backbone
from snapbench.blocks.cut import CutBlock
from snapbench.blocks.signature import Shape, Signature
from snapbench.dit.cut import STAGES, cut_units, example_inputs as dit_inputs, make_units
from snapbench.dit.family import FAMILIES
from snapbench.dit.source import build_dit, dit_spec
from snapbench.dit.units import DitUnit
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.settings import InputShapes
from snapbench.specs.arch_spec import ArchSpec
from snapbench.specs.layout import Slot


class ElasticDiT(nn.Module):
    """A diffusers DiT run block by block (`dit.cut.run_chain`); disabled transformer blocks pass their
    streams through unchanged (the robust-training and evolution view of a removed block)."""

    def __init__(self, base: nn.Module, spec: ArchSpec) -> None:
        super().__init__()
        self.base, self.spec, self.config = base, spec, base.config
        self._units = nn.ModuleList(make_units(base, dit_spec(spec).family))
        self.skip_probability = 0.0

    @property
    def units(self) -> list[DitUnit]:
        return list(self._units)

    def unit(self, block_id: str) -> DitUnit:
        for u in self.units:
            if block_id in (u.block_id, u.file_id):
                return u
        raise SnapbenchError(f"{self.spec.name} has no block {block_id!r}")

    def set_skip_probabilities(self, *, ca: float, rb: float) -> None:
        for u in self.units:  # a DiT has transformer blocks only: they take the attention blocks' probability
            u.skip_probability = ca if u.kind == "TB" else 0.0

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                pooled: torch.Tensor | None = None, *, disabled: Collection[str] = (),
                record: list | None = None) -> torch.Tensor:
        env = {"sample": sample, "timestep": timestep, "context": context}
        if pooled is not None:
            env["pooled"] = pooled
        for unit in self.units:
            args = tuple(env[n] for n in unit.input_names)
            skip = unit.kind == "TB" and (unit.block_id in disabled or (
                self.training and unit.skip_probability > 0 and torch.rand(()) < unit.skip_probability))
            out = args[: len(unit.output_names)] if skip else unit(*args)
            outs = out if isinstance(out, tuple) else (out,)
            if record is not None:
                record.append((unit, args, outs))
            env.update(zip(unit.output_names, outs))
        return env["sample"]


class DitBackbone(Backbone):
    name = "dit"
    stages = STAGES

    def accepts(self, config: Mapping[str, Any]) -> bool:
        return config.get("_class_name") in FAMILIES

    def layout(self, spec: ArchSpec) -> tuple[Slot, ...]:
        from snapbench.dit.cut import block_stages
        from snapbench.dit.units import aux_slot, block_slot

        embed = [aux_slot(n, "Embed", n) for n in ("patch_embed", "time_embed", "caption_embed")]
        blocks = [block_slot(i, st) for i, st in enumerate(block_stages(dit_spec(spec).num_layers))]
        return (*embed, *blocks, aux_slot("final_layer", "Final", "norm_out, proj_out"))

    def build(self, source: ModelSource, *, device: str | torch.device = "cpu", seed: int = 0) -> ElasticDiT:
        return ElasticDiT(build_dit(source, device=device, seed=seed), source.spec)

    def reshape(self, model: Any, spec: ArchSpec) -> ElasticDiT:
        raise SnapbenchError("removing or copying DiT blocks (evolution) is not implemented yet")

    def example_inputs(self, model: Any, shapes: InputShapes, *, device: str | torch.device = "meta",
                       dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(dit_inputs(dit_spec(model.spec), shapes, device=device, dtype=dtype or torch.float32).values())

    def signature(self, unit: Any, inputs: tuple[tuple[str, Shape], ...], output: Shape, *,
                  precision: str = "fp16", attention: str = "original") -> Signature:
        raise SnapbenchError("a DiT block's signature comes from cutting it (DitBackbone.cut): it needs the "
                             "model's config")

    def cut(self, model: Any, shapes: InputShapes, *, precision: str = "fp16",
            attention: str = "original") -> list[CutBlock]:
        return cut_units(model.units, dit_spec(model.spec), shapes, model.config, precision=precision,
                         attention=attention)
