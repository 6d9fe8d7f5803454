"""Pipeline parts: `convert_component("text_encoder" | "vae_decoder" | "unet", ...)`.

Configs are built here (no hub downloads); weights are seeded random unless `weights` names a local
folder (the part's own folder, or a diffusers pipeline folder holding text_encoder/ or vae/).

- text_encoder: transformers CLIPTextModel. The config follows the UNet's context width: 768 -> CLIP
  ViT-L/14 (SD-v1.x, 123M params), 1024 -> OpenCLIP ViT-H/14 text tower (SD-2.x); anything else is a
  test-sized 2-layer encoder of that width. Batch 1 and `tokens` long: SD runs it twice per image
  (prompt and empty prompt for guidance), as the paper counts. Output: last_hidden_state, the UNet's
  context.
- vae_decoder: diffusers AutoencoderKL's post_quant_conv + decoder (latent -> image; the 1/0.18215
  latent scaling stays in the pipeline, as in Apple's ml-stable-diffusion). SD's VAE config; for a
  `snapfusion*` model the SnapFusion decoder: every block_out_channels halved (128/256/512/512 ->
  64/128/256/256), 32 GroupNorm groups kept (channels per group halve), same depth and mid attention:
  "50% uniform channel pruning", which gives about a quarter of the parameters (the paper: 13M).
  Test-sized UNets (first stage under 64 channels) get a test-sized VAE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from snapbench.choices import check_choice
from snapbench.converters.cache import file_stat_fingerprint
from snapbench.converters.model_configs import ModelConfig, config_int, config_ints
from snapbench.converters.options import COMPONENTS, ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.converters.result import ConvertResult
from snapbench.converters.whole_model import SingleModel, convert_single
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.specs.layout import text_embeds_dim

CLIP_VIT_L_14: ModelConfig = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                     num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                     projection_dim=768)
OPENCLIP_VIT_H_14: ModelConfig = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                         num_hidden_layers=23, num_attention_heads=16, max_position_embeddings=77,
                                         hidden_act="gelu", projection_dim=1024)
# SDXL's second encoder: stabilityai/stable-diffusion-xl-base-1.0 text_encoder_2/config.json
# (CLIPTextModelWithProjection, 694,659,840 params); its first is CLIP_VIT_L_14 (123,060,480).
OPENCLIP_VIT_BIGG_14: ModelConfig = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                                            num_hidden_layers=32, num_attention_heads=20, max_position_embeddings=77,
                                            hidden_act="gelu", projection_dim=1280, bos_token_id=0, eos_token_id=2,
                                            pad_token_id=1)
SD_VAE: ModelConfig = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                              block_out_channels=[128, 256, 512, 512], norm_num_groups=32, sample_size=512,
                              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                              scaling_factor=0.18215)


def text_encoder_config(context_dim: int) -> tuple[str, ModelConfig]:
    if context_dim == 768:
        return "CLIP ViT-L/14 text encoder", dict(CLIP_VIT_L_14)
    if context_dim == 1024:
        return "OpenCLIP ViT-H/14 text encoder", dict(OPENCLIP_VIT_H_14)
    heads = 2 if context_dim % 2 == 0 else 1
    return f"test-sized text encoder ({context_dim} wide)", dict(
        vocab_size=1000, bos_token_id=998, eos_token_id=999, pad_token_id=1, hidden_size=context_dim, intermediate_size=4 * context_dim, num_hidden_layers=2,
        num_attention_heads=heads, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=context_dim)


def dual_text_encoder_configs(context_dim: int, pooled_dim: int) -> tuple[str, ModelConfig, ModelConfig]:
    """SDXL-class (text_time) UNets read two encoders' penultimate states side by side (context =
    width 1 + width 2) and the second one's pooled, projected output (text_embeds, pooled_dim wide)."""
    first = context_dim - pooled_dim
    if (first, pooled_dim) == (768, 1280):
        return ("SDXL text encoders (CLIP ViT-L/14 + OpenCLIP ViT-bigG/14)", dict(CLIP_VIT_L_14),
                dict(OPENCLIP_VIT_BIGG_14))
    if first < 1:
        raise SnapbenchError(f"context width {context_dim} is not wider than the pooled text embedding ({pooled_dim}); "
                             "an SDXL-class UNet's context is both text encoders' widths side by side")
    _, one = text_encoder_config(first)
    _, two = text_encoder_config(pooled_dim)
    return f"test-sized SDXL-style text encoders ({first} + {pooled_dim} wide)", one, two


