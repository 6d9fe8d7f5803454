"""The text encoders a DiT's pipeline needs, their sizes counted from their configs, and whether each fits
a phone.

    SD3 / SD3.5  CLIP ViT-L/14 + OpenCLIP ViT-bigG/14 (77 tokens each, side by side: 2048 wide, padded to
                 4096) then T5-XXL (256 tokens) on the sequence axis; pooled: both CLIPs' projected outputs
    PixArt-Sigma T5-XXL's encoder (300 tokens)
    Sana         Gemma-2-2B's decoder stack (300 tokens; its last hidden state)

Sizes come from the config by formula (`count_params`), so stating T5-XXL's 4.76B parameters builds
nothing; a test holds each formula to the parameters of the transformers class built on the meta device.
A backbone whose text width is not the published one gets test-sized encoders of its widths (tiny twins).

Whether a part fits a phone: its weights at the chosen bits against half the memory of the largest iPhone
in the device catalog (`phone_budget`). iOS ends a foreground app that uses much more than about half the
RAM, and Apple's Swift pipeline can load the parts one at a time, so one part is what must fit; a part
over it cannot run on any iPhone, whatever the rest of the pipeline does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from snapbench.converters.model_configs import ModelConfig, config_int
from snapbench.converters.options import ConvertOptions
from snapbench.dit.spec import DitSpec
from snapbench.json_types import JSON

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel
from snapbench.errors import SnapbenchError

CLIP_TOKENS = 77
# SD3's text encoders: stabilityai/stable-diffusion-3-medium-diffusers text_encoder/, text_encoder_2/ and
# text_encoder_3/ configs (the CLIPs are CLIPTextModelWithProjection, T5 a T5EncoderModel, v1.1 XXL).
SD3_CLIP_L: ModelConfig = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                  num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                  projection_dim=768)
SD3_CLIP_G: ModelConfig = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                  num_attention_heads=20, max_position_embeddings=77, hidden_act="gelu",
                                  projection_dim=1280)
T5_XXL: ModelConfig = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                              relative_attention_num_buckets=32, relative_attention_max_distance=128,
                              feed_forward_proj="gated-gelu")
# Sana: Efficient-Large-Model/Sana_1600M_1024px_diffusers text_encoder/ (Gemma-2-2B-it's Gemma2Model)
GEMMA2_2B: ModelConfig = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                                 num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                                 max_position_embeddings=8192, sliding_window=4096, query_pre_attn_scalar=256,
                                 attn_logit_softcapping=50.0, final_logit_softcapping=30.0)


@dataclass(frozen=True)
class TextEncoderSpec:
    key: str  # what --drop-text-encoder names: clip-l | clip-g | t5 | gemma
    package: str  # the package's stem: TextEncoder | TextEncoder2 | TextEncoderT5 | TextEncoderGemma
    title: str
    arch: str  # clip | t5 | gemma2
    config: Mapping[str, JSON]
    tokens: int  # the sequence it takes (its share of the backbone's context)
    folder: str  # its subfolder in a diffusers pipeline folder
    published: bool  # the published encoder (else test-sized, for a tiny twin)

    @property
    def params(self) -> int:
        return count_params(self.arch, self.config)

    @property
    def width(self) -> int:
        return config_int(self.config, "d_model" if self.arch == "t5" else "hidden_size")


def count_params(arch: str, c: Mapping[str, JSON]) -> int:
    """Parameters of a text encoder from its config alone (no module is built)."""
    if arch == "clip":  # CLIPTextModelWithProjection: biased q/k/v/out and MLP, two LayerNorms a layer
        h, i, n = config_int(c, "hidden_size"), config_int(c, "intermediate_size"), config_int(c, "num_hidden_layers")
        layer = 4 * (h * h + h) + 2 * 2 * h + (h * i + i) + (i * h + h)
        embed = config_int(c, "vocab_size") * h + config_int(c, "max_position_embeddings") * h
        return embed + n * layer + 2 * h + h * config_int(c, "projection_dim")
    if arch == "t5":  # T5EncoderModel: no biases, RMS norms with a weight only, a gated FFN in v1.1
        d, ff, n = config_int(c, "d_model"), config_int(c, "d_ff"), config_int(c, "num_layers")
        inner = config_int(c, "num_heads") * config_int(c, "d_kv")
        gated = str(c.get("feed_forward_proj", "relu")).startswith("gated")
        layer = 4 * d * inner + 2 * d + (3 if gated else 2) * d * ff
        buckets = config_int(c, "relative_attention_num_buckets", 32) * config_int(c, "num_heads")  # first layer only
        return config_int(c, "vocab_size") * d + n * layer + buckets + d
    if arch == "gemma2":  # Gemma2Model: grouped k/v, a gated MLP, four RMS norms a layer
        h, i, n = config_int(c, "hidden_size"), config_int(c, "intermediate_size"), config_int(c, "num_hidden_layers")
        q = config_int(c, "num_attention_heads") * config_int(c, "head_dim")
        kv = config_int(c, "num_key_value_heads") * config_int(c, "head_dim")
        layer = h * q + 2 * h * kv + q * h + 3 * h * i + 4 * h
        return config_int(c, "vocab_size") * h + n * layer + h
    raise ValueError(f"no parameter formula for {arch!r}")


def bytes_per_weight(opts: ConvertOptions) -> float:
    """Bytes a weight takes in a package: fp16 (or fp32 with --precision fp32), or --weight-bits / 8."""
    if opts.weight_bits == 16:
        return 4.0 if opts.precision == "fp32" else 2.0
    return opts.weight_bits / 8


def weight_bytes(params: int, opts: ConvertOptions) -> int:
    return int(params * bytes_per_weight(opts))


@dataclass(frozen=True)
class PhoneBudget:
    device: str  # the largest iPhone's name
    ram_gb: float

    @property
    def bytes(self) -> int:
        return int(self.ram_gb * 1e9 / 2)


def phone_budget() -> PhoneBudget:
    """Half the RAM of the largest iPhone in the device catalog (see the module docstring)."""
    from snapbench.devices.catalog import list_devices

    phones = [d for d in list_devices() if d.name.startswith("iPhone")]
    big = max(phones, key=lambda d: d.ram_gb)
    return PhoneBudget(big.name, big.ram_gb)


def size_line(enc: TextEncoderSpec, opts: ConvertOptions) -> str:
    bits = f"{opts.weight_bits}-bit" if opts.weight_bits != 16 or opts.precision != "fp32" else "32-bit"
    title = enc.title if enc.published else f"test-sized {enc.title}"
    return f"{enc.package} ({title}): {enc.params:,} parameters, {_gb(weight_bytes(enc.params, opts))} at {bits} weights"


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def too_big_message(enc: TextEncoderSpec, opts: ConvertOptions, family: str, budget: PhoneBudget) -> str:
    """One line: what does not fit, and what the user can do instead."""
    smaller = [f"--weight-bits {b} gives {_gb(enc.params * b / 8)}" for b in (8, 4)
               if b < opts.weight_bits and enc.params * b / 8 <= budget.bytes]
    if family == "mmdit" and enc.key == "t5":
        instead = ("leave it out with --drop-text-encoder t5, as SD3's authors allow (zeros take its 256 tokens; "
                   "prompt following suffers most on long prompts)")
    else:
        instead = (f"precompute the prompt embeddings off the phone and leave it out with --drop-text-encoder "
                   f"{enc.key} (the app then feeds the backbone's context itself)")
    return (f"{size_line(enc, opts)}: more than any iPhone can hold ({budget.device}, {budget.ram_gb:g} GB, lets "
            f"an app use about half: {_gb(budget.bytes)}); {instead}"
            + (f", or {' / '.join(smaller)}" if smaller else ""))


def _tiny_clip(width: int) -> ModelConfig:
    from snapbench.converters.components import text_encoder_config

    return {**text_encoder_config(width)[1], "projection_dim": width}


def _tiny_t5(width: int) -> ModelConfig:
    heads = 2 if width % 2 == 0 else 1
    return dict(vocab_size=1000, d_model=width, d_kv=width // heads, d_ff=2 * width, num_layers=2, num_heads=heads,
                relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu")


def _tiny_gemma(width: int) -> ModelConfig:
    heads = 2 if width % 2 == 0 else 1
    return dict(vocab_size=1000, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=2,
                num_attention_heads=heads, num_key_value_heads=1, head_dim=width // heads,
                max_position_embeddings=512, sliding_window=256, query_pre_attn_scalar=width // heads,
                attn_logit_softcapping=50.0, final_logit_softcapping=30.0)


def sd3_token_split(tokens: int) -> tuple[int, int]:
    """SD3's context: CLIP's 77 tokens, then T5's (256 in SD3's pipeline); a short test context halves."""
    if tokens < 2:
        raise SnapbenchError(f"--tokens {tokens}: an SD3 pipeline's context holds CLIP's tokens then T5's; "
                             "use at least 2")
    clip = CLIP_TOKENS if tokens >= 2 * CLIP_TOKENS else tokens // 2
    return clip, tokens - clip


def encoders_for(spec: DitSpec, tokens: int) -> list[TextEncoderSpec]:
    """The text encoders `spec`'s pipeline runs, in its order, at the backbone's context length."""
    fam, cfg = spec.family, spec.config
    width = int(fam.setting(cfg, fam.context_key))
    if fam.key == "mmdit":
        pooled = int(fam.setting(cfg, "pooled_projection_dim"))
        published = (width, pooled) == (4096, 2048)
        first = pooled // 3 if not published else 768
        l_cfg, g_cfg = (SD3_CLIP_L, SD3_CLIP_G) if published else (_tiny_clip(first), _tiny_clip(pooled - first))
        clip, t5 = sd3_token_split(tokens)
        return [TextEncoderSpec("clip-l", "TextEncoder", "CLIP ViT-L/14", "clip", l_cfg, clip, "text_encoder",
                                published),
                TextEncoderSpec("clip-g", "TextEncoder2", "OpenCLIP ViT-bigG/14", "clip", g_cfg, clip,
                                "text_encoder_2", published),
                TextEncoderSpec("t5", "TextEncoderT5", "T5-XXL encoder", "t5", T5_XXL if published else _tiny_t5(width),
                                t5, "text_encoder_3", published)]
    if fam.key == "pixart":
        published = width == T5_XXL["d_model"]
        return [TextEncoderSpec("t5", "TextEncoderT5", "T5-XXL encoder", "t5", T5_XXL if published else _tiny_t5(width),
                                tokens, "text_encoder", published)]
    published = width == GEMMA2_2B["hidden_size"]
    return [TextEncoderSpec("gemma", "TextEncoderGemma", "Gemma-2-2B", "gemma2",
                            GEMMA2_2B if published else _tiny_gemma(width), tokens, "text_encoder", published)]


def transformers_config(enc: TextEncoderSpec) -> PretrainedConfig:
    from transformers import CLIPTextConfig, Gemma2Config, T5Config

    if enc.arch == "clip":
        return CLIPTextConfig(**enc.config, attn_implementation="eager")
    if enc.arch == "t5":
        return T5Config(**enc.config, is_encoder_decoder=False, use_cache=False, attn_implementation="eager")
    return Gemma2Config(**enc.config, use_cache=False, attn_implementation="eager")


def model_class(enc: TextEncoderSpec) -> type[PreTrainedModel]:
    from transformers import CLIPTextModelWithProjection, Gemma2Model, T5EncoderModel

    return {"clip": CLIPTextModelWithProjection, "t5": T5EncoderModel, "gemma2": Gemma2Model}[enc.arch]
