"""The elastic UNet: runs a diffusers UNet2DConditionModel's blocks the way an arch spec says.

Removed blocks run as the identity (or their shortcut projection alone), copies run right after their
original, and skip connections stay consistent because skips are stored per diffusers layer, after the
layer's last block and its copies, exactly where diffusers stores them. With every block kept, the
output equals diffusers' own forward.

Robust training (SnapFusion 3.1.1): in training mode each RB / CA unit runs as removed with its
`skip_probability`; at inference `disabled` gives a deterministic set of block ids to treat as removed, for the whole batch or, as
`PerRow`, one set per batch row: several candidate architectures then share one forward pass (evolution
batches its candidates), each row computing only the blocks its candidate runs.

Robust training may also sample cheaper variants (`add_alternative`, `train --variant-moves`): a kept block
runs, with `variant_probability`, one of its alternatives instead, so that evolution's swaps (`evolve
--moves`) are judged on trained weights. An alternative shares every parameter of the block whose name and
shape match; the rest are its own (see `add_alternative`). A model derived for another spec (`with_spec`)
starts each swapped block from the trained alternative of that exact variant.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass

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
    TextTimeEmbeddingUnit,
    TimeEmbeddingUnit,
    copy_resnet,
)
from snapbench.model.variants import resnet_variant, share_parameters, transformer_variant
from snapbench.specs.arch_spec import ArchSpec
from snapbench.specs.layout import Slot, text_embeds_dim
from snapbench.specs.variants import Variant

TEXT_TIME_FROM_CONTEXT = "from_context"  # arch spec notes["text_time"]: see text_time_from_context
ALTERNATIVE_SEP = "__"  # alternatives' keys: "<file id>__<move>" (a ModuleDict key has no dots)


def text_time_from_context(context: torch.Tensor, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's added conditioning for a model with one prompt encoder (the toy `toy-digits-xl`): the pooled
    text embedding is the mean of the context tokens [B, L, D] -> [B, D], and time_ids are the latent's
    own size with no crop, (H, W, 0, 0, H, W) as SDXL's (original size, crop corner, target size). A spec
    opts in with notes {"text_time": "from_context"}; training, sampling and evaluation then call the UNet
    with the context alone, while conversion still feeds both inputs as SDXL's UNet takes them."""
    h, w = sample.shape[-2:]
    ids = torch.tensor([h, w, 0, 0, h, w], dtype=context.dtype, device=context.device)
    return context.mean(dim=1), ids.expand(context.shape[0], -1)


@dataclass(frozen=True)
class PerRow:
    """Blocks to run as removed per batch row: row i runs without `rows[i]` (block ids, paper-style or
    file-safe). Rows are independent through every unit (GroupNorm, attention and the time embedding are
    per sample), so a row's output equals running its candidate alone."""

    rows: tuple[frozenset[str], ...]

    def repeat(self, times: int) -> PerRow:
        """The same rows for a batch stacked `times` over (CFG runs [uncond; cond])."""
        return PerRow(self.rows * times)

    def active_rows(self, unit: BlockUnit) -> list[int]:
        return [i for i, off in enumerate(self.rows) if unit.block_id not in off and unit.file_id not in off]


Disabled = Collection[str] | PerRow


def carry_over(have: nn.Module, want: nn.Module) -> None:
    """Weights of `have` that `want` also holds, at the same shape, copied into `want`: an elastic model's
    copies or variant blocks under a new spec keep their training; new ones keep their initialisation."""
    want_state = want.state_dict()
    want.load_state_dict({k: v for k, v in have.state_dict().items()
                          if k in want_state and v.shape == want_state[k].shape}, strict=False)


