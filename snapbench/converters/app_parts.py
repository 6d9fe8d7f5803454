"""The parts of an app pipeline, named and shaped as Apple's Swift `StableDiffusion` package loads them.

Resource names and interfaces (apple/ml-stable-diffusion, swift/StableDiffusion):
- TextEncoder: input_ids float32 (1, 77) (token ids as floats: the Swift side fills an MLShapedArray<Float32>)
  -> last_hidden_state (1, 77, D), pooled_outputs (1, D).
- SDXL (StableDiffusionXLPipeline.swift): TextEncoder (CLIP ViT-L/14) and TextEncoder2 (OpenCLIP ViT-bigG/14
  with its projection), each input_ids -> hidden_embeds (1, 77, width; the penultimate layer's states) and
  pooled_outputs (1, width); Swift puts both hidden_embeds side by side as the UNet's 2048-wide context and
  TextEncoder2's pooled_outputs in as the UNet's text_embeds (B, 1280), beside time_ids (B, 6).
- Unet: sample (2, 4, H, W), timestep (2,), encoder_hidden_states (2, D, 1, 77) -> noise_pred; batch 2 for
  classifier-free guidance. The Swift pipeline always hands the UNet its context as (B, D, 1, S)
  ("toHiddenStates"), whichever attention the package uses. UnetChunk1 / UnetChunk2: see unet_chunks.py;
  the Swift package feeds chunk 2 chunk 1's outputs merged with the original inputs, by name.
- VAEDecoder: z (1, 4, H, W) -> image (1, 3, 8H, 8W); the 1/0.18215 latent scale stays in Swift.
- VAEEncoder (image-to-image, optional): z (1, 3, 8H, 8W) -> latent (1, 8, H, W), the mean and log-variance
  that Swift samples from.
- vocab.json, merges.txt: the CLIP BPE tokenizer, read by Swift's BPETokenizer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from snapbench.converters.components import (
    DIFFUSERS_STEM,
    load_vae,
    part_weights,
    text_encoder_single,
    vae_config,
    vae_decoder_single,
)
from snapbench.converters.model_configs import ModelConfig, config_int, config_ints
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.converters.swift_interface import DEFAULT_FAMILY, XL_FAMILY, with_swift_dtypes
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource

TOKENIZER_FILES = ("vocab.json", "merges.txt")


@dataclass
class AppPart:
    name: str  # the package's file stem, as Swift looks it up: TextEncoder, Unet, UnetChunk1, VAEDecoder, ...
    kind: str  # text_encoder | unet | vae_decoder | vae_encoder
    title: str
    io: PackageIO
    identity: Mapping[str, object]  # what the package's cache key hashes besides the options
    params: int
    build: Callable[[], tuple[nn.Module, dict[str, float]]]  # the module, and PSNR (dB) of its ANE rewrites
    # what to trace with (None: random normals of the interface's shapes). Smaller than the interface
    # where the traced graph keeps every shape symbolic (batch, image size), so the one forward pass that
    # tracing costs is cheaper; the package still gets the interface's shapes (see trace_io).
    inputs: Callable[[], tuple[torch.Tensor, ...]] | None = None
    psnr_db: dict[str, float] = field(default_factory=dict)
    vocab: int | None = None  # a text encoder's vocabulary: the tokenizer copied beside it must have as many ids


@dataclass(frozen=True)
class ModelFolder:
    """What a pipeline folder (diffusers layout) has beside the UNet; None: not there."""

    root: Path | None
    text_encoder: Path | None
    vae: Path | None
    tokenizer: Path | None
    text_encoder_2: Path | None = None
    xl: bool = False  # an SDXL-class pipeline: text_encoder_2/ is one of its parts

    def missing(self) -> list[str]:
        if self.root is None:  # a preset or spec: every part is built from its config with random weights
            return []
        gone = []
        if self.text_encoder is None:
            gone.append(f"text_encoder (no {self.root / 'text_encoder' / 'config.json'})")
        if self.xl and self.text_encoder_2 is None:
            gone.append(f"text_encoder_2 (no {self.root / 'text_encoder_2' / 'config.json'})")
        if self.vae is None:
            gone.append(f"vae (no {self.root / 'vae' / 'config.json'})")
        if self.tokenizer is None:
            gone.append(f"tokenizer (no {self.root / 'tokenizer' / 'vocab.json'} + merges.txt)")
        return gone


def model_folder(model: str | os.PathLike | ModelSource, weights: str | os.PathLike | None, *,
                 xl: bool = False) -> ModelFolder:
    """The pipeline folder the parts come from: --weights if given, else --model when it is a folder.

    A folder counts as a pipeline (and a part it lacks as missing) when it has diffusers' model_index.json
    or any of text_encoder/, text_encoder_2/, vae/, tokenizer/ (`xl`: the UNet is SDXL-class, so
    text_encoder_2/ is expected). A UNet-only folder (a diffusers UNet, an `evolve` run) is
    not one: the other parts are then built from their configs with seeded random weights, as for presets.
    """
    ref = model.ref if isinstance(model, ModelSource) else model
    root = next((Path(c) for c in (weights, ref) if c is not None and Path(str(c)).is_dir()), None)
    marks = ("model_index.json", "text_encoder", "text_encoder_2", "vae", "tokenizer")
    if root is None or not any((root / m).exists() for m in marks):
        return ModelFolder(None, None, None, None, xl=xl)

    def sub(name: str, needed: tuple[str, ...]) -> Path | None:
        p = root / name
        return p if all((p / f).is_file() for f in needed) else None

    return ModelFolder(root, sub("text_encoder", ("config.json",)), sub("vae", ("config.json",)),
                       sub("tokenizer", TOKENIZER_FILES), sub("text_encoder_2", ("config.json",)), xl)


def check_tokenizer(folder: ModelFolder, text_encoder_vocab: int) -> None:
    """The tokenizer's vocabulary must be the text encoder's: other ids would index the wrong embeddings."""
    if folder.tokenizer is None:
        return
    vocab_file = folder.tokenizer / "vocab.json"
    try:
        vocab = json.loads(vocab_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SnapbenchError(f"{vocab_file}: not a readable JSON vocabulary ({e})") from None
    if not isinstance(vocab, dict) or len(vocab) != text_encoder_vocab:
        n = len(vocab) if isinstance(vocab, dict) else "no"
        raise SnapbenchError(f"{vocab_file}: {n} tokens, but the text encoder has a vocabulary of "
                             f"{text_encoder_vocab}; the tokenizer and text_encoder folders are from different models")


def text_encoder_vocab(folder: ModelFolder, default: int) -> int:
    if folder.text_encoder is None:
        return default
    try:
        return int(json.loads((folder.text_encoder / "config.json").read_text())["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SnapbenchError(f"{folder.text_encoder / 'config.json'}: no readable vocab_size ({e})") from None


class AppTextEncoder(nn.Module):
    """CLIPTextModel behind Apple's interface: float token ids in, both outputs back."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        clip.loss_function = None  # see components.TextEncoder: keeps jit.trace quiet
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.clip(input_ids=input_ids.to(torch.int32), return_dict=False)
        return out[0], out[1]


