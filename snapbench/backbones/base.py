"""The backbone seam: what the pipeline asks of a denoising network, whatever its family.

snapbench grew up on SD-1.x/2.x UNets. The stages that take a network apart (cut into blocks, convert,
estimate and profile, the elastic model of evolution, the report's stage grouping) ask a `Backbone` for
the few things that depend on the family, so a new family (SDXL-class UNets, diffusion transformers)
plugs in by implementing this class and registering it in `snapbench/backbones/__init__.py`; see
"Adding a backbone" in docs/architecture.md. `snapbench.backbones.unet.UNetBackbone` is the worked example.

What a backbone hands back is the pipeline's common currency, already shared by every stage:
- an `ArchSpec` (`specs/arch_spec.py`): the base config plus, per stage, the blocks kept, removed, copied;
- its `Slot`s (`specs/layout.py`): every block in execution order, with kind (RB / CA / aux or the
  family's own kinds), stage and module path;
- an elastic model (`ElasticModel` below): runs the network as the spec says;
- `CutBlock`s (`blocks/cut.py`): each block's inputs, output, params, MACs and `Signature`, the key of
  the latency table.

This module imports no torch at run time (annotations only); the registry (`__init__.py`) imports the
families, which do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch
    from diffusers.configuration_utils import FrozenDict

    from snapbench.blocks.cut import CutBlock
    from snapbench.blocks.signature import Shape, Signature
    from snapbench.model.loading import ModelSource
    from snapbench.model.units import BlockUnit
    from snapbench.settings import InputShapes, RunSettings
    from snapbench.specs.arch_spec import ArchSpec
    from snapbench.specs.layout import Slot


class ElasticModel(Protocol):
    """What evolution, training and conversion use of a built backbone (an `nn.Module`).

    `units` are the blocks in execution order (`BlockUnit`s: slot, block id, file id, status); training
    mode skips RB / CA units with the probabilities set by `set_skip_probabilities` (robust training);
    `disabled` names units to run as removed at inference; `record` (a list) receives `(unit, args,
    output)` per unit, which is how blocks are cut."""

    spec: ArchSpec
    config: FrozenDict  # the family's config, as diffusers holds it

    @property
    def units(self) -> list[BlockUnit]: ...

    def unit(self, block_id: str) -> BlockUnit: ...

    def set_skip_probabilities(self, *, ca: float, rb: float) -> None: ...

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, *,
                 disabled: Collection[str] = (), record: list | None = None) -> torch.Tensor: ...


class Backbone(ABC):
    """One family of denoising networks. Stateless: one instance serves every model of the family."""

    #: short id, e.g. "sd-unet" (error messages, `snapbench inspect --json`'s "backbone")
    name: str = ""
    #: stage names in execution order: the rows of every per-stage table and chart
    stages: tuple[str, ...] = ()
    #: the file of a saved folder (`save`) that names its architecture; written last
    spec_file: str = "arch.json"

    # -- which models are this family's (config only: cheap, no torch) ------------------------------
    @abstractmethod
    def accepts(self, config: Mapping[str, object]) -> bool:
        """True when `config` (an arch spec's `base_config`) describes a network of this family."""

    # -- reading `--model` ------------------------------------------------------------------------------
    def claims(self, ref: str) -> bool:
        """True when `--model ref` (a preset name, a spec file, a folder) is this family's own format, which
        `resolve` reads. False (the default): the family's models are UNet presets, specs or folders, which
        `model/loading.py: resolve_unet` reads."""
        return False

    def resolve(self, ref: str, *, variant: str | None = None) -> ModelSource:
        """The `ModelSource` of a `ref` this family `claims` (`variant`: which weights file of a folder)."""
        raise NotImplementedError(f"{type(self).__name__} claims no model references")

    # -- structure: blocks, stages, elastic choices (no torch) --------------------------------------
    @abstractmethod
    def layout(self, spec: ArchSpec) -> tuple[Slot, ...]:
        """Every block slot in execution order (auxiliary blocks included: blocks add up to the network)."""

    def removable(self, spec: ArchSpec) -> list[Slot]:
        """The slots evolution may skip (remove) or copy: the elastic blocks."""
        return [s for s in self.layout(spec) if s.kind != "aux"]

    # -- the network ---------------------------------------------------------------------------------
    @abstractmethod
    def build(self, source: ModelSource, *, device: str | torch.device = "cpu", seed: int = 0) -> ElasticModel:
        """The elastic model for `source` (its weights, else seeded random ones). On device "meta"
        nothing is allocated: shapes and counts only. Build through `model.size_bound.bounded_build`, so a
        config that implies trillions of parameters is refused before it is allocated."""

    @abstractmethod
    def reshape(self, model: ElasticModel, spec: ArchSpec) -> ElasticModel:
        """The same weights under another spec (evolution's swap after a skip / copy action): shared base
        weights, copies carried over, new copies initialised from their originals."""

    def save(self, model: ElasticModel, folder: Path) -> None:
        """Write `model` as one complete folder that `--model` reads back (training and evolution output);
        written under a temporary name and renamed."""
        from snapbench.errors import SnapbenchError

        raise SnapbenchError(f"{model.spec.name}: the {self.name or type(self).__name__} family cannot save "
                             "trained models yet")

    @abstractmethod
    def example_inputs(self, model: ElasticModel, shapes: InputShapes, *, device: str | torch.device = "meta",
                       dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
        """One forward's inputs at `shapes` (seeded): what cutting and tracing run the model on."""

    @abstractmethod
    def signature(self, unit: BlockUnit, inputs: tuple[tuple[str, Shape], ...], output: Shape, *,
                  precision: str = "fp16", attention: str = "original") -> Signature:
        """A block's structural key: two blocks with one signature cost the same on a device."""

    @abstractmethod
    def cut(self, model: ElasticModel, shapes: InputShapes, *, precision: str = "fp16",
            attention: str = "original") -> list[CutBlock]:
        """Every block in execution order with inputs, output, params, MACs and `signature`. Run the recording
        forward inside `model.size_bound.check_activations` (the largest activation at `shapes` is bounded)."""

    # -- conveniences built on the above (a backbone need not override them) -------------------------
    def cut_source(self, source: ModelSource, settings: RunSettings) -> list[CutBlock]:
        """The blocks of `source` at `settings`, cut on the meta device (instant, no weights)."""
        return self.cut(self.build(source, device="meta"), settings.shapes, precision=settings.precision,
                        attention=settings.attention)
