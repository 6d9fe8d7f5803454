"""Resolve `--model`: a preset name, an arch spec .json, a local diffusers UNet / pipeline folder, or a
Hugging Face hub id found in the local Hugging Face cache (nothing is downloaded).

Weights are read only from safetensors files (never unpickled), plain or a variant
(`diffusion_pytorch_model.fp16.safetensors`, what `save_pretrained(variant="fp16")` writes). Presets
without a checkpoint get seeded random weights: latency does not depend on weight values.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from snapbench.errors import SnapbenchError, first_line
from snapbench.json_types import JSONObject
from snapbench.model.elastic_unet import ALTERNATIVE_SEP, ElasticUNet
from snapbench.model.size_bound import bounded_build
from snapbench.specs.arch_spec import ArchSpec, full_spec, load_spec
from snapbench.specs.layout import layout_from_config
from snapbench.specs.presets import load_preset, preset_names
from snapbench.specs.variants import Variant
from snapbench.user_files import load_safetensors, open_safetensors, read_user_json

WEIGHTS_STEM = "diffusion_pytorch_model"
WEIGHTS_FILE = f"{WEIGHTS_STEM}.safetensors"
SHARD_INDEX = f"{WEIGHTS_STEM}.safetensors.index.json"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # org/name, as the hub spells repository ids
SPEC_FILE = "arch.json"  # a folder written by ElasticUNet save (train / evolve output)
COPIES_FILE = "copies.safetensors"
VARIANTS_FILE = "variants.safetensors"  # weights of SnapGen-style variant blocks
# robust training's sampled variants (their own tensors; the header's metadata names each one's variant)
ALTERNATIVES_FILE = "alternatives.safetensors"
ALTERNATIVES_META = "snapbench.alternatives"  # [[key, variant fields], ...] in the order they were made


@dataclass(frozen=True)
class ModelSource:
    """What `--model` named: the spec, and where its weights are (None: seeded random weights)."""

    ref: str
    spec: ArchSpec
    weights_dir: Path | None = None  # a diffusers UNet folder (config.json + safetensors)
    copies_file: Path | None = None  # weights of copied blocks, from a saved elastic UNet
    variant: str | None = None  # the weights' variant (fp16 for diffusion_pytorch_model.fp16.safetensors)
    variants_file: Path | None = None  # weights of SnapGen-style variant blocks, from a saved elastic UNet
    alternatives_file: Path | None = None  # robust training's sampled variants, from a saved elastic UNet


# SD's 512x512 images; used only for a config that does not say its own sample_size.
DEFAULT_LATENT = 64


def model_latent(spec: ArchSpec, latent: int | None = None) -> int:
    """The latent size to price or convert `spec` at: `latent` when the user gave one, else the model's
    own config's sample_size (the toy's 8, SD's 64), so a model is never priced at another model's size."""
    if latent is not None:
        return int(latent)
    size = spec.base_config.get("sample_size") or DEFAULT_LATENT
    if isinstance(size, (list, tuple)):  # diffusers allows (height, width); the latent here is square
        size = size[0]
    return int(size)


def resolve_unet(ref: str | os.PathLike[str], *, weights: str | os.PathLike[str] | None = None, variant: str | None = None,
                 subfolder: str | None = None, revision: str | None = None) -> ModelSource:
    """What `--model` (and `--weights`) name, read as a UNet (SD-1.x/2.x, SDXL-class): a preset, an arch spec,
    a diffusers UNet or pipeline folder, a hub id. `variant`: which weights file of a folder (None: the plain
    one, else the only variant present). `subfolder` / `revision`: inside a folder or hub snapshot, and
    which snapshot of a hub id. The pipeline calls `snapbench.backbones.resolve_model`, which lets the other
    families (a DiT) claim the reference first."""
    ref_s = str(ref)
    p = _local_or_hub(ref_s, subfolder, revision)
    if p.is_dir():
        source = _from_folder(p, variant)
    elif p.suffix == ".json" or p.is_file():
        if not p.exists():
            raise SnapbenchError(f"{p}: no such arch spec file")
        source = ModelSource(ref_s, load_spec(p))
    else:
        source = ModelSource(ref_s, load_preset(ref_s))
    if weights is not None:
        w = _local_or_hub(str(weights), subfolder if source.weights_dir is None else None, revision)
        if not w.is_dir():
            raise SnapbenchError(f"{w}: --weights must be a diffusers UNet folder (config.json + {WEIGHTS_FILE}) "
                                 "or a hub id in the local Hugging Face cache")
        folder = _unet_folder(w)
        chosen = _weights_variant(folder, variant)
        _check_fits(source.spec, folder, chosen)
        source = ModelSource(ref_s, source.spec, folder, source.copies_file, chosen, source.variants_file,
                             source.alternatives_file)
    return source


def _local_or_hub(ref: str, subfolder: str | None, revision: str | None) -> Path:
    """A local path as given; a hub id (org/name) that is not a local path: its snapshot in the local
    Hugging Face cache. Then `subfolder` inside it."""
    p = Path(ref)
    if not p.exists() and HUB_ID.match(ref) and not ref.endswith(".json"):
        from snapbench.model.hub import local_snapshot

        p = local_snapshot(ref, revision)
    elif revision is not None and not p.exists():
        raise SnapbenchError(f"{ref}: --revision needs a hub id (org/name) or a local folder")
    elif ("/" in ref or "\\" in ref) and not p.exists():
        raise SnapbenchError(f"{ref}: no such folder or file")
    if subfolder:
        sub = p / subfolder
        if not sub.is_dir():
            raise SnapbenchError(f"{ref}: has no subfolder {subfolder!r}")
        return sub
    return p


def _unet_folder(p: Path) -> Path:
    if (p / "config.json").is_file():
        return p
    if (p / "unet" / "config.json").is_file():  # a whole diffusers pipeline folder
        return p / "unet"
    raise SnapbenchError(f"{p}: missing config.json (expected a diffusers UNet folder, or a pipeline folder with unet/)")


def _from_folder(p: Path, variant: str | None = None) -> ModelSource:
    if (p / SPEC_FILE).is_file():
        spec = load_spec(p / SPEC_FILE)
        unet_dir = p / "unet"
        copies = p / COPIES_FILE
        variants = p / VARIANTS_FILE
        alternatives = p / ALTERNATIVES_FILE
        if not (unet_dir / "config.json").is_file():
            raise SnapbenchError(f"{p}: has {SPEC_FILE} but no unet/config.json; the weights folder is incomplete")
        chosen = _weights_variant(unet_dir, variant)
        _check_fits(spec, unet_dir, chosen)
        return ModelSource(str(p), spec, unet_dir, copies if copies.is_file() else None, chosen,
                           variants if variants.is_file() else None, alternatives if alternatives.is_file() else None)
    folder = _unet_folder(p)
    config = _read_config(folder / "config.json")
    if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise SnapbenchError(f"{folder / 'config.json'}: _class_name is {config.get('_class_name')!r}, "
                             "expected UNet2DConditionModel")
    chosen = _weights_variant(folder, variant)
    _weight_files(folder, chosen)  # fail early, naming the missing file
    spec = full_spec(config, p.name or "unet", f"diffusers UNet from {p}")
    return ModelSource(str(p), spec, folder, variant=chosen)


def _read_config(path: Path) -> JSONObject:
    data = read_user_json(path, "UNet config")
    if not isinstance(data, dict):
        raise SnapbenchError(f"{path}: not a JSON object")
    try:
        layout_from_config(data)
    except KeyError as e:
        raise SnapbenchError(f"{path}: missing field {e.args[0]}") from None
    return data


def _variants(folder: Path, stem: str = WEIGHTS_STEM) -> list[str]:
    """The weight variants a folder holds: <stem>.<v>.safetensors or a sharded
    <stem>.safetensors.index.<v>.json (diffusers' names with stem diffusion_pytorch_model, transformers'
    with stem model)."""
    found = set()
    for f in folder.glob(f"{stem}.*.safetensors"):
        middle = f.name[len(stem) + 1:-len(".safetensors")]
        if "-of-" not in middle:  # not a shard (diffusion_pytorch_model-00001-of-00002 has no dot here)
            found.add(middle.split(".")[0])
    index = f"{stem}.safetensors.index"
    for f in folder.glob(f"{index}.*.json"):
        found.add(f.name[len(index) + 1:-len(".json")])
    return sorted(found)


def _has_plain(folder: Path, stem: str) -> bool:
    return (folder / f"{stem}.safetensors").is_file() or (folder / f"{stem}.safetensors.index.json").is_file()


def _weights_variant(folder: Path, variant: str | None, stem: str = WEIGHTS_STEM) -> str | None:
    """The variant to read: the one asked for (it must exist); else none when the plain file is there;
    else the only variant present."""
    plain = _has_plain(folder, stem)
    present = _variants(folder, stem)
    if variant is not None:
        if variant not in present:
            have = ", ".join(present) if present else "none"
            raise SnapbenchError(f"{folder}: no {variant} weights ({stem}.{variant}.safetensors); "
                                 f"variants here: {have}" + ("; leave out --variant for the plain file" if plain else ""))
        return variant
    if plain or not present:
        return None
    if len(present) > 1:
        raise SnapbenchError(f"{folder}: several weight variants ({', '.join(present)}) and no plain "
                             f"{stem}.safetensors; pick one with --variant")
    return present[0]


def part_variant(folder: Path, preferred: str | None, stem: str) -> str | None:
    """Which weights of a pipeline part (text_encoder/, vae/) to read, by the rule of diffusers'
    DiffusionPipeline.from_pretrained: the variant the UNet was read in (`preferred`) where the part has
    it, else the plain file, else the part's only variant (published pipelines ship fp16-only folders)."""
    if preferred is not None and preferred in _variants(folder, stem):
        return preferred
    return _weights_variant(folder, None, stem)