class VAEEncoder(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = vae.quant_conv

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(image))


def text_encoder_part(source: ModelSource, opts: ConvertOptions, folder: ModelFolder) -> AppPart:
    single = text_encoder_single(source, opts, folder.text_encoder)
    last = single.io.outputs[0][1]  # (1, tokens, width)
    assert last is not None, "text_encoder_single declares its output shape"
    io = with_swift_dtypes(PackageIO((("input_ids", (1, opts.tokens)),),
                                     (("last_hidden_state", last), ("pooled_outputs", (1, last[-1])))), "TextEncoder")
    config = single.identity["config"]
    assert isinstance(config, dict), "text_encoder_single records its config"
    vocab = text_encoder_vocab(folder, config_int(config, "vocab_size"))

    def build() -> tuple[nn.Module, dict[str, float]]:
        return AppTextEncoder(single.build().model), {}

    def inputs() -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(opts.seed)
        return (torch.randint(0, vocab, (1, opts.tokens), generator=g).float(),)

    return AppPart("TextEncoder", "text_encoder", single.title, io, dict(single.identity), single.params, build,
                   inputs, vocab=vocab)


class AppTextEncoderXL(nn.Module):
    """One of SDXL's text encoders behind Apple's --xl-version interface: float token ids in, the penultimate
    layer's hidden states (what SDXL's UNet reads) and the pooled output out: CLIPTextModelWithProjection's
    projected text_embeds for TextEncoder2, CLIPTextModel's pooler_output for TextEncoder."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        clip.loss_function = None  # see components.TextEncoder: keeps jit.trace quiet
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.clip(input_ids=input_ids.to(torch.int32), output_hidden_states=True)
        pooled = out.text_embeds if hasattr(out, "text_embeds") else out.pooler_output
        return out.hidden_states[-2], pooled


def _clip_folder_config(folder: Path) -> ModelConfig:
    try:
        cfg = json.loads((folder / "config.json").read_text())
        return {k: cfg[k] for k in ("vocab_size", "hidden_size", "projection_dim", "max_position_embeddings")}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SnapbenchError(f"{folder / 'config.json'}: not a CLIP text encoder config ({e})") from None


def xl_text_encoder_parts(source: ModelSource, opts: ConvertOptions, folder: ModelFolder) -> list[AppPart]:
    """TextEncoder and TextEncoder2 of an SDXL-class pipeline: from the folder's text_encoder/ and
    text_encoder_2/ when it is a pipeline folder (a part it lacks is left out: ModelFolder.missing says so),
    else built from the configs that fit the UNet's widths, with seeded random weights."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from snapbench.converters.cache import file_stat_fingerprint
    from snapbench.converters.components import (
        TRANSFORMERS_STEM,
        dual_text_encoder_configs,
        load_text_encoder,
        text_context_dim,
    )
    from snapbench.specs.layout import text_embeds_dim

    ctx, pooled = text_context_dim(source), text_embeds_dim(source.spec.base_config)
    assert pooled is not None, "xl_text_encoder_parts is for text_time UNets"
    title, cfg1, cfg2 = dual_text_encoder_configs(ctx, pooled)
    sides = (("TextEncoder", folder.text_encoder, cfg1, CLIPTextModel, "first"),
             ("TextEncoder2", folder.text_encoder_2, cfg2, CLIPTextModelWithProjection, "second"))
    widths = []
    for _, sub, cfg, _, _ in sides:
        got = _clip_folder_config(sub) if sub is not None else cfg
        width = config_int(got, "hidden_size")
        widths.append((width, config_int(got, "projection_dim") if got.get("projection_dim") else width))
    if folder.text_encoder is not None and folder.text_encoder_2 is not None and \
            (widths[0][0] + widths[1][0], widths[1][1]) != (ctx, pooled):
        raise SnapbenchError(f"{folder.root}: text_encoder/ + text_encoder_2/ are {widths[0][0]} + {widths[1][0]} wide "
                             f"with a {widths[1][1]}-wide projection, but the UNet reads a {ctx}-wide context and "
                             f"{pooled}-wide text_embeds; the folders are from different models")
    parts = []
    for name, sub, cfg, cls, which in sides:
        if folder.root is not None and sub is None:
            continue
        read = part_weights(sub, source.variant, TRANSFORMERS_STEM) if sub is not None else None
        config = _clip_folder_config(sub) if sub is not None else cfg
        if opts.tokens > config_int(config, "max_position_embeddings"):
            raise SnapbenchError(f"--tokens {opts.tokens}: {name} takes at most {config['max_position_embeddings']}")

        def build(read=read, cfg=cfg, cls=cls) -> tuple[nn.Module, dict[str, float]]:
            if read is not None:
                model = load_text_encoder(read, cls)
            else:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(opts.seed)
                    # eager attention: the SDPA path traces to ops coremltools handles less well
                    model = cls(CLIPTextConfig(**cfg, attn_implementation="eager"))
            return AppTextEncoderXL(model.eval()).eval(), {}

        vocab = config_int(config, "vocab_size")

        def inputs(vocab=vocab) -> tuple[torch.Tensor, ...]:
            g = torch.Generator().manual_seed(opts.seed)
            return (torch.randint(0, vocab, (1, opts.tokens), generator=g).float(),)

        width = config_int(config, "hidden_size")
        pooled_width = (config_int(config, "projection_dim") if config.get("projection_dim") else width) if cls is CLIPTextModelWithProjection else width
        io = with_swift_dtypes(PackageIO((("input_ids", (1, opts.tokens)),),
                                         (("hidden_embeds", (1, opts.tokens, width)),
                                          ("pooled_outputs", (1, pooled_width)))), name, XL_FAMILY)
        full = CLIPTextConfig.from_pretrained(sub, local_files_only=True) if sub is not None else CLIPTextConfig(**cfg)
        with torch.device("meta"):
            params = sum(p.numel() for p in cls(full).parameters())
        fp = file_stat_fingerprint(list(sub.iterdir())) if sub is not None else {"random_seed": opts.seed}
        identity = {"config": config if sub is not None else cfg, "weights": str(fp),
                    **({"read": read.describe()} if read else {})}
        parts.append(AppPart(name, "text_encoder", f"{title}: the {which}", io, identity, params, build, inputs,
                             vocab=vocab))
    return parts


