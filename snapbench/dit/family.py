"""The DiT classes snapbench handles, and per class the facts the rest of the package needs.

Each family is a small record (diffusers class, text length its pipeline uses, what its blocks are
called) plus one check of the config options snapbench cannot cut or convert faithfully; everything
else is read from the config by diffusers itself.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from snapbench.errors import SnapbenchError
from snapbench.size_limits import DEFAULT_LIMITS, LIFT_HINT, ModelTooLarge, limits_lifted


@dataclass(frozen=True)
class Family:
    key: str  # "mmdit" | "pixart" | "sana"
    class_name: str  # the diffusers class
    title: str
    tokens: int  # text tokens its pipeline feeds the backbone (the context length priced by default)
    context_key: str  # the config field with the text encoder's width
    vae_factor: int  # image pixels per latent pixel (8 for SD's VAEs, 32 for Sana's DC-AE)
    check: Callable[[Mapping[str, object]], None]
    steps: int = 50  # its diffusers pipeline's default num_inference_steps (the report's end-to-end figure)

    def diffusers_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.class_name)

    def _parameters(self) -> Mapping[str, inspect.Parameter]:
        return inspect.signature(self.diffusers_class()).parameters  # the class's __init__ arguments

    def arguments(self) -> set[str]:
        return set(self._parameters())

    def setting(self, config: Mapping[str, object], name: str) -> Any:
        """A config value, or diffusers' default for it where the config leaves it out (`Any`: what the
        class's signature holds, as `inspect` gives it; callers read it as the number they need)."""
        if name in config:
            return config[name]
        return self._parameters()[name].default


def _refuse(family: str, field: str, value: object, why: str) -> SnapbenchError:
    return SnapbenchError(f"DiT config option {field}={value!r} is not supported for {family}: {why}")


def _check_sd3(cfg: Mapping[str, object]) -> None:
    qk = cfg.get("qk_norm")
    if qk not in (None, "rms_norm"):
        raise _refuse("SD3Transformer2DModel", "qk_norm", qk, "use null (SD3) or \"rms_norm\" (SD3.5)")
    heads, head_dim = cfg.get("num_attention_heads", 18), cfg.get("attention_head_dim", 64)
    if not isinstance(heads, int) or not isinstance(head_dim, int):
        raise _refuse("SD3Transformer2DModel", "num_attention_heads x attention_head_dim", (heads, head_dim),
                      "both must be whole numbers")
    proj = cfg.get("caption_projection_dim", 1152)
    if proj != heads * head_dim:
        # diffusers builds it, but the joint attention concatenates text and image tokens of one width
        raise _refuse("SD3Transformer2DModel", "caption_projection_dim", proj,
                      f"joint attention needs it equal to num_attention_heads x attention_head_dim = {heads * head_dim}")


def _check_pixart(cfg: Mapping[str, object]) -> None:
    if cfg.get("norm_type", "ada_norm_single") != "ada_norm_single":
        raise _refuse("PixArtTransformer2DModel", "norm_type", cfg["norm_type"], "PixArt blocks use \"ada_norm_single\"")
    if cfg.get("attention_type", "default") != "default":
        raise _refuse("PixArtTransformer2DModel", "attention_type", cfg["attention_type"], "only \"default\" attention")
    extra = cfg.get("use_additional_conditions")
    if extra or (extra is None and cfg.get("sample_size", 128) == 128):
        # PixArt-alpha's resolution / aspect-ratio micro-conditions (diffusers turns them on for sample_size 128)
        raise _refuse("PixArtTransformer2DModel", "use_additional_conditions", extra,
                      "PixArt-alpha's micro-conditions are not handled; PixArt-Sigma sets it to false")


def _check_sana(cfg: Mapping[str, object]) -> None:
    if cfg.get("guidance_embeds"):
        raise _refuse("SanaTransformer2DModel", "guidance_embeds", cfg["guidance_embeds"],
                      "guidance-distilled Sana (Sprint) is not handled; Sana 600M/1.6B set it to false")
    if cfg.get("qk_norm") is not None:
        raise _refuse("SanaTransformer2DModel", "qk_norm", cfg["qk_norm"], "Sana 600M/1.6B use none")
    if cfg.get("cross_attention_dim", 2240) is None:
        raise _refuse("SanaTransformer2DModel", "cross_attention_dim", None, "text-conditioned Sana needs cross-attention")


FAMILIES: dict[str, Family] = {
    f.class_name: f for f in (
        # SD3's pipeline: 77 CLIP tokens + 256 T5 tokens (max_sequence_length) in one joint sequence
        # Steps: num_inference_steps' default in diffusers' StableDiffusion3Pipeline (28), PixArtSigmaPipeline
        # and SanaPipeline (20).
        Family("mmdit", "SD3Transformer2DModel", "MMDiT (SD3)", 333, "joint_attention_dim", 8, _check_sd3, 28),
        # PixArt-Sigma and Sana pipelines: max_sequence_length 300 (T5-XXL, Gemma-2)
        Family("pixart", "PixArtTransformer2DModel", "PixArt", 300, "caption_channels", 8, _check_pixart, 20),
        Family("sana", "SanaTransformer2DModel", "Sana", 300, "caption_channels", 32, _check_sana, 20),
    )
}


def context_key(class_name: str | None) -> str:
    """The config field holding the width of the text context a backbone reads: a DiT family's own
    (PixArt's and Sana's caption_channels, SD3's joint_attention_dim; PixArt's cross_attention_dim is its
    inner width), a UNet's cross_attention_dim."""
    family = FAMILIES.get(class_name or "")
    return family.context_key if family is not None else "cross_attention_dim"


# Keys PixArt's published configs carry over from diffusers' Transformer2DModel, which PixArt's class
# ignores; accepted at these values only.
_PIXART_INERT = {"double_self_attention": (False, None), "num_vector_embeds": (None,),
                 "only_cross_attention": (False, None), "use_linear_projection": (False, None)}


def family_of(config: Mapping[str, object], where: str) -> Family:
    name = config.get("_class_name")
    if name not in FAMILIES:
        raise SnapbenchError(f"{where}: _class_name is {name!r}; snapbench's DiTs are {', '.join(FAMILIES)}")
    return FAMILIES[str(name)]


def check_config(config: Mapping[str, object], where: str) -> Family:
    """The family of a DiT config, refusing any option snapbench does not handle (one line naming it)."""
    fam = family_of(config, where)
    allowed = fam.arguments()
    for key, value in config.items():
        if key.startswith("_") or key in allowed:
            continue
        if fam.key == "pixart" and key in _PIXART_INERT and value in _PIXART_INERT[key]:
            continue
        raise SnapbenchError(f"{where}: DiT config option {key!r} is not a {fam.class_name} argument; "
                             f"remove it (arguments: {', '.join(sorted(allowed))})")
    try:
        fam.check(config)
    except SnapbenchError as e:
        raise SnapbenchError(f"{where}: {e}") from None
    # one block slot per layer: a billion layers would fill memory before any network exists
    layers = fam.setting(config, "num_layers")
    if isinstance(layers, int) and layers > DEFAULT_LIMITS.blocks and not limits_lifted():
        raise ModelTooLarge(f"{where}: DiT config num_layers {layers:,} is far more than any real DiT has "
                            f"(at most {DEFAULT_LIMITS.blocks:,} blocks); {LIFT_HINT}")
    return fam


def init_kwargs(config: Mapping[str, object]) -> dict[str, object]:
    fam = FAMILIES[str(config["_class_name"])]
    allowed = fam.arguments()
    return {k: v for k, v in config.items() if k in allowed}