def _weight_files(folder: Path, variant: str | None = None, stem: str = WEIGHTS_STEM) -> list[Path]:
    infix = f".{variant}" if variant is not None else ""
    single = folder / f"{stem}{infix}.safetensors"
    index = folder / f"{stem}.safetensors.index{infix}.json"
    if single.is_file():
        return [single]
    if index.is_file():
        index_data = read_user_json(index, "shard index")
        weight_map = index_data.get("weight_map") if isinstance(index_data, dict) else None
        if not isinstance(weight_map, dict):
            raise SnapbenchError(f"{index}: no weight_map object; not a safetensors shard index")
        shards = sorted({str(v) for v in weight_map.values()})
        outside = [s for s in shards if Path(s).name != s or s in (".", "..")]
        if outside:
            raise SnapbenchError(f"{index}: shard {outside[0]!r} is not a file name in {folder}; "
                                 "shards must sit beside the index")
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise SnapbenchError(f"{folder}: missing weight shard {missing[0]} listed in {index.name}")
        return [folder / s for s in shards]
    if any(folder.glob("*.bin")) or any(folder.glob("*.ckpt")):
        raise SnapbenchError(f"{folder}: has only pickle weights (.bin/.ckpt), which snapbench never unpickles; "
                             f"save them as {stem}.safetensors (save_pretrained(safe_serialization=True))")
    raise SnapbenchError(f"{folder}: missing {single.name}")