def vae_config(source: ModelSource) -> tuple[str, ModelConfig]:
    snapfusion = source.spec.name.startswith("snapfusion")
    test_sized = source.spec.base_config["block_out_channels"][0] < 64
    cfg = dict(SD_VAE)
    if test_sized:
        cfg.update(block_out_channels=[8, 16, 16, 16], norm_num_groups=4, layers_per_block=1)
    if snapfusion:
        cfg["block_out_channels"] = [c // 2 for c in config_ints(cfg, "block_out_channels")]
    name = ("SnapFusion VAE decoder (50% channels)" if snapfusion else "SD VAE decoder")
    return (f"test-sized {name}" if test_sized else name), cfg


# The weights file stems: transformers' model(.fp16).safetensors, diffusers' diffusion_pytorch_model(...)
TRANSFORMERS_STEM, DIFFUSERS_STEM = "model", "diffusion_pytorch_model"


@dataclass(frozen=True)
class PartWeights:
    """Which weights of a part folder are read: the variant (None: the plain file) and the files."""

    folder: Path
    variant: str | None
    files: tuple[str, ...]  # relative to the folder's parent: text_encoder/model.fp16.safetensors

    def describe(self) -> str:
        return ", ".join(self.files) + (f" ({self.variant} variant)" if self.variant else "")


def part_weights(folder: Path, preferred: str | None, stem: str) -> PartWeights:
    from snapbench.model.loading import _weight_files, part_variant

    variant = part_variant(folder, preferred, stem)
    files = tuple(f"{folder.name}/{f.name}" for f in _weight_files(folder, variant, stem))
    return PartWeights(folder, variant, files)


def load_text_encoder(w: PartWeights, cls: type[nn.Module] | None = None) -> nn.Module:
    """A CLIPTextModel (or `cls`: SDXL's second encoder is a CLIPTextModelWithProjection) in fp32 whatever
    the checkpoint's dtype: transformers would otherwise load a config saying "dtype": "float16" in fp16,
    and the trace's fp16 layer norm then meets coremltools' fp32 epsilon. The package's precision is
    ConvertOptions.precision's business, not the checkpoint's."""
    from transformers import CLIPTextModel

    cls = cls or CLIPTextModel
    try:
        return cls.from_pretrained(w.folder, local_files_only=True, use_safetensors=True, variant=w.variant,
                                   dtype=torch.float32, attn_implementation="eager")
    except (OSError, ValueError) as e:
        raise SnapbenchError(f"{w.folder}: cannot load a {cls.__name__} ({e})") from None


def text_context_dim(source: ModelSource) -> int:
    """The UNet's context width (cross_attention_dim; the first stage's when given per stage)."""
    ctx = source.spec.base_config.get("cross_attention_dim", 768)
    return int(ctx[0] if isinstance(ctx, (list, tuple)) else ctx)


def load_vae(w: PartWeights) -> nn.Module:
    """An AutoencoderKL in fp32 whatever the checkpoint's dtype (see load_text_encoder)."""
    from diffusers import AutoencoderKL

    try:
        return AutoencoderKL.from_pretrained(w.folder, local_files_only=True, use_safetensors=True,
                                             variant=w.variant, torch_dtype=torch.float32)
    except (OSError, ValueError) as e:
        raise SnapbenchError(f"{w.folder}: cannot load an AutoencoderKL ({e})") from None


def _part_folder(weights: str | os.PathLike | None, sub: str) -> Path | None:
    if weights is None:
        return None
    p = Path(weights)
    for candidate in (p, p / sub):
        if (candidate / "config.json").is_file():
            return candidate
    raise SnapbenchError(f"{p}: no config.json there or in {sub}/ (give the {sub} folder or a pipeline folder)")


class TextEncoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        # No loss is ever computed here; naming none keeps torch.jit.trace, which reads every attribute,
        # from tripping transformers' "loss_type ... unrecognized" notice on stderr.
        model.loss_function = None
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, return_dict=False)[0]


class VAEDecoder(nn.Module):
    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        self.post_quant_conv = vae.post_quant_conv
        self.decoder = vae.decoder

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latent))


class DualTextEncoder(nn.Module):
    """SDXL's text conditioning: both encoders' penultimate hidden states side by side (the UNet's
    context) and the second encoder's projected pooled output (the UNet's text_embeds), as diffusers'
    StableDiffusionXLPipeline.encode_prompt builds them."""

    def __init__(self, first: nn.Module, second: nn.Module) -> None:
        super().__init__()
        first.loss_function = second.loss_function = None  # see TextEncoder
        self.first, self.second = first, second

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        one = self.first(input_ids=input_ids, output_hidden_states=True)
        two = self.second(input_ids=input_ids, output_hidden_states=True)
        context = torch.cat([one.hidden_states[-2], two.hidden_states[-2]], dim=-1)
        return context, two.text_embeds


