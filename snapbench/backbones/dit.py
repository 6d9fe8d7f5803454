"""Diffusion transformers (diffusers `SD3Transformer2DModel`, `PixArtTransformer2DModel`,
`SanaTransformer2DModel`) as a `Backbone`: the blocks, stages and signatures of `snapbench/dit/` behind the
seam. Stages are Embed, DiT-1 ... DiT-4 (the stack in near-equal runs of consecutive blocks) and Final;
transformer blocks are kind "TB", auxiliary blocks PatchEmbed, TimeEmbed, CaptionEmbed and FinalLayer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from snapbench.backbones.base import Backbone, ElasticModel
from snapbench.blocks.cut import CutBlock
from snapbench.blocks.signature import Shape, Signature
from snapbench.dit.cut import STAGES, cut_units
from snapbench.dit.cut import example_inputs as dit_inputs
from snapbench.dit.elastic import ElasticDiT, load_extra_weights, save_dit
from snapbench.dit.family import FAMILIES
from snapbench.dit.source import SPEC_FILE, build_dit, dit_spec, is_dit_ref, resolve_dit
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.model.units import BlockUnit
from snapbench.settings import InputShapes
from snapbench.specs.arch_spec import ArchSpec
from snapbench.specs.dit_layout import dit_layout
from snapbench.specs.layout import Slot


def _dit(model: ElasticModel) -> ElasticDiT:
    """The seam hands over any backbone's model; this backbone's methods need an elastic DiT."""
    if not isinstance(model, ElasticDiT):
        raise SnapbenchError(f"a DiT backbone works on an elastic DiT, not a {type(model).__name__}")
    return model


class DitBackbone(Backbone):
    name = "dit"
    stages = STAGES
    spec_file = SPEC_FILE

    def accepts(self, config: Mapping[str, object]) -> bool:
        return config.get("_class_name") in FAMILIES

    def claims(self, ref: str) -> bool:
        return is_dit_ref(ref)  # a DiT preset, DiT spec, transformer folder or saved elastic DiT

    def resolve(self, ref: str, *, variant: str | None = None) -> ModelSource:
        return resolve_dit(ref, variant=variant)

    def layout(self, spec: ArchSpec) -> tuple[Slot, ...]:
        return dit_layout(spec.base_config)

    def build(self, source: ModelSource, *, device: str | torch.device = "cpu", seed: int = 0) -> ElasticDiT:
        model = ElasticDiT(build_dit(source, device=device, seed=seed), source.spec)
        load_extra_weights(model, source)
        return model

    def reshape(self, model: ElasticModel, spec: ArchSpec) -> ElasticDiT:
        if not isinstance(model, ElasticDiT):
            raise SnapbenchError(f"{spec.name}: a DiT spec reshapes an elastic DiT, not a {type(model).__name__}")
        return model.with_spec(spec)

    def save(self, model: ElasticModel, folder: Path) -> None:
        save_dit(_dit(model), folder)

    def example_inputs(self, model: ElasticModel, shapes: InputShapes, *, device: str | torch.device = "meta",
                       dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        return tuple(dit_inputs(dit_spec(_dit(model).spec), shapes, device=device, dtype=dtype or torch.float32).values())

    def signature(self, unit: BlockUnit, inputs: tuple[tuple[str, Shape], ...], output: Shape, *,
                  precision: str = "fp16", attention: str = "original") -> Signature:
        raise SnapbenchError("a DiT block's signature comes from cutting it (DitBackbone.cut): it needs the "
                             "model's config")

    def cut(self, model: ElasticModel, shapes: InputShapes, *, precision: str = "fp16",
            attention: str = "original") -> list[CutBlock]:
        dit = _dit(model)
        return cut_units(dit.units, dit_spec(dit.spec), shapes, dit.config, precision=precision,
                         attention=attention)