def _checkpoint_shapes(folder: Path, variant: str | None = None) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for f in _weight_files(folder, variant):
        with open_safetensors(f) as fh:
            for k in fh.keys():  # noqa: SIM118 (safe_open is not iterable)
                shapes[k] = tuple(fh.get_slice(k).get_shape())
    return shapes


def check_checkpoint_shapes(folder: Path, want: Mapping[str, tuple[int, ...]], variant: str | None,
                            block_of: Callable[[str], str], *, expected_by: str, verdict: str,
                            reject_extra: bool = False) -> None:
    """The checkpoint's tensors in `folder` must have `want`'s names and shapes (UNet and DiT sources alike).
    Raises on the first tensor missing or of another shape, naming it and its block (`block_of`) and ending
    with `verdict`; with `reject_extra`, also on tensors `want` lacks. `expected_by` names what set the
    shapes ("the spec", "the config")."""
    got = _checkpoint_shapes(folder, variant)
    for key, shape in want.items():
        if key not in got:
            raise SnapbenchError(f"{folder}: checkpoint lacks {key} ({block_of(key)}); {verdict}")
        if got[key] != shape:
            raise SnapbenchError(f"{folder}: {key} ({block_of(key)}) has shape {list(got[key])}, "
                                 f"{expected_by} expects {list(shape)}; {verdict}")
    if reject_extra:
        extra = sorted(set(got) - set(want))
        if extra:
            raise SnapbenchError(f"{folder}: checkpoint has {extra[0]} ({block_of(extra[0])}), which {expected_by} "
                                 f"does not; {verdict} ({len(extra)} extra tensor(s))")


def _check_fits(spec: ArchSpec, folder: Path, variant: str | None = None) -> None:
    """The checkpoint's tensors must match the spec's base config, tensor by tensor; name the block if not."""
    model = meta_unet(spec.base_config, str(folder))
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_checkpoint_shapes(folder, want, variant, lambda key: _block_of(spec, key), expected_by="the spec",
                            verdict="the spec's base_config does not fit this checkpoint")


def _block_of(spec: ArchSpec, key: str) -> str:
    for slot in spec.layout:
        if key.startswith(slot.module_path + "."):
            return slot.block_id
    return key.split(".")[0]


