"""The elastic DiT: a diffusers DiT run block by block as its `ArchSpec` says (SnapFusion's elastic view,
for transformers): each transformer block kept, removed (its streams pass through unchanged), copied
(weight copies run right after it) or run as a cheaper variant (fewer key/value heads, a narrower
feed-forward; `specs/variants.py`, the same fields as a UNet's CA blocks).

What training, evolution and conversion use of it is the `ElasticModel` protocol (backbones/base.py):
training mode skips each transformer block with its probability (robust training), `disabled` runs named
blocks as removed at inference (one set for the batch, or a `PerRow` per row so that many candidates share
one batch), `record` receives `(unit, args, outputs)` per unit (how blocks are cut).

Weights: every base weight lives in `base` (the diffusers model, removed blocks' too, so checkpoints
round-trip); copies and variant blocks live in `copies` / `variants`, keyed by file id, so a saved folder
is the diffusers `transformer/` plus two small safetensors files.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from snapbench.dit.cut import make_units
from snapbench.dit.source import SPEC_FILE, TRANSFORMER, dit_spec
from snapbench.dit.units import CrossBlockUnit, DitUnit, JointBlockUnit
from snapbench.errors import SnapbenchError
from snapbench.model.elastic_unet import Disabled, PerRow, carry_over
from snapbench.model.loading import COPIES_FILE, VARIANTS_FILE, ModelSource
from snapbench.specs.arch_spec import ArchSpec
from snapbench.specs.variants import Variant


def block_variant(block: nn.Module, v: Variant, where: str) -> nn.Module:
    """A copy of a PixArt / Sana / SD3 block made the variant `v` (the base block itself when `v` is the
    default). PixArt's blocks are diffusers' BasicTransformerBlock, so the UNet's CA variant code applies;
    SD3's and Sana's have their own (dit/block_variants.py)."""
    from snapbench.model.variants import grouped_query_attention, narrower_feed_forward

    if v.is_default:
        return block
    if not v.self_attention:
        raise SnapbenchError(f"{where}: self_attention=false would leave a DiT block without its image attention; "
                             "remove the block instead")
    if type(block).__name__ != "BasicTransformerBlock":  # SD3's joint blocks, Sana's linear-attention blocks
        from snapbench.dit.block_variants import dit_block_variant

        return dit_block_variant(block, v, where)
    new = copy.deepcopy(block)
    if v.kv_heads is not None:
        new.attn1 = grouped_query_attention(new.attn1, v.kv_heads, where)
        new.attn2 = grouped_query_attention(new.attn2, v.kv_heads, where)
    if v.ff_mult is not None:
        new.ff = narrower_feed_forward(new.ff, new.norm2.normalized_shape[0], v.ff_mult)
    return new


def _with_block(unit: DitUnit, block: nn.Module, instance: int) -> DitUnit:
    """The unit `unit` is, running `block` instead (a copy or a variant), as copy number `instance`."""
    assert unit.index is not None
    if isinstance(unit, JointBlockUnit):
        made: DitUnit = JointBlockUnit(unit.stage, unit.index, block)
    elif isinstance(unit, CrossBlockUnit):
        made = CrossBlockUnit(unit.stage, unit.index, block, needs_grid=unit.needs_grid)
    else:
        raise SnapbenchError(f"{unit.block_id}: only transformer blocks are elastic")
    made.instance = instance
    return made


class ElasticDiT(nn.Module):
    """A diffusers DiT under an `ArchSpec` whose stages list its transformer blocks (`dit.source.to_arch_spec`)."""

    def __init__(self, base: nn.Module, spec: ArchSpec) -> None:
        super().__init__()
        self.base, self.spec, self.config = base, spec, base.config
        self.copies = nn.ModuleDict()  # weight copies, keyed by file id ("dit1_tb1_copy1")
        self.variants = nn.ModuleDict()  # variant blocks replacing their base block, keyed by file id
        units: list[DitUnit] = []
        for unit in make_units(base, dit_spec(spec).family):
            if unit.kind != "TB":
                units.append(unit)
                continue
            choice = spec.choice(unit.slot)
            block = block_variant(unit.block, choice.variant, unit.block_id)
            if block is not unit.block:
                self.variants[unit.file_id] = block
                unit = _with_block(unit, block, 0)
            unit.removed = not choice.keep
            units.append(unit)
            for k in range(1, choice.copies + 1):
                dup = copy.deepcopy(block)
                self.copies[f"{unit.file_id}_copy{k}"] = dup
                units.append(_with_block(unit, dup, k))
        # A plain list, not a ModuleList: the modules are registered once, under base / copies / variants.
        self._units = units

    def with_spec(self, spec: ArchSpec) -> ElasticDiT:
        """The same weights under another spec: base weights shared, existing copies and variant blocks carried
        over, new ones initialised from their originals (what an evolution action does)."""
        new = ElasticDiT(self.base, spec)
        carry_over(self.copies, new.copies)
        carry_over(self.variants, new.variants)
        new.train(self.training)
        return new

    @property
    def units(self) -> list[DitUnit]:
        return list(self._units)

    def unit(self, block_id: str) -> DitUnit:
        for u in self._units:
            if block_id in (u.block_id, u.file_id):
                return u
        raise SnapbenchError(f"{self.spec.name} has no block {block_id!r}")

    def set_skip_probabilities(self, *, ca: float, rb: float) -> None:
        """Robust training. A DiT has transformer blocks only: they take the attention blocks' probability."""
        if not 0.0 <= ca < 1.0:
            raise SnapbenchError(f"skip probability for transformer blocks must be in [0, 1), got {ca}")
        for u in self._units:
            u.skip_probability = ca if u.kind == "TB" else 0.0

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor | float | int, context: torch.Tensor,
                pooled: torch.Tensor | None = None, *, disabled: Disabled = (),
                generator: torch.Generator | None = None, record: list | None = None) -> torch.Tensor:
        """The noise (or v) for `sample` [B, C, H, W] at `timestep` (a scalar or [B]) given the text
        context [B, L, D] (and SD3's pooled text [B, P])."""
        t = torch.as_tensor(timestep, device=sample.device)
        env = {"sample": sample, "timestep": t.float().reshape(-1).expand(sample.shape[0]), "context": context}
        if pooled is not None:
            env["pooled"] = pooled
        for unit in self._units:
            args = tuple(env[n] for n in unit.input_names)
            out = unit(*args) if unit.kind != "TB" else self._run(unit, args, disabled, generator)
            outs = out if isinstance(out, tuple) else (out,)
            if record is not None:
                record.append((unit, args, outs))
            env.update(zip(unit.output_names, outs))
        return env["sample"]

    def _run(self, unit: DitUnit, args: tuple[torch.Tensor, ...], disabled: Disabled,
             generator: torch.Generator | None) -> torch.Tensor | tuple[torch.Tensor, ...]:
        passed = args[: len(unit.output_names)]  # a removed block passes its streams through
        if not isinstance(disabled, PerRow):
            return unit(*args) if self._active(unit, disabled, generator) else _one(passed)
        rows = [] if unit.removed else disabled.active_rows(unit)
        if len(rows) == len(disabled.rows):
            return unit(*args)
        if not rows:
            return _one(passed)
        # Only the rows whose candidate runs the block compute it (rows are independent through a block).
        index = torch.tensor(rows, device=args[0].device)
        ran = unit(*(a[index] for a in args))
        ran = ran if isinstance(ran, tuple) else (ran,)
        return _one(tuple(p.index_put((index,), r) for p, r in zip(passed, ran)))

    def _active(self, unit: DitUnit, disabled: Collection[str], generator: torch.Generator | None) -> bool:
        if unit.removed or unit.block_id in disabled or unit.file_id in disabled:
            return False
        if self.training and unit.skip_probability > 0.0:
            return bool(torch.rand((), generator=generator) >= unit.skip_probability)
        return True


