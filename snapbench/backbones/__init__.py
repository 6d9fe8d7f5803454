"""Backbone families and the registry that resolves a model to its family (see `base.py`).

    from snapbench.backbones import backbone_for
    source = resolve_model("sd15")       # what --model names, read by the family that claims it
    bb = backbone_for(source)            # a ModelSource, an ArchSpec or a base config
    blocks = bb.cut_source(source, settings)

`BACKBONES` is tried in order and the first family whose `accepts(config)` is true wins, so a more
specific family (say SDXL-class UNets, also `UNet2DConditionModel`s) goes before a more general one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from snapbench.backbones.base import Backbone, ElasticModel
from snapbench.backbones.dit import DitBackbone
from snapbench.backbones.sdxl_unet import SDXLUNetBackbone
from snapbench.backbones.unet import UNetBackbone
from snapbench.blocks.inspection import Inspection
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource, resolve_unet
from snapbench.settings import InputShapes
from snapbench.specs.arch_spec import ArchSpec

# Most specific first. A new family: implement `Backbone` in its own module and add an instance here.
BACKBONES: list[Backbone] = [SDXLUNetBackbone(), DitBackbone(), UNetBackbone()]


def backbone_for(model: ModelSource | ArchSpec | Mapping[str, object]) -> Backbone:
    """The family of `model` (a resolved source, its spec, or a base config); one line if none fits."""
    spec = model.spec if isinstance(model, ModelSource) else model
    config = spec.base_config if isinstance(spec, ArchSpec) else spec
    for backbone in BACKBONES:
        if backbone.accepts(config):
            return backbone
    name = spec.name if isinstance(spec, ArchSpec) else "the model"
    raise SnapbenchError(f"{name}: no backbone family takes a {config.get('_class_name', 'config')!r} "
                         f"(known: {', '.join(b.name for b in BACKBONES)}; see docs/architecture.md, "
                         "'Adding a backbone')")


def resolve_model(ref: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None,
                  variant: str | None = None, subfolder: str | None = None, revision: str | None = None) -> ModelSource:
    """What `--model` (and `--weights`) name: a family's own reference (a DiT preset, spec or folder) read by
    the family that `claims` it, else a UNet preset, arch spec, folder or hub id (`model/loading.py:
    resolve_unet`). `--weights`, `--subfolder` and `--revision` are the UNet's options."""
    if weights is None and subfolder is None and revision is None:
        for backbone in BACKBONES:
            if backbone.claims(str(ref)):
                return backbone.resolve(str(ref), variant=variant)
    return resolve_unet(ref, weights=weights, variant=variant, subfolder=subfolder, revision=revision)


def backbone_named(name: str) -> Backbone:
    for backbone in BACKBONES:
        if backbone.name == name:
            return backbone
    raise SnapbenchError(f"no backbone family {name!r} (known: {', '.join(b.name for b in BACKBONES)})")


def inspect_model(source: ModelSource, *, shapes: InputShapes = InputShapes(), attention: str = "original",
                  precision: str = "fp16") -> Inspection:
    """What `snapbench inspect` shows: `source` cut into blocks by its backbone on the meta device (no
    weights are loaded; counts do not need them), grouped by the backbone's stages. With the settings a
    profile uses (shapes, attention, precision) the blocks are the ones it prices (`cut_source`), so a
    report hands them on instead of cutting the model again."""
    backbone = backbone_for(source)
    blocks = backbone.cut(backbone.build(source, device="meta"), shapes, precision=precision, attention=attention)
    return Inspection(source, shapes, blocks, backbone.stages)


__all__ = ["BACKBONES", "Backbone", "DitBackbone", "ElasticModel", "SDXLUNetBackbone", "UNetBackbone", "backbone_for",
           "backbone_named", "inspect_model", "resolve_model"]
