"""`--model` for DiTs: a DiT preset, a DiT spec .json, or a local diffusers transformer folder (a
`transformer/` folder, or a pipeline folder holding one), with weights read only from safetensors.

What it resolves to is the pipeline's common `ModelSource`: an `ArchSpec` whose base config is the
diffusers DiT config and whose stages list the transformer blocks (`to_arch_spec`; `dit_spec` reads the
DiT spec back). Presets have no weights (seeded random ones; latency does not depend on weight values).
A folder's weights must fit its config tensor by tensor; a mismatch names the block it belongs to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from snapbench.dit.family import FAMILIES, init_kwargs
from snapbench.dit.spec import DitSpec, is_dit_spec_data, load_preset, load_spec, preset_names
from snapbench.dit.variants import parse_variant
from snapbench.errors import SnapbenchError
from snapbench.model.loading import (
    COPIES_FILE,
    VARIANTS_FILE,
    ModelSource,
    _weight_files,
    _weights_variant,
    check_checkpoint_shapes,
)
from snapbench.model.size_bound import bounded_build
from snapbench.specs.arch_spec import ArchSpec, BlockChoice
from snapbench.specs.dit_layout import block_stages
from snapbench.user_files import read_user_json

CONFIG = "config.json"
SPEC_FILE = "dit.json"  # a folder written by save_dit (train / evolve output): the spec with its block choices
TRANSFORMER = "transformer"


def to_arch_spec(spec: DitSpec) -> ArchSpec:
    """The pipeline's spec of a DiT: its config as base config, its transformer blocks stage by stage."""
    stages: dict[str, list[BlockChoice]] = {}
    for i, stage in enumerate(block_stages(spec.num_layers)):
        stages.setdefault(stage, []).append(BlockChoice(f"TB{i + 1}"))
    for stage, choices in (spec.stages or {}).items():
        stages[stage] = list(choices)
    notes = dict(spec.notes)
    if spec.tokens is not None:
        notes["tokens"] = spec.tokens
    if spec.attention_variant is not None:
        notes["attention_variant"] = spec.attention_variant.to_dict()
    config = {**spec.config, "num_layers": spec.num_layers}  # stated, so the spec's layout needs no diffusers
    return ArchSpec(spec.name, config, {k: tuple(v) for k, v in stages.items()}, spec.description, notes)


def dit_spec(spec: ArchSpec) -> DitSpec:
    """The DiT spec behind an `ArchSpec` made by `to_arch_spec`."""
    notes = dict(spec.notes)
    tokens = notes.pop("tokens", None)
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        raise SnapbenchError(f"{spec.name}: notes.tokens is {tokens!r}; give a whole number")
    variant = parse_variant(notes.pop("attention_variant", None), spec.name)
    elastic = any(not c.keep or c.copies or not c.variant.is_default for cs in spec.stages.values() for c in cs)
    return DitSpec(spec.name, spec.base_config, spec.description, tokens, notes, variant,
                   dict(spec.stages) if elastic else None)


def _folder_config(p: Path) -> Path | None:
    """The transformer config.json of a folder, if it holds a DiT snapbench knows."""
    for cand in (p / CONFIG, p / "transformer" / CONFIG):
        if cand.is_file():
            try:
                data = read_user_json(cand, "transformer config")
            except SnapbenchError:
                return None
            if isinstance(data, dict) and data.get("_class_name") in FAMILIES:
                return cand
    return None


def is_dit_ref(ref: str | os.PathLike[str]) -> bool:
    """Whether `--model` names a DiT (so the DiT pipeline, not the UNet one, handles it)."""
    s = str(ref)
    if s in preset_names():
        return True
    p = Path(s)
    if p.is_dir():
        return (p / SPEC_FILE).is_file() or _folder_config(p) is not None
    if p.suffix == ".json" and p.is_file():
        try:
            return is_dit_spec_data(read_user_json(p, "spec file"))
        except SnapbenchError:
            return False
    return False