def _init_kwargs(config: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def new_unet(config: Mapping[str, object], what: str) -> torch.nn.Module:
    """diffusers' UNet for `config` (on the current default device), any failure of the config as one line
    that names the model: diffusers raises ValueError / TypeError / RuntimeError for bad configs."""
    from diffusers import UNet2DConditionModel

    try:
        return UNet2DConditionModel(**_init_kwargs(config))
    except SnapbenchError:
        raise
    except Exception as e:
        raise SnapbenchError(f"{what}: the model spec does not build "
                             f"({type(e).__name__}: {first_line(e, default=type(e).__name__)})") from None


def meta_unet(config: Mapping[str, object], what: str) -> torch.nn.Module:
    """The UNet of `config` on the meta device, refused (ModelTooLarge) past the size limits before it grows."""
    return bounded_build(lambda: new_unet(config, what), what)


def build_unet(source: ModelSource, *, device: str | torch.device = "cpu", seed: int = 0,
               dtype: torch.dtype = torch.float32) -> ElasticUNet:
    """The elastic UNet for a model source. On device "meta" nothing is allocated (shapes and counts only).
    Either way it is first built on meta within the size limits, so a config that implies trillions of
    parameters is refused before anything is allocated."""
    meta = bounded_build(lambda: ElasticUNet(new_unet(source.spec.base_config, source.ref), source.spec), source.ref)
    if str(device) == "meta":
        return meta
    del meta
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = new_unet(source.spec.base_config, source.ref)
        if source.weights_dir is not None:
            _load_weights(unet, source.weights_dir, source.spec, source.variant)
        model = ElasticUNet(unet, source.spec)
    for file, modules, what in ((source.copies_file, model.copies, "copied-block"),
                                (source.variants_file, model.variants, "variant-block")):
        if file is None:
            continue
        state = load_safetensors(file, f"{what} weights file")
        missing, unexpected = modules.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SnapbenchError(f"{file}: {what} weights do not fit the spec "
                                 f"(missing {list(missing)[:1]}, unexpected {list(unexpected)[:1]})")
    if source.alternatives_file is not None:
        _load_alternatives(model, source.alternatives_file)
    return model.to(device=device, dtype=dtype)


def _load_alternatives(model: ElasticUNet, file: Path) -> None:
    """Rebuild robust training's sampled variants from the file's metadata, then load their own tensors."""
    what = "sampled-variant weights file"
    with open_safetensors(file, what) as f:
        listed = (f.metadata() or {}).get(ALTERNATIVES_META)
    try:  # in the order they were made: the optimizer's saved moments follow the parameters' order
        for key, fields in json.loads(listed or "[]"):
            file_id, _, move = key.rpartition(ALTERNATIVE_SEP)
            model.add_alternative(file_id, move, Variant.from_dict(fields, model.unit(file_id).slot.kind, str(file)))
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise SnapbenchError(f"{file}: its metadata does not list variants ({e}); retrain or remove the file") from None
    state = load_safetensors(file, what)
    missing, unexpected = model.alternatives.load_state_dict(state, strict=False)
    own_missing = [k for k in missing if k.split(".", 1)[1] not in model.shared_names[k.split(".", 1)[0]]]
    if own_missing or unexpected:
        raise SnapbenchError(f"{file}: {what} does not fit the spec "
                             f"(missing {own_missing[:1]}, unexpected {list(unexpected)[:1]})")


def _load_weights(unet: torch.nn.Module, folder: Path, spec: ArchSpec, variant: str | None = None) -> None:
    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(folder, variant):
        state.update(load_safetensors(f))  # fp16 variants are cast by load_state_dict's copy
    want = unet.state_dict()
    for key, tensor in want.items():
        if key not in state:
            raise SnapbenchError(f"{folder}: checkpoint lacks {key} ({_block_of(spec, key)})")
        if state[key].shape != tensor.shape:
            raise SnapbenchError(f"{folder}: {key} ({_block_of(spec, key)}) has shape {list(state[key].shape)}, "
                                 f"the spec expects {list(tensor.shape)}")
    unet.load_state_dict(state, strict=False)


def save_elastic(model: ElasticUNet, folder: str | Path) -> Path:
    """Save an elastic UNet as arch.json + unet/ (diffusers save_pretrained) + copies.safetensors.

    Written under a temporary name and renamed, so a folder that exists is always complete.
    """
    from safetensors.torch import save_file

    from snapbench.atomic import atomic_path
    from snapbench.specs.arch_spec import save_spec

    out = Path(folder)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        save_spec(model.spec, tmp / SPEC_FILE)
        model.base.save_pretrained(tmp / "unet", safe_serialization=True)
        for modules, name in ((model.copies, COPIES_FILE), (model.variants, VARIANTS_FILE)):
            state = {k: v.detach().contiguous().cpu() for k, v in modules.state_dict().items()}
            if state:
                save_file(state, str(tmp / name))
        if model.alternatives:
            listed = [[k, v.to_dict()] for k, v in model.alternative_variants.items()]
            save_file({k: v.detach().contiguous().cpu() for k, v in model.alternatives_state().items()},
                      str(tmp / ALTERNATIVES_FILE), metadata={ALTERNATIVES_META: json.dumps(listed)})
    return out


__all__ = ["ModelSource", "resolve_unet", "build_unet", "meta_unet", "new_unet", "save_elastic", "preset_names"]
