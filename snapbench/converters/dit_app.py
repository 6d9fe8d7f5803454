"""`convert --pipeline` for DiTs: every package an app needs to make an image from a prompt.

    SD3 / SD3.5   TextEncoder (CLIP-L) + TextEncoder2 (CLIP-G) + TextEncoderT5 + Transformer + VAEDecoder
    PixArt-Sigma  TextEncoderT5 + Transformer + VAEDecoder
    Sana          TextEncoderGemma + Transformer + VAEDecoder (DC-AE, 32x)

The parts plug into `converters.pipeline.convert_pipeline` (cache keys, resume, manifest, one part in
memory at a time) as `AppPart`s; names, shapes and dtypes are the rows of the DiT families in
swift_interface.json. Each text encoder's size is stated (counted from its config); one that no iPhone can
hold is refused in one line naming what to do instead, unless `--drop-text-encoder` leaves it out.

Weights: a diffusers pipeline folder (model_index.json beside transformer/) gives each part its own
folder's weights (text_encoder/, text_encoder_2/, text_encoder_3/, vae/); otherwise seeded random ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from snapbench.converters.app_parts import AppPart, small_image_inputs
from snapbench.converters.dit_text_encoders import (
    TextEncoderSpec,
    encoders_for,
    model_class,
    phone_budget,
    size_line,
    too_big_message,
    transformers_config,
    weight_bytes,
)
from snapbench.converters.model_configs import ModelConfig, config_int
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.converters.swift_interface import with_swift_dtypes
from snapbench.dit.source import dit_spec
from snapbench.dit.spec import DitSpec
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource

FAMILY_OF = {"mmdit": "sd3", "pixart": "pixart", "sana": "sana"}  # swift_interface.json's DiT families
BACKBONE = "Transformer"


class AppClip(nn.Module):
    """SD3's CLIPs: the penultimate layer's states and the projected pooled output (diffusers' SD3 pipeline)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        clip.loss_function = None  # keeps jit.trace quiet (see components.TextEncoder)
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.clip(input_ids=input_ids.to(torch.int32), output_hidden_states=True)
        return out.hidden_states[-2], out.text_embeds


class AppT5(nn.Module):
    """T5's encoder: its last hidden state (SD3's and PixArt's pipelines; no attention mask: the padded prompt)."""

    def __init__(self, t5: nn.Module) -> None:
        super().__init__()
        t5.loss_function = None
        self.t5 = t5

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.t5(input_ids=input_ids.to(torch.int32), return_dict=False)[0]


class AppGemma(nn.Module):
    """Gemma-2's decoder stack: its last hidden state (Sana's pipeline). The causal mask is made here, as a
    constant of the sequence length, and handed to both layer kinds: transformers' own mask builder traces to
    ops coremltools lacks, and the sliding window (4,096) is longer than any prompt (300 tokens)."""

    def __init__(self, gemma: nn.Module) -> None:
        super().__init__()
        self.gemma = gemma

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        n = input_ids.shape[1]
        causal = torch.full((n, n), torch.finfo(torch.float32).min).triu(1)[None, None]
        masks = {"full_attention": causal, "sliding_attention": causal}
        return self.gemma(input_ids=input_ids.to(torch.int32), attention_mask=masks, use_cache=False,
                          return_dict=False)[0]


def pipeline_root(source: ModelSource, weights: Path | None) -> Path | None:
    """The diffusers pipeline folder the other parts come from: --weights, else the folder holding the
    transformer/ that --model named (when it has model_index.json)."""
    for cand in (weights, source.weights_dir.parent if source.weights_dir is not None else None):
        if cand is not None and (Path(cand) / "model_index.json").is_file():
            return Path(cand)
    if weights is not None:
        raise SnapbenchError(f"--weights {weights}: not a diffusers pipeline folder (no model_index.json)")
    return None


def _local(root: Path | None, sub: str) -> Path | None:
    return root / sub if root is not None and (root / sub / "config.json").is_file() else None


def encoder_part(enc: TextEncoderSpec, opts: ConvertOptions, family: str, folder: Path | None) -> AppPart:
    wrapper: type[nn.Module] = {"clip": AppClip, "t5": AppT5, "gemma2": AppGemma}[enc.arch]
    cls = model_class(enc)

    def build() -> tuple[nn.Module, dict[str, float]]:
        if folder is not None:
            model = cls.from_pretrained(folder, local_files_only=True, dtype=torch.float32, attn_implementation="eager")
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(opts.seed)
                model = cls(transformers_config(enc))
        return wrapper(model.eval()).eval(), {}

    vocab = config_int(enc.config, "vocab_size")

    def inputs() -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(opts.seed)
        return (torch.randint(0, vocab, (1, enc.tokens), generator=g).float(),)

    outs: tuple[tuple[str, tuple[int, ...]], ...] = (("hidden_embeds", (1, enc.tokens, enc.width)),)
    if enc.arch == "clip":
        outs += (("pooled_outputs", (1, config_int(enc.config, "projection_dim"))),)
    io = with_swift_dtypes(PackageIO((("input_ids", (1, enc.tokens)),), outs), enc.package, family)
    identity = {"config": dict(enc.config), "weights": str(folder) if folder else f"random (seed {opts.seed})"}
    return AppPart(enc.package, "text_encoder", enc.title, io, identity, enc.params, build, inputs)


def _read_config(folder: Path) -> ModelConfig:
    try:
        data = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise SnapbenchError(f"{folder / 'config.json'}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise SnapbenchError(f"{folder / 'config.json'}: not a config (a JSON object)")
    return data


def text_encoder_parts(source: ModelSource, opts: ConvertOptions, root: Path | None,
                       drop: tuple[str, ...]) -> tuple[list[AppPart], list[str]]:
    """The kept text encoders' parts and one size line for each encoder (dropped ones too)."""
    spec = dit_spec(source.spec)
    fam = spec.family
    encoders = encoders_for(spec, opts.tokens)
    keys = [e.key for e in encoders]
    unknown = [d for d in drop if d not in keys]
    if unknown:
        raise SnapbenchError(f"--drop-text-encoder {unknown[0]}: {spec.name}'s pipeline has {', '.join(keys)}")
    budget = phone_budget()
    parts, lines = [], []
    for enc in encoders:
        folder = _local(root, enc.folder)
        if folder is not None:  # a local encoder: its own config (counted, not built)
            enc = TextEncoderSpec(enc.key, enc.package, enc.title, enc.arch, _read_config(folder), enc.tokens,
                                  enc.folder, enc.published)
        line = size_line(enc, opts)
        if enc.key in drop:
            lines.append(f"{line}: left out (--drop-text-encoder {enc.key})")
            continue
        if weight_bytes(enc.params, opts) > budget.bytes:
            raise SnapbenchError(too_big_message(enc, opts, fam.key, budget))
        lines.append(line)
        parts.append(encoder_part(enc, opts, FAMILY_OF[fam.key], folder))
    return parts, lines


def backbone_part(source: ModelSource, opts: ConvertOptions, family: str) -> AppPart:
    from snapbench.converters.convert_package import example_inputs
    from snapbench.converters.dit_whole import build_whole, whole_dit_single

    single = whole_dit_single(source, opts)
    io = with_swift_dtypes(single.io, BACKBONE, family)
    return AppPart(BACKBONE, "transformer", single.title, io, dict(single.identity), single.params,
                   lambda: (build_whole(source, opts), {}), lambda: example_inputs(io, seed=opts.seed))


# -- the VAE decoders ---------------------------------------------------------------------------------------

# stabilityai/stable-diffusion-3-medium-diffusers vae/config.json: SD's VAE at 16 latent channels, no
# quant convs; PixArt-Sigma uses SDXL's VAE (SD's, 4 channels); Sana the DC-AE f32c32
SD3_VAE: ModelConfig = dict(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                               block_out_channels=[128, 256, 512, 512], norm_num_groups=32,
                               down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                               use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305,
                               shift_factor=0.0609)
SDXL_VAE: ModelConfig = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                                block_out_channels=[128, 256, 512, 512], norm_num_groups=32,
                                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                                scaling_factor=0.13025)
# mit-han-lab/dc-ae-f32c32-sana-1.0-diffusers config.json
DC_AE_F32C32: ModelConfig = dict(
    in_channels=3, latent_channels=32, attention_head_dim=32,
    encoder_block_types=["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
    decoder_block_types=["ResBlock", "ResBlock", "ResBlock", "EfficientViTBlock", "EfficientViTBlock", "EfficientViTBlock"],
    encoder_block_out_channels=[128, 256, 512, 512, 1024, 1024], decoder_block_out_channels=[128, 256, 512, 512, 1024, 1024],
    encoder_layers_per_block=[2, 2, 2, 3, 3, 3], decoder_layers_per_block=[3, 3, 3, 3, 3, 3],
    encoder_qkv_multiscales=[[], [], [], [5], [5], [5]], decoder_qkv_multiscales=[[], [], [], [5], [5], [5]],
    upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
    decoder_act_fns="silu", scaling_factor=0.41407)


def vae_config(spec: DitSpec) -> tuple[str, str, ModelConfig]:
    """(title, diffusers class, config) of the VAE a DiT's latents are decoded with; test-sized (a few
    channels, as few upsamplings as the family's factor needs) when the backbone is a tiny twin."""
    fam = spec.family
    channels = int(fam.setting(spec.config, "in_channels"))
    if fam.key == "sana":
        if channels == DC_AE_F32C32["latent_channels"]:
            return "DC-AE f32c32 decoder", "AutoencoderDC", dict(DC_AE_F32C32)
        tiny: ModelConfig = dict(DC_AE_F32C32, latent_channels=channels, attention_head_dim=4,
                    decoder_block_out_channels=[4, 4, 8, 8, 8, 8], encoder_block_out_channels=[4, 4, 8, 8, 8, 8],
                    decoder_layers_per_block=[1] * 6, encoder_layers_per_block=[1] * 6)
        return "test-sized DC-AE decoder", "AutoencoderDC", tiny
    full = SD3_VAE if fam.key == "mmdit" else SDXL_VAE
    title = "SD3 VAE decoder" if fam.key == "mmdit" else "SDXL VAE decoder"
    if channels == full["latent_channels"] and spec.config.get("sample_size", 128) >= 64:
        return title, "AutoencoderKL", dict(full)
    return f"test-sized {title}", "AutoencoderKL", dict(full, latent_channels=channels,
                                                        block_out_channels=[8, 16, 16, 16], norm_num_groups=4,
                                                        layers_per_block=1)


class DitVAEDecoder(nn.Module):
    """latent -> image: the VAE's decoder (after its post-quant conv where it has one). Scaling and shift of
    the latent stay in the app, as in Apple's pipelines."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.post_quant_conv = getattr(vae, "post_quant_conv", None)
        self.decoder = vae.decoder

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)


def vae_decoder_part(source: ModelSource, opts: ConvertOptions, family: str, root: Path | None) -> AppPart:
    import diffusers

    spec = dit_spec(source.spec)
    title, class_name, cfg = vae_config(spec)
    folder = _local(root, "vae")
    if folder is not None:
        cfg = {k: v for k, v in _read_config(folder).items() if not k.startswith("_")}
        title = f"VAE decoder from {folder}"
    cls = getattr(diffusers, class_name)
    factor = spec.family.vae_factor
    lat = opts.latent
    io = with_swift_dtypes(PackageIO((("z", (1, config_int(cfg, "latent_channels"), lat, lat)),),
                                     (("image", (1, 3, lat * factor, lat * factor)),)), "VAEDecoder", family)

    def build() -> tuple[nn.Module, dict[str, float]]:
        if folder is not None:
            vae = cls.from_pretrained(folder, local_files_only=True, torch_dtype=torch.float32)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(opts.seed)
                vae = cls(**cfg)
        return DitVAEDecoder(vae).eval(), {}

    with torch.device("meta"):
        params = sum(p.numel() for p in DitVAEDecoder(cls(**cfg)).parameters())
    identity = {"config": cfg, "weights": str(folder) if folder else f"random (seed {opts.seed})"}
    scale = 4 if lat % 4 == 0 and lat >= 32 else 1  # traced smaller: every spatial size comes from the tensors
    return AppPart("VAEDecoder", "vae_decoder", title, io, identity, params, build,
                   small_image_inputs(io, scale, opts.seed))


# -- pricing the parts (the report's end-to-end figure) ------------------------------------------------------

# A part with more parameters is priced from two slices of it (see `PricedPart`): converting T5-XXL (4.8B),
# Gemma-2-2B (2.6B) or CLIP-G (0.7B) whole holds several GB of fp32 weights and their traces, more than a
# profile may take (the 6 GB goal over the process tree); the largest part converted whole is the DC-AE
# decoder (0.16B). Sizing by parameters keeps the choice the same on every machine.
SLICE_ABOVE_PARAMS = 200_000_000
# The slices' vocabulary: the token embedding is a gather, which the cost model prices by the rows it
# returns (the prompt's tokens), not by its table, so a small table changes no estimate and keeps the
# slices small (T5-XXL's 32,128 x 4,096 table alone is 0.5 GB in fp32).
SLICE_VOCAB = 1000
_LAYERS_KEY = {"clip": "num_hidden_layers", "t5": "num_layers", "gemma2": "num_hidden_layers"}


@dataclass(frozen=True)
class PricedPart:
    """A pipeline part to price (a text encoder or the VAE decoder), as the packages that price it: the part
    itself, or, for a part too large to convert here, two slices of it with 1 and 2 of its `layers` layers
    (its config otherwise, but for the vocabulary): the cost model sums its ops, so the slices' difference
    is one layer's price and the part's is `e1 + (layers - 1) x (e2 - e1)`."""

    name: str  # the app's package name: TextEncoderT5, VAEDecoder, ...
    kind: str  # text_encoder | vae_decoder
    title: str
    params: int  # the whole part's (counted from its config)
    identity: Mapping[str, object]  # its config and shapes: what its latency table key hashes
    whole: AppPart | None = None
    slices: tuple[AppPart, AppPart] | None = None
    layers: int = 0

    @property
    def method(self) -> str:
        if self.slices is None:
            return "estimated from its converted package"
        return (f"estimated from converted 1- and 2-layer slices, extrapolated to its {self.layers} layers "
                f"(too large to convert here: {self.params / 1e9:.2f}B parameters)")


def encoder_slice(enc: TextEncoderSpec, layers: int) -> TextEncoderSpec:
    """The encoder with `layers` of its layers and the slices' vocabulary (its interface unchanged)."""
    config = {**enc.config, _LAYERS_KEY[enc.arch]: layers,
              "vocab_size": min(config_int(enc.config, "vocab_size"), SLICE_VOCAB)}
    return TextEncoderSpec(enc.key, enc.package, f"{enc.title}, {layers} of its layers", enc.arch, config,
                           enc.tokens, enc.folder, enc.published)


def slice_part(enc: TextEncoderSpec, layers: int, opts: ConvertOptions, family: str) -> AppPart:
    """A slice as an app part of its own name (the app's interface, under `TextEncoderT5Slice1`, ...)."""
    return replace(encoder_part(encoder_slice(enc, layers), opts, family, None), name=f"{enc.package}Slice{layers}")


def pricing_parts(source: ModelSource, opts: ConvertOptions, *,
                  slice_above: int = SLICE_ABOVE_PARAMS) -> list[PricedPart]:
    """Every part of the app beside the transformer, in pipeline order, each with the packages that price it.
    A part too large for a phone is priced all the same (it is the figure that says so); sizes follow a
    local pipeline folder's configs where the model came with one."""
    spec = dit_spec(source.spec)
    family = FAMILY_OF[spec.family.key]
    root = pipeline_root(source, None)
    out = []
    for enc in encoders_for(spec, opts.tokens):
        folder = _local(root, enc.folder)
        if folder is not None:
            enc = TextEncoderSpec(enc.key, enc.package, enc.title, enc.arch, _read_config(folder), enc.tokens,
                                  enc.folder, enc.published)
        identity = {"config": dict(enc.config), "tokens": enc.tokens}
        title = enc.title if enc.published else f"test-sized {enc.title}"
        layers = config_int(enc.config, _LAYERS_KEY[enc.arch])
        if enc.params > slice_above and layers > 1:
            slices = (slice_part(enc, 1, opts, family), slice_part(enc, 2, opts, family))
            out.append(PricedPart(enc.package, "text_encoder", title, enc.params, identity, slices=slices,
                                  layers=layers))
        else:
            out.append(PricedPart(enc.package, "text_encoder", title, enc.params, identity,
                                  whole=encoder_part(enc, opts, family, None)))
    vae = vae_decoder_part(source, opts, family, root)
    out.append(PricedPart(vae.name, "vae_decoder", vae.title, vae.params,
                          {"config": vae.identity["config"], "latent": opts.latent}, whole=vae))
    return out


def dit_parts(source: ModelSource, opts: ConvertOptions, *, weights: Path | None = None,
              drop: tuple[str, ...] = ()) -> tuple[list[AppPart], list[str]]:
    """The app's parts in pipeline order, and the notes to show (each text encoder's size)."""
    spec = dit_spec(source.spec)
    if opts.chunks != 1:
        raise SnapbenchError("--chunks 2 splits a UNet the way Apple's Swift package loads it; a DiT pipeline's "
                             "Transformer is one package (--whole --chunks 2 bisects it outside the app layout)")
    family = FAMILY_OF[spec.family.key]
    root = pipeline_root(source, weights)
    encoders, lines = text_encoder_parts(source, opts, root, drop)
    parts = [*encoders, backbone_part(source, opts, family), vae_decoder_part(source, opts, family, root)]
    from snapbench.converters.convert_dit import check_memory

    biggest = max(parts, key=lambda p: p.params)  # parts are built one at a time: the largest is the peak
    check_memory(f"{spec.name} {biggest.name}", biggest.params, what="--pipeline builds each part in memory in turn",
                 instead="convert on a machine with more memory" + (
                     ", or leave it out with --drop-text-encoder" if biggest.kind == "text_encoder" else ""))
    return parts, lines