def resolve_dit(ref: str | os.PathLike[str], *, variant: str | None = None) -> ModelSource:
    s = str(ref)
    p = Path(s)
    if p.is_dir() and (p / SPEC_FILE).is_file():
        return _from_saved(p, variant)
    if p.is_dir():
        config_path = _folder_config(p)
        if config_path is None:
            raise SnapbenchError(f"{p}: no DiT transformer config.json (_class_name one of {', '.join(FAMILIES)})")
        folder = config_path.parent
        config = read_user_json(config_path, "transformer config")
        spec = DitSpec.from_dict({"format": "snapbench.dit/1", "name": p.name or "transformer",
                                  "description": f"diffusers {config['_class_name']} from {p}", "config": config},
                                 source=str(config_path))
        chosen = _weights_variant(folder, variant)
        check_fits(spec, folder, chosen)
        return ModelSource(s, to_arch_spec(spec), folder, variant=chosen)
    if p.suffix == ".json":
        return ModelSource(s, to_arch_spec(load_spec(p)))
    return ModelSource(s, to_arch_spec(load_preset(s)))


def _from_saved(p: Path, variant: str | None) -> ModelSource:
    """A folder save_dit wrote: dit.json (the spec and its block choices), transformer/ (the base weights),
    copies.safetensors and variants.safetensors (copied and variant blocks), each checked against the spec."""

    spec = load_spec(p / SPEC_FILE)
    folder = p / TRANSFORMER
    if not (folder / CONFIG).is_file():
        raise SnapbenchError(f"{p}: has {SPEC_FILE} but no {TRANSFORMER}/{CONFIG}; the folder is incomplete")
    chosen = _weights_variant(folder, variant)
    check_fits(spec, folder, chosen)
    copies, variants = p / COPIES_FILE, p / VARIANTS_FILE
    return ModelSource(str(p), to_arch_spec(spec), folder, copies if copies.is_file() else None, chosen,
                       variants if variants.is_file() else None)


def block_of(key: str, num_layers: int) -> str:
    """The block a state-dict key belongs to, as users see blocks (see cut.py)."""
    head = key.split(".")[0]
    if head == "transformer_blocks":
        i = int(key.split(".")[1])
        return f"TB[{block_stages(num_layers)[i]}, {i + 1}]" if i < num_layers else f"transformer_blocks.{i}"
    return {"pos_embed": "PatchEmbed", "patch_embed": "PatchEmbed", "time_text_embed": "TimeEmbed",
            "adaln_single": "TimeEmbed", "time_embed": "TimeEmbed", "context_embedder": "CaptionEmbed",
            "caption_projection": "CaptionEmbed", "caption_norm": "CaptionEmbed"}.get(head, "FinalLayer")


def build_meta(config: Mapping[str, object]) -> torch.nn.Module:
    """The diffusers model of a DiT config on the meta device (structure only), stopped as soon as it passes
    the size limits (a config from user input may ask for a billion layers)."""
    name = str(config["_class_name"])
    return bounded_build(lambda: FAMILIES[name].diffusers_class()(**init_kwargs(config)), name)


def check_fits(spec: DitSpec, folder: Path, variant: str | None = None) -> None:
    """The checkpoint's tensors must be the config's, name by name and shape by shape."""
    want = {k: tuple(v.shape) for k, v in build_meta(spec.config).state_dict().items()}
    n = spec.num_layers
    check_checkpoint_shapes(folder, want, variant, lambda key: block_of(key, n), expected_by="the config",
                            verdict="the weights do not match the config", reject_extra=True)


def build_dit(source: ModelSource, *, device: str | torch.device = "cpu", seed: int = 0,
              dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The diffusers model of a source: weights from its folder, else seeded random ones. On "meta" nothing
    is allocated (shapes and counts only)."""
    from snapbench.dit.variants import apply_variant

    config = source.spec.base_config
    variant = dit_spec(source.spec).attention_variant
    if str(device) == "meta":
        model = build_meta(config)
        apply_variant(model, variant, FAMILIES[str(config["_class_name"])].key)
        return model
    build_meta(config)  # the size check, before anything real is allocated
    cls = FAMILIES[str(config["_class_name"])].diffusers_class()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(**init_kwargs(config))
    apply_variant(model, variant, FAMILIES[str(config["_class_name"])].key)
    if source.weights_dir is not None:
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for f in _weight_files(source.weights_dir, source.variant):
            state.update(load_file(str(f)))
        model.load_state_dict(state, strict=True)  # check_fits ran when the source was resolved
    if str(device) != "cpu" or dtype != torch.float32:
        model = model.to(device=device, dtype=dtype)
    return model.eval()
