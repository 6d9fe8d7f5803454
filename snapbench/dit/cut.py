"""Where a DiT is cut: its blocks in execution order, grouped into stages, with shapes, params, MACs and
signatures, from one run on PyTorch's meta device (no weights; SD3 Medium is cut in about a second).

Stages are groups of consecutive transformer blocks: the stack is split into (up to) four near-equal
runs, DiT-1 .. DiT-4, between an Embed stage (patch, timestep and caption embeddings) and a Final stage
(final norm and projection). Four keeps a 24- or 28-block stack readable at a glance, like a UNet's
resolution stages, and each stage's share of the latency shows where depth costs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from snapbench.blocks.cut import CountingRecord, CutBlock
from snapbench.blocks.signature import AttrValue, Signature
from snapbench.dit.family import Family
from snapbench.dit.spec import MAX_TOKENS, DitSpec
from snapbench.dit.units import (
    AdaSingleUnit,
    CaptionEmbedUnit,
    CrossBlockUnit,
    DitUnit,
    FinalLayerUnit,
    JointBlockUnit,
    PatchEmbedUnit,
    TextTimeEmbedUnit,
)
from snapbench.errors import SnapbenchError
from snapbench.settings import InputShapes
from snapbench.specs.dit_layout import MAX_STAGES, STAGES, block_stages

if TYPE_CHECKING:
    from diffusers.configuration_utils import FrozenDict

__all__ = ["STAGES", "block_stages", "cut_dit", "cut_units", "default_shapes", "example_inputs", "make_units",
           "run_chain", "stage_names"]

Shape = tuple[int, ...]
MAX_LATENT = 512  # 4096x4096 pixels at f8; bounds the token count (and attention memory) a user can ask for




def outputs_of(b: CutBlock) -> tuple[tuple[str, Shape], ...]:
    """A DiT block's named outputs (SD3's joint blocks return the image and the text stream)."""
    if b.outputs is None:
        raise ValueError(f"{b.block_id}: not a DiT block (no named outputs)")
    return b.outputs


def default_shapes(spec: DitSpec, *, latent: int | None = None, batch: int = 2, tokens: int | None = None) -> InputShapes:
    """The shapes to cut at: the user's, else the model's own (its config's sample_size, its text length)."""
    size = latent if latent is not None else int(spec.family.setting(spec.config, "sample_size"))
    return InputShapes(latent=size, batch=batch, tokens=tokens if tokens is not None else spec.text_tokens())


def stage_names(num_layers: int) -> list[str]:
    return ["Embed", *(f"DiT-{i + 1}" for i in range(min(MAX_STAGES, num_layers))), "Final"]


def check_shapes(spec: DitSpec, shapes: InputShapes) -> None:
    fam = spec.family
    patch = int(fam.setting(spec.config, "patch_size"))
    if not 1 <= shapes.latent <= MAX_LATENT:
        raise SnapbenchError(f"--latent {shapes.latent}: must be from 1 to {MAX_LATENT}")
    if shapes.latent % patch:
        raise SnapbenchError(f"--latent {shapes.latent} is not divisible by {spec.name}'s patch size {patch}; "
                             f"use a multiple of {patch}")
    if not 1 <= shapes.tokens <= MAX_TOKENS:
        raise SnapbenchError(f"--tokens {shapes.tokens}: must be from 1 to {MAX_TOKENS}")
    if spec.attention_variant is not None:
        from snapbench.dit.variants import check_fits

        check_fits(spec.attention_variant, (shapes.latent // patch) ** 2, spec.name)
    max_size = fam.setting(spec.config, "pos_embed_max_size") if fam.key == "mmdit" else None
    if max_size is not None and shapes.latent // patch > max_size:
        raise SnapbenchError(f"--latent {shapes.latent} gives {shapes.latent // patch} patches per side, more than "
                             f"{spec.name}'s pos_embed_max_size {max_size}; use --latent {max_size * patch} or less")


def make_units(model: torch.nn.Module, fam: Family) -> list[DitUnit]:
    """The model's blocks in execution order (sharing the model's modules and weights)."""
    patch = int(model.config.patch_size)
    stages = block_stages(len(model.transformer_blocks))
    units: list[DitUnit] = []
    if fam.key == "mmdit":
        units += [PatchEmbedUnit(model.pos_embed, "pos_embed"), TextTimeEmbedUnit(model.time_text_embed),
                  CaptionEmbedUnit([model.context_embedder], "context_embedder")]
        units += [JointBlockUnit(stages[i], i, b) for i, b in enumerate(model.transformer_blocks)]
    else:
        embed = model.adaln_single if fam.key == "pixart" else model.time_embed
        captions = [model.caption_projection] + ([model.caption_norm] if fam.key == "sana" else [])
        units += [PatchEmbedUnit(model.pos_embed if fam.key == "pixart" else model.patch_embed,
                                 "pos_embed" if fam.key == "pixart" else "patch_embed"),
                  AdaSingleUnit(embed, "adaln_single" if fam.key == "pixart" else "time_embed"),
                  CaptionEmbedUnit(captions, "caption_projection" + (", caption_norm" if fam.key == "sana" else ""))]
        units += [CrossBlockUnit(stages[i], i, b, needs_grid=fam.key == "sana")
                  for i, b in enumerate(model.transformer_blocks)]
    units.append(FinalLayerUnit(fam.key, model, patch))
    return units


def example_inputs(spec: DitSpec, shapes: InputShapes, *, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, seed: int = 0) -> dict[str, torch.Tensor]:
    """The backbone's inputs: latent sample, timestep, text context (and SD3's pooled text vector)."""
    fam, cfg = spec.family, spec.config
    g = torch.Generator().manual_seed(seed)
    b = shapes.batch
    out = {
        "sample": torch.randn(b, int(fam.setting(cfg, "in_channels")), shapes.latent, shapes.latent, generator=g),
        "timestep": torch.full((b,), 981.0),
        "context": torch.randn(b, shapes.tokens, int(fam.setting(cfg, fam.context_key)), generator=g),
    }
    if fam.key == "mmdit":
        out["pooled"] = torch.randn(b, int(fam.setting(cfg, "pooled_projection_dim")), generator=g)
    return {k: v.to(device=device, dtype=dtype if k != "timestep" else torch.float32) for k, v in out.items()}


def run_chain(units: list[DitUnit], inputs: dict[str, torch.Tensor], record: list | None = None) -> torch.Tensor:
    """The whole backbone, block by block: each unit reads its inputs by name and writes its outputs (a
    removed block's streams pass through)."""
    env = dict(inputs)
    for unit in units:
        args = tuple(env[n] for n in unit.input_names)
        out = args[: len(unit.output_names)] if unit.removed else unit(*args)  # removed: streams pass through
        outs = out if isinstance(out, tuple) else (out,)
        if record is not None:
            record.append((unit, args, outs))
        env.update(zip(unit.output_names, outs))
    return env["sample"]


def _attrs(unit: DitUnit, fam: Family, cfg: FrozenDict, variant: str) -> tuple[tuple[str, AttrValue], ...]:
    """What changes a block's cost beyond its input shapes."""
    if not isinstance(unit, (JointBlockUnit, CrossBlockUnit)):
        return (("family", fam.key),)
    heads, head_dim = int(cfg.num_attention_heads), int(cfg.attention_head_dim)
    attrs: list[tuple[str, AttrValue]] = [("family", fam.key), ("heads", heads), ("head_dim", head_dim)]
    if fam.key == "mmdit":
        block = unit.block
        attrs += [("qk_norm", cfg.qk_norm or "-"), ("dual_attention", int(block.use_dual_attention)),
                  ("context_out", int(not block.context_pre_only)), ("attention_kind", "joint"),
                  ("attention_variant", variant)]
    elif fam.key == "pixart":
        attrs += [("cross_heads", heads), ("ff", cfg.activation_fn), ("attention_kind", "self+cross"),
                  ("attention_variant", variant)]
    else:
        attrs += [("cross_heads", int(cfg.num_cross_attention_heads)),
                  ("cross_head_dim", int(cfg.cross_attention_head_dim)), ("mlp_ratio", float(cfg.mlp_ratio)),
                  ("attention_kind", "linear+cross")]
    ratio = float(cfg.mlp_ratio) if fam.key == "sana" else 4.0
    return tuple(attrs) + _variant_attrs(unit.block, heads, ratio)


def _variant_attrs(block: nn.Module, heads: int, ff_ratio: float) -> tuple[tuple[str, AttrValue], ...]:
    """A block variant's (elastic DiT: fewer key/value heads, a narrower feed-forward) extra attributes;
    none for the block as diffusers builds it, so the full model's signatures stay as they were.
    `ff_ratio`: the feed-forward's inner width over the channels as the config builds it (4; Sana's mlp_ratio)."""
    attn = getattr(block, "attn1", None) or getattr(block, "attn", None)
    ff = getattr(block, "ff", None)
    if attn is None or ff is None:
        return ()
    out: list[tuple[str, AttrValue]] = []
    d = attn.to_q.out_features // heads
    kv = attn.to_k.out_features // d
    if kv != heads:
        out.append(("kv_heads", kv))
    width = attn.query_dim
    # diffusers' FeedForward (PixArt, SD3) or Sana's GLUMBConv
    inner = ff.net[2].in_features if hasattr(ff, "net") else ff.conv_point.in_channels
    if inner != int(ff_ratio * width):
        out.append(("ff_inner", inner))
    return tuple(out)


def cut_units(units: list[DitUnit], spec: DitSpec, shapes: InputShapes, config: FrozenDict, *, precision: str = "fp16",
              attention: str = "original") -> list[CutBlock]:
    """Every block in execution order with inputs, outputs, params, MACs and signature, from one recorded run
    of `units` (built on the meta device) at `shapes`."""
    check_shapes(spec, shapes)
    fam = spec.family
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        record = CountingRecord(counter)
        run_chain(units, example_inputs(spec, shapes, device="meta"), record)
    blocks = []
    for (unit, args, outs), (total, attn) in zip(record, record.macs):
        inputs = tuple((n, tuple(a.shape)) for n, a in zip(unit.input_names, args))
        outputs = tuple((n, tuple(o.shape)) for n, o in zip(unit.output_names, outs))
        if unit.removed:  # nothing runs: no package, no cost (its weights stay in the checkpoint)
            blocks.append(CutBlock(unit, inputs, outputs[0][1], 0, 0, 0, None, outputs=outputs))
            continue
        kind = "TB" if unit.kind == "TB" else unit.name
        variant = spec.attention_variant.label() if spec.attention_variant else "-"
        sig = Signature(kind, inputs, outputs[0][1], _attrs(unit, fam, config, variant), precision,
                        attention if kind == "TB" else "-")
        params = sum(p.numel() for p in unit.parameters())
        blocks.append(CutBlock(unit, inputs, outputs[0][1], params, int(total), int(attn), sig,
                               outputs=outputs))
    return blocks


def cut_dit(spec: DitSpec, shapes: InputShapes, *, precision: str = "fp16", attention: str = "original") -> list[CutBlock]:
    """Every block of a DiT spec in execution order, cut on the meta device."""
    from snapbench.dit.source import build_meta
    from snapbench.dit.variants import apply_variant

    check_shapes(spec, shapes)
    model = build_meta(spec.config).eval()
    apply_variant(model, spec.attention_variant, spec.family.key)
    return cut_units(make_units(model, spec.family), spec, shapes, model.config, precision=precision,
                     attention=attention)
