"""A trained model folder: the elastic UNet (save_elastic: arch.json + unet/ + copies.safetensors) or DiT
(dit/elastic.py save_dit: dit.json + transformer/ + copies.safetensors) plus
what it needs to be trained further or evaluated: its noise schedule (scheduler/scheduler_config.json,
as in a diffusers pipeline) and, for the toy, its prompt encoder (toy_text.safetensors).

Any folder `resolve_model` reads (a save_elastic folder, a diffusers UNet or pipeline folder) loads as a
bundle; presets load with seeded random weights. Folders are written under a temporary name and renamed,
so a folder that exists is complete.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from snapbench.atomic import atomic_path
from snapbench.backbones import ElasticModel, backbone_for, resolve_model
from snapbench.dit.elastic import ElasticDiT
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSON, JSONObject
from snapbench.model.elastic_unet import ElasticUNet
from snapbench.model.loading import ModelSource
from snapbench.specs.arch_spec import ArchSpec
from snapbench.training.toy_digits import ENCODER_FILE, PromptEncoder, context_width, is_toy
from snapbench.user_files import read_user_json

SCHEDULER_FILE = "scheduler/scheduler_config.json"

# The toy trains on [-1, 1] pixels: a cosine schedule suits small images (Nichol & Dhariwal), and
# clipping x0 to the data range keeps few-step DDIM samples in range.
TOY_SCHEDULE: Mapping[str, JSON] = {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                                   "prediction_type": "epsilon", "clip_sample": True}
# SD-1.x/2.x's training schedule (scaled linear betas), used when a folder has no scheduler config.
SD_SCHEDULE: Mapping[str, JSON] = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon",
                                  "clip_sample": False}


# What training, evolution and distillation hold: an elastic SD UNet or an elastic DiT.
Elastic = ElasticUNet | ElasticDiT


@dataclass
class ModelBundle:
    model: Elastic
    encoder: PromptEncoder | None  # the toy's text encoder; None for SD (context comes from CLIP / data)
    noise_schedule: JSONObject  # a diffusers DDPMScheduler config
    ref: str  # where it was loaded from

    @property
    def spec(self) -> ArchSpec:
        return self.model.spec


def load_bundle(ref: str | Path, *, weights: str | Path | None = None, seed: int = 0,
                device: str | torch.device = "cpu") -> ModelBundle:
    source = resolve_model(ref, weights=weights)
    model = _elastic(backbone_for(source).build(source, device=device, seed=seed))
    folder = Path(str(ref)) if Path(str(ref)).is_dir() else None
    encoder = None
    if is_toy(source.spec):
        encoder = _load_encoder(source, folder, seed).to(device)
    schedule = _schedule(source, folder)
    return ModelBundle(model, encoder, schedule, str(ref))


def _load_encoder(source: ModelSource, folder: Path | None, seed: int) -> PromptEncoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        enc = PromptEncoder(context_width(source.spec))
    if folder is not None and (folder / ENCODER_FILE).is_file():
        from snapbench.user_files import load_safetensors

        state = load_safetensors(folder / ENCODER_FILE)
        try:
            enc.load_state_dict(state)
        except RuntimeError:
            raise SnapbenchError(f"{folder / ENCODER_FILE}: the toy prompt encoder does not fit the spec's "
                                 f"cross_attention_dim {context_width(source.spec)}") from None
    elif folder is not None and source.weights_dir is not None:
        raise SnapbenchError(f"{folder}: a trained toy-digits folder needs {ENCODER_FILE} beside arch.json; "
                             "it is missing (was the folder copied partially?)")
    return enc


def _schedule(source: ModelSource, folder: Path | None) -> JSONObject:
    places = []
    if folder is not None:
        places.append(folder / SCHEDULER_FILE)
    if source.weights_dir is not None:
        places.append(source.weights_dir.parent / SCHEDULER_FILE)
    for p in places:
        if p.is_file():
            cfg = read_user_json(p, "scheduler config")
            if not isinstance(cfg, dict):
                raise SnapbenchError(f"{p}: not a JSON object")
            return {k: v for k, v in cfg.items() if not k.startswith("_")}
    return dict(TOY_SCHEDULE if is_toy(source.spec) else SD_SCHEDULE)


def save_bundle(bundle: ModelBundle, folder: str | Path, *, model: Elastic | None = None,
                extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write the bundle (or `model` in its place) as one complete folder, atomically."""
    from safetensors.torch import save_file

    model = model or bundle.model
    out = Path(folder)
    with atomic_path(out) as tmp:
        backbone_for(model.spec).save(model, tmp)
        (tmp / SCHEDULER_FILE).parent.mkdir(parents=True, exist_ok=True)
        (tmp / SCHEDULER_FILE).write_text(json.dumps({"_class_name": "DDPMScheduler", **bundle.noise_schedule},
                                                     indent=2) + "\n")
        if bundle.encoder is not None:
            state = {k: v.detach().contiguous().cpu() for k, v in bundle.encoder.state_dict().items()}
            save_file(state, str(tmp / ENCODER_FILE))
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return out


def derive(model: Elastic, spec: ArchSpec) -> Elastic:
    """The same weights under another spec (the backbone's `reshape`: what an A+ or A- action does)."""
    return _elastic(backbone_for(spec).reshape(model, spec))


def _elastic(model: ElasticModel) -> Elastic:
    """Training, evolution and distillation hold SD UNets and DiTs (each family's `save` writes its folder):
    another backbone is refused here in one line, not deep in torch."""
    if not isinstance(model, (ElasticUNet, ElasticDiT)):
        raise SnapbenchError(f"{model.spec.name}: training, evolution and distillation checkpoints hold SD "
                             "UNets and DiTs only so far (docs/architecture.md, 'Adding a backbone')")
    return model
