"""Where blocks are: the execution-ordered block slots of a diffusers UNet, derived from its config alone.

A slot is one RB, CA or auxiliary module of the base UNet. The layout knows each slot's paper stage and
stage-local name (RB1, CA2, ...), its diffusers module path, and the two skip-connection facts the
elastic UNet needs: which slots close a skip (conv_in, each down layer, each downsampler) and which
consume one (every up-stage ResNet concatenates a skip onto its input).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from snapbench.errors import SnapbenchError
from snapbench.specs.config_values import check_config_values
from snapbench.specs.stages import down_stage, stage_slug, up_stage

BlockKind = Literal["RB", "CA", "TB", "aux"]  # TB: a diffusion transformer's block (snapbench/dit/)

SUPPORTED_DOWN = {"CrossAttnDownBlock2D", "DownBlock2D"}
SUPPORTED_UP = {"CrossAttnUpBlock2D", "UpBlock2D"}
SUPPORTED_MID = {"UNetMidBlock2DCrossAttn", None}

# Aux slot names and how users see them.
_AUX_TITLES = {
    "time_embedding": "TimeEmbedding",
    "add_embedding": "TextTimeEmbedding",
    "conv_in": "ConvIn",
    "downsample": "Downsample",
    "upsample": "Upsample",
    "conv_out": "ConvOut",
    # diffusion transformers (snapbench/dit/)
    "patch_embed": "PatchEmbed",
    "time_embed": "TimeEmbed",
    "caption_embed": "CaptionEmbed",
    "final_layer": "FinalLayer",
}


@dataclass(frozen=True)
class Slot:
    kind: BlockKind
    stage: str
    name: str  # stage-local: "RB1", "CA2", or an aux name such as "downsample"
    module_path: str  # diffusers path, e.g. "up_blocks.1.attentions.0"
    skip_after: bool = False  # the UNet stores a skip connection after this slot (and its copies)
    takes_skip: bool = False  # an up-stage ResNet: its input is cat(hidden, popped skip)

    @property
    def index(self) -> int | None:
        return int(self.name[2:]) if self.kind in ("RB", "CA", "TB") else None

    @property
    def block_id(self) -> str:
        """Paper-style id: 'CA[Up-1, 2]'; aux blocks: 'Downsample[Down-1]', 'ConvIn'. A DiT's transformer
        blocks are numbered by depth through the stack: 'TB[DiT-2, 7]' is transformer_blocks.6."""
        if self.kind == "aux":
            title = _AUX_TITLES[self.name]
            return f"{title}[{self.stage}]" if self.name in ("downsample", "upsample") else title
        return f"{self.kind}[{self.stage}, {self.index}]"

    @property
    def file_id(self) -> str:
        """File-safe id: 'up1_ca2', 'down1_downsample', 'conv_in'."""
        if self.kind == "aux":
            if self.name in ("downsample", "upsample"):
                return f"{stage_slug(self.stage)}_{self.name}"
            return self.name
        return f"{stage_slug(self.stage)}_{self.name.lower()}"


def _per_block(value: object, n: int, field: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise SnapbenchError(f"UNet config field {field} has {len(value)} entries for {n} blocks")
        return list(value)
    return [value] * n


# Config options the elastic UNet handles, with the values it supports (diffusers' defaults first).
# Anything else is refused in one line naming the key, its value and what is supported.
_SUPPORTED_OPTIONS: dict[str, tuple[object, ...]] = {
    "addition_embed_type": (None, "text_time"),  # text_time: SDXL's pooled text + size/crop conditioning
    "class_embed_type": (None,),
    "num_class_embeds": (None,),
    "encoder_hid_dim": (None,),
    "encoder_hid_dim_type": (None,),
    "time_cond_proj_dim": (None,),
    "time_embedding_act_fn": (None,),
    "timestep_post_act": (None,),
    "time_embedding_type": ("positional",),
    "center_input_sample": (False,),
    "dual_cross_attention": (False,),
    "class_embeddings_concat": (False,),
    "attention_type": ("default",),
    "cross_attention_norm": (None,),
}
# SDXL base: original size (2), crop top-left (2), target size (2); the refiner's 5 are not supported.
TEXT_TIME_IDS = 6


def _spell(v: object) -> str:
    return "null" if v is None else "true" if v is True else "false" if v is False else repr(v)


def check_supported(config: Mapping[str, Any]) -> None:
    """Refuse configs the elastic UNet cannot run, in one line: the key, its value, what is supported."""
    for field, allowed in (("down_block_types", SUPPORTED_DOWN), ("up_block_types", SUPPORTED_UP)):
        for t in config.get(field) or ():
            if t not in allowed:
                raise SnapbenchError(
                    f"UNet config {field} has {t!r}; snapbench supports {sorted(allowed)} (SD-1.x/2.x/XL UNets)"
                )
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") not in SUPPORTED_MID:
        raise SnapbenchError(
            f"UNet config mid_block_type {config.get('mid_block_type')!r} is not supported; "
            "use UNetMidBlock2DCrossAttn or null"
        )
    for key, values in _SUPPORTED_OPTIONS.items():
        value = config.get(key, values[0])
        if value not in values:
            raise SnapbenchError(
                f"UNet config {key}={_spell(value)} is not supported; snapbench supports "
                f"{' or '.join(_spell(a) for a in values)} (SD-1.x/2.x text-conditioned UNets, SDXL's text_time)"
            )
    if config.get("addition_embed_type") == "text_time":
        text_embeds_dim(config)  # refuses a text_time config whose widths do not add up


def text_embeds_dim(config: Mapping[str, object]) -> int | None:
    """The pooled text embedding's width of a text_time UNet (SDXL: 2816 - 6 x 256 = 1280); None otherwise.

    diffusers' config gives only the concatenation's width, so the time-id count is taken as SDXL base's 6.
    """
    if config.get("addition_embed_type") != "text_time":
        return None
    proj, time_dim = config.get("projection_class_embeddings_input_dim"), config.get("addition_time_embed_dim")
    if not isinstance(proj, int) or not isinstance(time_dim, int) or proj - TEXT_TIME_IDS * time_dim < 1:
        raise SnapbenchError(
            f"UNet config addition_embed_type='text_time' needs projection_class_embeddings_input_dim "
            f"(got {_spell(proj)}) = pooled text width + {TEXT_TIME_IDS} x addition_time_embed_dim (got "
            f"{_spell(time_dim)}); SDXL base has 2816 = 1280 + 6 x 256"
        )
    return proj - TEXT_TIME_IDS * time_dim


def layout_from_config(config: Mapping[str, Any]) -> tuple[Slot, ...]:
    """Every block slot of the UNet in execution order."""
    check_supported(config)
    down_types: Sequence[str] = config["down_block_types"]
    up_types: Sequence[str] = config["up_block_types"]
    n = len(down_types)
    if len(up_types) != n:
        raise SnapbenchError(f"UNet config has {n} down blocks but {len(up_types)} up blocks")
    layers = _per_block(config.get("layers_per_block", 2), n, "layers_per_block")
    check_config_values(config, n)
    rev_layers = list(reversed(layers))
    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")

    slots: list[Slot] = []
    counters: dict[tuple[str, str], int] = {}

    def add(kind: Literal["RB", "CA"], stage: str, path: str, **flags: bool) -> None:
        counters[(stage, kind)] = counters.get((stage, kind), 0) + 1
        name = f"{kind}{counters[(stage, kind)]}"
        slots.append(Slot(kind, stage, name, path, **flags))

    def aux(name: str, stage: str, path: str, **flags: bool) -> None:
        slots.append(Slot("aux", stage, name, path, **flags))

    aux("time_embedding", "Down-1", "time_embedding")
    if config.get("addition_embed_type") == "text_time":
        aux("add_embedding", "Down-1", "add_embedding")
    aux("conv_in", "Down-1", "conv_in", skip_after=True)
    for i, block_type in enumerate(down_types):
        stage = down_stage(i)
        has_attn = block_type.startswith("CrossAttn")
        for j in range(layers[i]):
            add("RB", stage, f"down_blocks.{i}.resnets.{j}", skip_after=not has_attn)
            if has_attn:
                add("CA", stage, f"down_blocks.{i}.attentions.{j}", skip_after=True)
        if i < n - 1:  # diffusers puts no downsampler after the last down block
            aux("downsample", stage, f"down_blocks.{i}.downsamplers.0", skip_after=True)
    if mid_type is not None:
        add("RB", "Mid", "mid_block.resnets.0")
        add("CA", "Mid", "mid_block.attentions.0")
        add("RB", "Mid", "mid_block.resnets.1")
    for j, block_type in enumerate(up_types):
        stage = up_stage(n - 1 - j)
        has_attn = block_type.startswith("CrossAttn")
        for k in range(rev_layers[j] + 1):
            add("RB", stage, f"up_blocks.{j}.resnets.{k}", takes_skip=True)
            if has_attn:
                add("CA", stage, f"up_blocks.{j}.attentions.{k}")
        if j < n - 1:
            aux("upsample", stage, f"up_blocks.{j}.upsamplers.0")
    aux("conv_out", "Up-3", "conv_out")
    return tuple(slots)


def removable_slots(layout: Sequence[Slot]) -> list[Slot]:
    return [s for s in layout if s.kind in ("RB", "CA")]