def _meta_params(make) -> int:
    """Parameters of a part, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return sum(p.numel() for p in make().parameters())


def text_encoder_single(source: ModelSource, opts: ConvertOptions, weights: str | os.PathLike | None) -> SingleModel:
    from transformers import CLIPTextConfig, CLIPTextModel

    ctx = text_context_dim(source)
    pooled = text_embeds_dim(source.spec.base_config)
    if pooled is not None:
        return _dual_text_encoder_single(source, opts, weights, ctx, pooled)
    title, cfg = text_encoder_config(ctx)
    folder = _part_folder(weights, "text_encoder")
    if opts.tokens > config_int(cfg, "max_position_embeddings"):
        raise SnapbenchError(f"--tokens {opts.tokens}: the text encoder takes at most {cfg['max_position_embeddings']}")

    read = part_weights(folder, source.variant, TRANSFORMERS_STEM) if folder is not None else None

    def build() -> nn.Module:
        if read is not None:
            model = load_text_encoder(read)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(opts.seed)
                # eager attention: the SDPA path traces to ops coremltools handles less well
                model = CLIPTextModel(CLIPTextConfig(**cfg, attn_implementation="eager"))
        return TextEncoder(model.eval())

    width = config_int(cfg, "hidden_size")
    io = PackageIO((("input_ids", (1, opts.tokens)),), (("last_hidden_state", (1, opts.tokens, width)),),
                   int_inputs=frozenset({"input_ids"}))
    fp = file_stat_fingerprint(list(folder.iterdir())) if folder else {"random_seed": opts.seed}
    params = _meta_params(lambda: CLIPTextModel(CLIPTextConfig(**cfg)))
    return SingleModel("text_encoder", title, str(source.ref), source.spec.name, io, build,
                       {"config": cfg, "weights": str(fp), **_read(read)}, params=params)


def _dual_text_encoder_single(source: ModelSource, opts: ConvertOptions, weights: str | os.PathLike | None,
                              ctx: int, pooled: int) -> SingleModel:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    title, cfg1, cfg2 = dual_text_encoder_configs(ctx, pooled)
    if weights is not None:
        raise SnapbenchError("--weights for SDXL's two text encoders is not supported yet; profile them with random "
                             "weights (latency does not depend on weight values)")
    if opts.tokens > config_int(cfg1, "max_position_embeddings"):
        raise SnapbenchError(f"--tokens {opts.tokens}: the text encoder takes at most {cfg1['max_position_embeddings']}")

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(opts.seed)
            first = CLIPTextModel(CLIPTextConfig(**cfg1, attn_implementation="eager"))
            second = CLIPTextModelWithProjection(CLIPTextConfig(**cfg2, attn_implementation="eager"))
        return DualTextEncoder(first.eval(), second.eval()).eval()

    io = PackageIO((("input_ids", (1, opts.tokens)),),
                   (("last_hidden_state", (1, opts.tokens, ctx)), ("text_embeds", (1, pooled))),
                   int_inputs=frozenset({"input_ids"}))
    params = _meta_params(lambda: CLIPTextModel(CLIPTextConfig(**cfg1))) + \
        _meta_params(lambda: CLIPTextModelWithProjection(CLIPTextConfig(**cfg2)))
    return SingleModel("text_encoder", title, str(source.ref), source.spec.name, io, build,
                       {"config": {"text_encoder": cfg1, "text_encoder_2": cfg2}, "weights": str({"random_seed": opts.seed})},
                       params=params)


def vae_decoder_single(source: ModelSource, opts: ConvertOptions, weights: str | os.PathLike | None) -> SingleModel:
    from diffusers import AutoencoderKL

    title, cfg = vae_config(source)
    folder = _part_folder(weights, "vae")

    read = part_weights(folder, source.variant, DIFFUSERS_STEM) if folder is not None else None

    def build() -> nn.Module:
        if read is not None:
            vae = load_vae(read)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(opts.seed)
                vae = AutoencoderKL(**cfg)
        return VAEDecoder(vae).eval()

    scale = 2 ** (len(config_ints(cfg, "block_out_channels")) - 1)
    lat = opts.latent
    io = PackageIO((("latent", (1, config_int(cfg, "latent_channels"), lat, lat)),), (("image", (1, 3, lat * scale, lat * scale)),))
    fp = file_stat_fingerprint(list(folder.iterdir())) if folder else {"random_seed": opts.seed}
    params = _meta_params(lambda: VAEDecoder(AutoencoderKL(**cfg)))
    return SingleModel("vae_decoder", title, str(source.ref), source.spec.name, io, build,
                       {"config": cfg, "weights": str(fp), **_read(read)}, params=params)


def _read(w: PartWeights | None) -> dict[str, str]:
    """The identity entry naming the files read: part of the cache key, so another variant converts anew."""
    return {"read": w.describe()} if w is not None else {}


def convert_component(component: str, source: ModelSource, out_dir: Path, opts: ConvertOptions = ConvertOptions(),
                      *, weights: Path | None = None, progress: bool = True) -> ConvertResult:
    """Convert one pipeline part of `source` (its UNet config decides the text encoder and VAE; `weights`:
    their folder, or a pipeline folder holding them). Called through `converters.entry.convert`."""
    check_choice("--component", component, COMPONENTS)
    if opts.chunks != 1 and component != "unet":
        raise SnapbenchError("--chunks applies to the UNet only (--whole or --component unet)")
    if component == "unet":
        from snapbench.converters.whole_unet import convert_whole_unet

        return convert_whole_unet(source, out_dir, opts, progress=progress)
    make = text_encoder_single if component == "text_encoder" else vae_decoder_single
    return convert_single(make(source, opts, weights), out_dir, opts, progress=progress)