class ElasticUNet(nn.Module):
    def __init__(self, unet: nn.Module, spec: ArchSpec) -> None:
        super().__init__()
        self.spec = spec
        self.base = unet  # every base weight lives here (removed blocks' too, so checkpoints round-trip)
        self.copies = nn.ModuleDict()  # weight copies, keyed by file id
        self.variants = nn.ModuleDict()  # SnapGen-style variants replacing their base block, keyed by file id
        # robust training's sampled variants (add_alternative), keyed "<file id>__<move>"
        self.alternatives = nn.ModuleDict()
        self.alternative_variants: dict[str, Variant] = {}
        self.shared_names: dict[str, frozenset[str]] = {}  # per alternative: parameters it shares with its block
        self.variant_probability = 0.0
        # trained alternatives of the models this one was derived from, by (file id, variant): swap sources
        self.trained_alternatives: Mapping[tuple[str, Variant], nn.Module] = {}
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
        if slot.name == "add_embedding":
            return [TextTimeEmbeddingUnit(slot, u.add_time_proj, u.add_embedding)]
        if slot.name == "conv_in":
            return [ConvInUnit(slot, u.conv_in)]
        if slot.name in ("downsample", "upsample"):
            return [SamplerUnit(slot, u.get_submodule(slot.module_path))]
        if slot.name == "conv_out":
            return [ConvOutUnit(slot, u.conv_norm_out, u.conv_act, u.conv_out)]
        original = self._variant(slot, u.get_submodule(slot.module_path))
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

    def _variant(self, slot: Slot, original: nn.Module) -> nn.Module:
        """The block the spec asks for: the base block, or a variant built from it (registered here)."""
        v = self.spec.choice(slot).variant
        if v.is_default:
            return original
        made = resnet_variant(original, v) if slot.kind == "RB" else transformer_variant(original, v, slot.block_id)
        self.variants[slot.file_id] = made
        return made

    def with_spec(self, spec: ArchSpec) -> ElasticUNet:
        """The same weights under another spec: base weights shared, existing copies and variant blocks
        carried over, new ones initialised from their originals (what an A+ action does)."""
        new = ElasticUNet(self.base, spec)
        carry_over(self.copies, new.copies)
        carry_over(self.variants, new.variants)
        trained = {**self.trained_alternatives,
                   **{(k.rpartition(ALTERNATIVE_SEP)[0], v): self.alternatives[k] for k, v in self.alternative_variants.items()}}
        new.trained_alternatives = trained
        for slot in spec.layout:
            want = spec.choice(slot).variant if slot.file_id in new.variants else None
            # a block this model already ran as `want` keeps its own weights (carried above)
            if want is not None and self.spec.choice(slot).variant != want and (slot.file_id, want) in trained:
                new.variants[slot.file_id].load_state_dict(trained[(slot.file_id, want)].state_dict())
        new.train(self.training)
        return new

    def add_alternative(self, file_id: str, move: str, variant: Variant) -> str:
        """Let robust training sample block `file_id` (an original, not a copy) as `variant`: the spec's own
        variant of the block with the swap `move` applied. Built from the base block as a swapped block is
        (`_variant`), then made to share every parameter of the block it stands in for whose name and shape
        match (norms, the time projection, shortcut, query and output projections, a cross-only block's
        whole attention and feed-forward): those train in both. What has no same-shaped counterpart is its
        own, initialised as a swap would be: a separable convolution's three factors, the key / value
        projections of multi-query attention, a narrower feed-forward's first and last matrices. Returns its key."""
        key = f"{file_id}{ALTERNATIVE_SEP}{move}"
        if key in self.alternatives:
            return key
        unit = self.unit(file_id)
        if not isinstance(unit, (ResnetUnit, AttentionUnit)) or unit.instance != 0:
            raise SnapbenchError(f"{file_id}: only original RB / CA blocks have sampled variants")
        base_block = self.base.get_submodule(unit.slot.module_path)
        if isinstance(unit, ResnetUnit):
            alt, current = resnet_variant(base_block, variant), unit.resnet
        else:
            alt, current = transformer_variant(base_block, variant, unit.block_id), unit.transformer
        self.shared_names[key] = frozenset(share_parameters(alt, current))
        self.alternatives[key] = alt
        self.alternative_variants[key] = variant
        return key

    def alternatives_of(self, unit: BlockUnit) -> list[str]:
        if unit.instance != 0:
            return []
        prefix = f"{unit.file_id}{ALTERNATIVE_SEP}"
        return [k for k in self.alternatives if k.startswith(prefix)]

    def alternatives_state(self) -> dict[str, torch.Tensor]:
        """The alternatives' own tensors (shared ones live with their block), for saving."""
        return {k: v for k, v in self.alternatives.state_dict().items()
                if k.split(".", 1)[1] not in self.shared_names.get(k.split(".", 1)[0], frozenset())}

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
        text_embeds: torch.Tensor | None = None,
        time_ids: torch.Tensor | None = None,
        *,
        disabled: Disabled = (),
        generator: torch.Generator | None = None,
        record: list | None = None,
    ) -> torch.Tensor:
        """Predict the noise (or v) for `sample` [B, C, H, W] at `timestep` given the text context [B, L, D].

        `text_embeds` [B, D_pooled], `time_ids` [B, 6]: SDXL-class UNets' added conditioning (what
        diffusers takes as `added_cond_kwargs`).

        `disabled`: block ids (paper-style or file-safe) to run as removed, deterministically; a `PerRow`
        gives one set per row of `sample`.
        `record`: if given, gets one (unit, inputs, output) tuple per unit run: how blocks are cut.
        """
        batch = sample.shape[0]
        if not isinstance(timestep, torch.Tensor):
            timestep = torch.tensor([timestep], dtype=torch.float32, device=sample.device)
        if timestep.ndim == 0:
            timestep = timestep[None]
        timestep = timestep.to(sample.device).expand(batch)
        self._check_divisible(sample)
        if isinstance(disabled, PerRow) and len(disabled.rows) != batch:
            raise SnapbenchError(f"{len(disabled.rows)} rows of disabled blocks for a batch of {batch}")

        skips: list[torch.Tensor] = []
        temb: torch.Tensor | None = None
        hidden = sample
        for unit, closes in zip(self._units, self._closes_skip):
            if isinstance(unit, TimeEmbeddingUnit):
                args: tuple[torch.Tensor, ...] = (timestep,)
                temb = unit(timestep)
                out = temb
            elif isinstance(unit, TextTimeEmbeddingUnit):
                args = (temb, *self._text_time(text_embeds, time_ids, encoder_hidden_states, sample))
                temb = unit(*args)
                out = temb
            else:
                if isinstance(unit, ResnetUnit):
                    args = (hidden, skips.pop(), temb) if unit.takes_skip else (hidden, temb)
                    out = self._run(unit, args, disabled, generator)
                elif isinstance(unit, AttentionUnit):
                    args = (hidden, encoder_hidden_states)
                    out = self._run(unit, args, disabled, generator)
                else:
                    args = (hidden,)
                    out = unit(hidden)
                hidden = out
            if record is not None:
                record.append((unit, args, out))
            if closes:
                skips.append(hidden)
        return hidden

    def _text_time(self, text_embeds: torch.Tensor | None, time_ids: torch.Tensor | None, context: torch.Tensor,
                   sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if text_embeds is None and time_ids is None and self.spec.notes.get("text_time") == TEXT_TIME_FROM_CONTEXT:
            pooled = text_embeds_dim(self.config)
            if context.shape[-1] != pooled:
                raise SnapbenchError(f"{self.spec.name}: notes.text_time 'from_context' pools the {context.shape[-1]}-wide "
                                     f"context, but the UNet's pooled text embedding is {pooled} wide; set "
                                     "projection_class_embeddings_input_dim = cross_attention_dim + 6 x "
                                     "addition_time_embed_dim")
            return text_time_from_context(context, sample)
        if text_embeds is None or time_ids is None:
            missing = [n for n, t in (("text_embeds", text_embeds), ("time_ids", time_ids)) if t is None]
            raise SnapbenchError(f"{self.spec.name} has SDXL's text_time conditioning: pass text_embeds and "
                                 f"time_ids after the context (missing {', '.join(missing)})")
        return text_embeds, time_ids

    def _run(self, unit: ResnetUnit | AttentionUnit, args: tuple[torch.Tensor, ...], disabled: Disabled,
             generator: torch.Generator | None) -> torch.Tensor:
        if not isinstance(disabled, PerRow):
            active = self._active(unit, disabled, generator)
            return unit.run(*args, active=active, module=self._sampled_alternative(unit, generator) if active else None)
        rows = [] if unit.removed else disabled.active_rows(unit)
        if len(rows) == len(disabled.rows):
            return unit.run(*args, active=True)
        removed = unit.run(*args, active=False)  # the identity or the shortcut: cheap next to the block
        if not rows:
            return removed
        # Only the rows whose candidate runs the block compute it; out of place (removed may be the input).
        index = torch.tensor(rows, device=removed.device)
        return removed.index_put((index,), unit.run(*(a[index] for a in args), active=True))

    def _active(self, unit: BlockUnit, disabled: Collection[str], generator: torch.Generator | None) -> bool:
        if unit.removed or unit.block_id in disabled or unit.file_id in disabled:
            return False
        if self.training and unit.skip_probability > 0.0:
            draw = torch.rand((), generator=generator)
            return bool(draw >= unit.skip_probability)
        return True

    def _sampled_alternative(self, unit: BlockUnit, generator: torch.Generator | None) -> nn.Module | None:
        """Robust training: one of the block's alternatives with `variant_probability`, else None (the block)."""
        if not self.training or self.variant_probability <= 0.0:
            return None
        keys = self.alternatives_of(unit)
        if not keys or float(torch.rand((), generator=generator)) >= self.variant_probability:
            return None
        return self.alternatives[keys[int(torch.randint(len(keys), (), generator=generator))]]

    def _check_divisible(self, sample: torch.Tensor) -> None:
        factor = 2 ** sum(1 for u in self._units if u.slot.name == "upsample")
        h, w = sample.shape[-2:]
        if h % factor or w % factor:
            raise SnapbenchError(
                f"latent {h}x{w} is not a multiple of {factor} (the UNet halves it {factor.bit_length() - 1} times); "
                "pick a latent size divisible by it"
            )
