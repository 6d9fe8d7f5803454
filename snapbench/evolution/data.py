"""Training data for robust training: what a batch of (x0, condition) comes from.

- `ToyDigitsData`: the toy's digits with their prompts as token ids (the prompt encoder trains too).
- `LatentFolderData`: for real UNets, a folder of `*.safetensors` files the user precomputed with their
  VAE and text encoder: `latents` [N, C, H, W] (already scaled by the VAE's scaling factor), `context`
  [N, L, D] (text encoder hidden states), and optionally `uncond_context` [L, D] or [1, L, D] (the empty
  prompt's, enabling condition dropout for classifier-free guidance). Everything is loaded in memory:
  a thin path for fine-tuning on a subset, not a data pipeline for LAION.

Batches are drawn with an explicit generator seeded per step, so a resumed run draws what an
uninterrupted one would have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch

from snapbench.errors import SnapbenchError
from snapbench.evolution.toy_digits import DIGIT_PROMPTS, digit_images, is_toy, tokenize
from snapbench.specs.arch_spec import ArchSpec


class TrainingData(Protocol):
    uncond: torch.Tensor | None  # the unconditional condition (one row), or None: no condition dropout

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


class ToyDigitsData:
    def __init__(self) -> None:
        self.images, labels = digit_images()
        self.tokens = tokenize(DIGIT_PROMPTS)[labels]  # [N, 3]
        self.uncond = tokenize([""])[0]

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.images), (size,), generator=generator)
        return self.images[idx], self.tokens[idx]


class LatentFolderData:
    def __init__(self, folder: str | Path, spec: ArchSpec) -> None:
        from safetensors.torch import load_file

        p = Path(folder)
        files = sorted(p.glob("*.safetensors")) if p.is_dir() else []
        if not files:
            raise SnapbenchError(f"{p}: --data must be a folder of .safetensors files with 'latents' [N,C,H,W] "
                                 "and 'context' [N,L,D] tensors; none found")
        lat, ctx, unc = [], [], None
        for f in files:
            t = load_file(str(f))
            missing = [k for k in ("latents", "context") if k not in t]
            if missing:
                raise SnapbenchError(f"{f}: lacks tensor {missing[0]!r} (needs 'latents' and 'context')")
            if len(t["latents"]) != len(t["context"]):
                raise SnapbenchError(f"{f}: {len(t['latents'])} latents but {len(t['context'])} contexts")
            lat.append(t["latents"].float())
            ctx.append(t["context"].float())
            if "uncond_context" in t:
                unc = t["uncond_context"].float().reshape(t["context"].shape[1:])
        self.latents, self.context, self.uncond = torch.cat(lat), torch.cat(ctx), unc
        cfg = spec.base_config
        want_c = cfg.get("in_channels", 4)
        width = cfg.get("cross_attention_dim", 768)
        width = width[0] if isinstance(width, (list, tuple)) else width
        if self.latents.shape[1] != want_c:
            raise SnapbenchError(f"{p}: latents have {self.latents.shape[1]} channels, the UNet takes {want_c}")
        if self.context.shape[-1] != width:
            raise SnapbenchError(f"{p}: context width {self.context.shape[-1]}, the UNet's cross_attention_dim "
                                 f"is {width}")

    def batch(self, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.latents), (size,), generator=generator)
        return self.latents[idx], self.context[idx]


def training_data(spec: ArchSpec, data: str | Path | None) -> TrainingData:
    if data is not None:
        return LatentFolderData(data, spec)
    if is_toy(spec):
        return ToyDigitsData()
    raise SnapbenchError(f"{spec.name}: no training data; give --data FOLDER of precomputed latents + text "
                         "contexts (.safetensors with 'latents' and 'context'), or use --model toy-digits")
