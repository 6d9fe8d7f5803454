"""Resolve `--model`: a preset name, an arch spec .json, or a local diffusers UNet / pipeline folder.

Weights are read only from safetensors files (never unpickled). Presets without a checkpoint get seeded
random weights: latency does not depend on weight values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from snapbench.errors import SnapbenchError
from snapbench.user_files import read_user_json
from snapbench.model.elastic_unet import ElasticUNet
from snapbench.specs.arch_spec import ArchSpec, full_spec, load_spec
from snapbench.specs.layout import layout_from_config
from snapbench.specs.presets import load_preset, preset_names

WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
SHARD_INDEX = "diffusion_pytorch_model.safetensors.index.json"
SPEC_FILE = "arch.json"  # a folder written by ElasticUNet save (train / evolve output)
COPIES_FILE = "copies.safetensors"


@dataclass(frozen=True)
class ModelSource:
    """What `--model` named: the spec, and where its weights are (None: seeded random weights)."""

    ref: str
    spec: ArchSpec
    weights_dir: Path | None = None  # a diffusers UNet folder (config.json + safetensors)
    copies_file: Path | None = None  # weights of copied blocks, from a saved elastic UNet


def resolve_model(ref: str | Path, *, weights: str | Path | None = None) -> ModelSource:
    ref_s = str(ref)
    p = Path(ref_s)
    if p.is_dir():
        source = _from_folder(p)
    elif p.suffix == ".json" or p.is_file():
        if not p.exists():
            raise SnapbenchError(f"{p}: no such arch spec file")
        source = ModelSource(ref_s, load_spec(p))
    else:
        if "/" in ref_s or "\\" in ref_s:
            raise SnapbenchError(f"{ref_s}: no such folder or file (model hubs cannot be reached; give a local folder)")
        source = ModelSource(ref_s, load_preset(ref_s))
    if weights is not None:
        w = Path(weights)
        if not w.is_dir():
            raise SnapbenchError(f"{w}: --weights must be a diffusers UNet folder (config.json + {WEIGHTS_FILE})")
        folder = _unet_folder(w)
        _check_fits(source.spec, folder)
        source = ModelSource(ref_s, source.spec, folder, source.copies_file)
    return source


def _unet_folder(p: Path) -> Path:
    if (p / "config.json").is_file():
        return p
    if (p / "unet" / "config.json").is_file():  # a whole diffusers pipeline folder
        return p / "unet"
    raise SnapbenchError(f"{p}: missing config.json (expected a diffusers UNet folder, or a pipeline folder with unet/)")


def _from_folder(p: Path) -> ModelSource:
    if (p / SPEC_FILE).is_file():
        spec = load_spec(p / SPEC_FILE)
        unet_dir = p / "unet"
        copies = p / COPIES_FILE
        if not (unet_dir / "config.json").is_file():
            raise SnapbenchError(f"{p}: has {SPEC_FILE} but no unet/config.json; the weights folder is incomplete")
        _check_fits(spec, unet_dir)
        return ModelSource(str(p), spec, unet_dir, copies if copies.is_file() else None)
    folder = _unet_folder(p)
    config = _read_config(folder / "config.json")
    if config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise SnapbenchError(f"{folder / 'config.json'}: _class_name is {config.get('_class_name')!r}, "
                             "expected UNet2DConditionModel")
    _weight_files(folder)  # fail early, naming the missing file
    spec = full_spec(config, p.name or "unet", f"diffusers UNet from {p}")
    return ModelSource(str(p), spec, folder)


def _read_config(path: Path) -> dict[str, Any]:
    data = read_user_json(path, "UNet config")
    if not isinstance(data, dict):
        raise SnapbenchError(f"{path}: not a JSON object")
    try:
        layout_from_config(data)
    except KeyError as e:
        raise SnapbenchError(f"{path}: missing field {e.args[0]}") from None
    return data


def _weight_files(folder: Path) -> list[Path]:
    single = folder / WEIGHTS_FILE
    if single.is_file():
        return [single]
    index = folder / SHARD_INDEX
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
            raise SnapbenchError(f"{folder}: missing weight shard {missing[0]} listed in {SHARD_INDEX}")
        return [folder / s for s in shards]
    if any(folder.glob("*.bin")) or any(folder.glob("*.ckpt")):
        raise SnapbenchError(f"{folder}: has only pickle weights (.bin/.ckpt), which snapbench never unpickles; "
                             f"save them as {WEIGHTS_FILE} (diffusers save_pretrained(safe_serialization=True))")
    raise SnapbenchError(f"{folder}: missing {WEIGHTS_FILE}")


def _checkpoint_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for f in _weight_files(folder):
        with safe_open(str(f), framework="pt") as fh:
            for k in fh.keys():
                shapes[k] = tuple(fh.get_slice(k).get_shape())
    return shapes


def _check_fits(spec: ArchSpec, folder: Path) -> None:
    """The checkpoint's tensors must match the spec's base config, tensor by tensor; name the block if not."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        model = UNet2DConditionModel(**_init_kwargs(spec.base_config))
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = _checkpoint_shapes(folder)
    for key, shape in want.items():
        if key not in got:
            raise SnapbenchError(f"{folder}: checkpoint lacks {key} ({_block_of(spec, key)}); "
                                 "the spec's base_config does not fit this checkpoint")
        if got[key] != shape:
            raise SnapbenchError(f"{folder}: {key} ({_block_of(spec, key)}) has shape {list(got[key])}, "
                                 f"the spec expects {list(shape)}; the spec's base_config does not fit this checkpoint")


def _block_of(spec: ArchSpec, key: str) -> str:
    for slot in spec.layout:
        if key.startswith(slot.module_path + "."):
            return slot.block_id
    return key.split(".")[0]


def _init_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_unet(source: ModelSource, *, device: str | torch.device = "cpu", seed: int = 0,
               dtype: torch.dtype = torch.float32) -> ElasticUNet:
    """The elastic UNet for a model source. On device "meta" nothing is allocated (shapes and counts only)."""
    from diffusers import UNet2DConditionModel

    kwargs = _init_kwargs(source.spec.base_config)
    if str(device) == "meta":
        with torch.device("meta"):
            return ElasticUNet(UNet2DConditionModel(**kwargs), source.spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**kwargs)
        if source.weights_dir is not None:
            _load_weights(unet, source.weights_dir, source.spec)
        model = ElasticUNet(unet, source.spec)
    if source.copies_file is not None:
        from safetensors.torch import load_file

        state = load_file(str(source.copies_file))
        missing, unexpected = model.copies.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise SnapbenchError(f"{source.copies_file}: copied-block weights do not fit the spec "
                                 f"(missing {list(missing)[:1]}, unexpected {list(unexpected)[:1]})")
    return model.to(device=device, dtype=dtype)


def _load_weights(unet: torch.nn.Module, folder: Path, spec: ArchSpec) -> None:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in _weight_files(folder):
        state.update(load_file(str(f)))
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
        copies = {k: v.detach().contiguous().cpu() for k, v in model.copies.state_dict().items()}
        if copies:
            save_file(copies, str(tmp / COPIES_FILE))
    return out


__all__ = ["ModelSource", "resolve_model", "build_unet", "save_elastic", "preset_names"]
