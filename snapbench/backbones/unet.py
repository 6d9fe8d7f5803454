"""SD-1.x / 2.x UNets (diffusers `UNet2DConditionModel`): the first `Backbone`, and the worked example of
"Adding a backbone" (docs/architecture.md). Every method delegates to the modules that did the work before
the seam existed, so the UNet's numbers are unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from snapbench.backbones.base import Backbone, ElasticModel
from snapbench.blocks.cut import CutBlock, cut_blocks
from snapbench.blocks.cut import example_inputs as unet_example_inputs
from snapbench.blocks.signature import Shape, Signature, make_signature
from snapbench.errors import SnapbenchError
from snapbench.model.elastic_unet import ElasticUNet
from snapbench.model.loading import ModelSource, build_unet, save_elastic
from snapbench.model.units import BlockUnit
from snapbench.settings import InputShapes
from snapbench.specs.arch_spec import ArchSpec
from snapbench.specs.layout import Slot
from snapbench.specs.stages import STAGES

UNET_CLASS = "UNet2DConditionModel"


def _unet(model: ElasticModel) -> ElasticUNet:
    """The seam hands over any backbone's model; this backbone's methods need an elastic UNet."""
    if not isinstance(model, ElasticUNet):
        raise SnapbenchError(f"a UNet backbone works on an elastic UNet, not a {type(model).__name__}")
    return model


class UNetBackbone(Backbone):
    name = "sd-unet"
    stages = STAGES  # the paper's Down-1 ... Up-3 (specs/stages.py maps diffusers' levels onto them)

    def accepts(self, config: Mapping[str, object]) -> bool:
        # Arch specs written by snapbench may omit _class_name; they are UNets (the only family before).
        return config.get("_class_name", UNET_CLASS) == UNET_CLASS and "down_block_types" in config

    def layout(self, spec: ArchSpec) -> tuple[Slot, ...]:
        return spec.layout  # specs/layout.py: layout_from_config

    def build(self, source: ModelSource, *, device: str | torch.device = "cpu", seed: int = 0) -> ElasticUNet:
        return build_unet(source, device=device, seed=seed)

    def reshape(self, model: ElasticModel, spec: ArchSpec) -> ElasticUNet:
        return _unet(model).with_spec(spec)

    def save(self, model: ElasticModel, folder: Path) -> None:
        save_elastic(_unet(model), folder)

    def example_inputs(self, model: ElasticModel, shapes: InputShapes, *, device: str | torch.device = "meta",
                       dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        return unet_example_inputs(_unet(model), shapes, device=device, dtype=dtype or torch.float32)

    def signature(self, unit: BlockUnit, inputs: tuple[tuple[str, Shape], ...], output: Shape, *,
                  precision: str = "fp16", attention: str = "original") -> Signature:
        return make_signature(unit, inputs, output, precision=precision, attention=attention)

    def cut(self, model: ElasticModel, shapes: InputShapes, *, precision: str = "fp16",
            attention: str = "original") -> list[CutBlock]:
        return cut_blocks(_unet(model), shapes, precision=precision, attention=attention)