TRACE_LATENT = 8  # the VAE is traced at this latent size (64x64 pixels), converted at the real one


def small_image_inputs(io: PackageIO, scale: int, seed: int) -> Callable[[], tuple[torch.Tensor, ...]]:
    """Trace inputs for a VAE part: the interface's shape with height and width divided by `scale`.

    The VAE's graph (convs, GroupNorm, nearest upsampling, its mid-block attention) takes every spatial
    size from the tensors, so the trace at a small size is the same program; tests check that the traced
    graph run at the full size equals the module there, and the package's output shape is checked on reload.
    """
    def inputs() -> tuple[torch.Tensor, ...]:
        g = torch.Generator().manual_seed(seed)
        return tuple(torch.randn((*s[:-2], s[-2] // scale, s[-1] // scale), generator=g) for _, s in io.inputs)

    return inputs


def vae_decoder_part(source: ModelSource, opts: ConvertOptions, folder: ModelFolder,
                     family: str = DEFAULT_FAMILY) -> AppPart:
    single = vae_decoder_single(source, opts, folder.vae)
    io = with_swift_dtypes(PackageIO((("z", single.io.inputs[0][1]),), (("image", single.io.outputs[0][1]),)),
                           "VAEDecoder", family)
    scale = max(1, opts.latent // TRACE_LATENT) if opts.latent % TRACE_LATENT == 0 else 1
    return AppPart("VAEDecoder", "vae_decoder", single.title, io, dict(single.identity), single.params,
                   lambda: (single.build(), {}), small_image_inputs(io, scale, opts.seed))


def vae_encoder_part(source: ModelSource, opts: ConvertOptions, folder: ModelFolder,
                     family: str = DEFAULT_FAMILY) -> AppPart:
    from diffusers import AutoencoderKL

    from snapbench.converters.cache import file_stat_fingerprint

    title, cfg = vae_config(source)
    title = title.replace("decoder", "encoder")
    scale = 2 ** (len(config_ints(cfg, "block_out_channels")) - 1)
    lat = opts.latent
    io = with_swift_dtypes(PackageIO((("z", (1, 3, lat * scale, lat * scale)),),
                                     (("latent", (1, 2 * config_int(cfg, "latent_channels"), lat, lat)),)), "VAEEncoder", family)

    read = part_weights(folder.vae, source.variant, DIFFUSERS_STEM) if folder.vae is not None else None

    def build() -> tuple[nn.Module, dict[str, float]]:
        if read is not None:
            vae = load_vae(read)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(opts.seed)
                vae = AutoencoderKL(**cfg)
        return VAEEncoder(vae).eval(), {}

    with torch.device("meta"):
        params = sum(p.numel() for p in VAEEncoder(AutoencoderKL(**cfg)).parameters())
    fp = file_stat_fingerprint(list(folder.vae.iterdir())) if folder.vae else {"random_seed": opts.seed}
    trace_scale = max(1, lat // TRACE_LATENT) if lat % TRACE_LATENT == 0 else 1
    identity = {"config": cfg, "weights": str(fp), **({"read": read.describe()} if read else {})}
    return AppPart("VAEEncoder", "vae_encoder", title, io, identity, params, build,
                   small_image_inputs(io, trace_scale, opts.seed))