def _one(outs: tuple[torch.Tensor, ...]) -> torch.Tensor | tuple[torch.Tensor, ...]:
    return outs[0] if len(outs) == 1 else outs


def save_dit(model: ElasticDiT, folder: str | os.PathLike[str]) -> Path:
    """An elastic DiT as dit.json + transformer/ (diffusers save_pretrained) + copies / variants safetensors,
    written under a temporary name and renamed: a folder that exists is complete."""
    from safetensors.torch import save_file

    from snapbench.atomic import atomic_path, atomic_write_text

    out = Path(folder)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        atomic_write_text(tmp / SPEC_FILE, json.dumps(dit_spec(model.spec).to_dict(), indent=2) + "\n")
        model.base.save_pretrained(tmp / TRANSFORMER, safe_serialization=True)
        for modules, name in ((model.copies, COPIES_FILE), (model.variants, VARIANTS_FILE)):
            state = {k: v.detach().contiguous().cpu() for k, v in modules.state_dict().items()}
            if state:
                save_file(state, str(tmp / name))
    return out


def load_extra_weights(model: ElasticDiT, source: ModelSource) -> None:
    """Copied and variant blocks' weights from a saved folder into a freshly built elastic DiT (on meta:
    nothing to load). A file that does not fit the spec's blocks is refused in one line."""
    from snapbench.user_files import load_safetensors

    for path, modules in ((source.copies_file, model.copies), (source.variants_file, model.variants)):
        if path is None or next(model.base.parameters()).device.type == "meta":
            continue
        state = load_safetensors(path)
        want = {k: tuple(v.shape) for k, v in modules.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if want != got:
            wrong = sorted(set(want) ^ set(got)) or sorted(k for k in want if want[k] != got[k])
            raise SnapbenchError(f"{path}: does not fit {source.spec.name}'s copied / variant blocks (first "
                                 f"mismatch: {wrong[0]}); the folder's {SPEC_FILE} and weights disagree")
        modules.load_state_dict(state)
