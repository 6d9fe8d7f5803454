"""`--whole`: the UNet in one package (or two chunks, `--chunks 2`), with the same attention rewrites."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from snapbench.converters.cache import source_fingerprint
from snapbench.converters.convert_blocks import build_checked, cut, weight_files
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.converters.result import ConvertResult
from snapbench.converters.whole_model import SingleModel, convert_single
from snapbench.model.loading import ModelSource
from snapbench.model.units import AttentionUnit
from snapbench.specs.layout import TEXT_TIME_IDS, text_embeds_dim
from snapbench.versions import tool_versions


class _DiffusersCall(nn.Module):
    """A rewritten attention block behind diffusers' call convention, so the elastic UNet can run it."""

    def __init__(self, rewritten: nn.Module) -> None:
        super().__init__()
        self.rewritten = rewritten

    def forward(self, hidden: torch.Tensor, encoder_hidden_states: torch.Tensor, return_dict: bool = False):
        return (self.rewritten(hidden, encoder_hidden_states),)


class WholeUNet(nn.Module):
    """forward(sample, timestep, context) -> out: the elastic UNet, its attention rewritten if asked."""

    def __init__(self, model: nn.Module, attention: str, tokens: dict[str, int] | None = None) -> None:
        super().__init__()
        # Registered here so their weights are parameters of the traced module (the elastic UNet keeps
        # its units in a plain list), not constants that torch.jit.trace refuses.
        self.rewritten = nn.ModuleList()
        if attention != "original":
            from snapbench.converters.workers import rewrite_attention

            for unit in model.units:
                if isinstance(unit, AttentionUnit) and unit.has_compute:
                    n = (tokens or {}).get(unit.file_id, 10**9)  # H*W at this block (v2's query chunk)
                    unit.transformer = _DiffusersCall(rewrite_attention(unit.transformer, attention, n))
                    self.rewritten.append(unit.transformer)
        self.model = model.eval()

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor,
                *added: torch.Tensor) -> torch.Tensor:
        # SDXL-class UNets: text_embeds and time_ids follow the context (Apple's order for SDXL)
        return self.model(sample, timestep, context, *added)


def added_inputs(config, batch: int) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """SDXL-class UNets' extra inputs (pooled text embedding, size/crop ids); none for SD-1.x/2.x."""
    width = text_embeds_dim(config)
    return () if width is None else (("text_embeds", (batch, width)), ("time_ids", (batch, TEXT_TIME_IDS)))


def unet_single(source: ModelSource, opts: ConvertOptions) -> SingleModel:
    meta, blocks = cut(source, opts)
    cfg = meta.config
    ctx = cfg.cross_attention_dim[0] if isinstance(cfg.cross_attention_dim, (list, tuple)) else cfg.cross_attention_dim
    b, lat = opts.batch, opts.latent
    io = PackageIO(
        inputs=(("sample", (b, cfg.in_channels, lat, lat)), ("timestep", (b,)), ("context", (b, opts.tokens, ctx)),
                *added_inputs(cfg, b)),
        outputs=(("out", tuple(blocks[-1].output)),),
    )
    tokens = {x.unit.file_id: x.inputs[0][1][-1] * x.inputs[0][1][-2] for x in blocks if x.kind == "CA"}
    versions = tool_versions()
    weights = source_fingerprint(source.spec.to_dict(), weight_files(source), opts.seed, versions["torch"])
    bits: dict[str, tuple[int, str]] = {}

    def build() -> WholeUNet:
        model = build_checked(source, device="cpu", seed=opts.seed)
        if opts.recipe:  # before the attention rewrites: the recipe names diffusers' layers
            from snapbench.converters.mixed_bit import merge_bits, package_bits
            from snapbench.model.units import names_in_root

            bits.clear()
            root_names = names_in_root(model)
            for unit in model.units:
                merge_bits(bits, package_bits(unit, root_names(unit), dict(opts.recipe), opts.attention))
        return WholeUNet(model, opts.attention, tokens)

    return SingleModel(
        name="unet", title=f"UNet of {source.spec.name}", model=str(source.ref), spec=source.spec.name, io=io,
        build=build, identity={"spec": source.spec.to_dict(), "weights": weights},
        params=sum(x.params for x in blocks), macs=sum(x.macs for x in blocks),
        macs_no_attention=sum(x.macs - x.attention_macs for x in blocks),
        recipe_bits=(lambda: bits) if opts.recipe else None,
    )


def convert_whole_unet(source: ModelSource, out_dir: Path, opts: ConvertOptions = ConvertOptions(), *,
                       progress: bool = True) -> ConvertResult:
    return convert_single(unet_single(source, opts), out_dir, opts, progress=progress)
