"""Training data for robust training: what a batch of (x0, condition) comes from.

- `ToyDigitsData`: the toy's digits with their prompts as token ids (the prompt encoder trains too).
- `LatentFolderData`: for real UNets, a folder of `*.safetensors` files the user precomputed with their
  VAE and text encoder: `latents` [N, C, H, W] (already scaled by the VAE's scaling factor), `context`
  [N, L, D] (text encoder hidden states), and optionally `uncond_context` [L, D] or [1, L, D] (the empty
  prompt's, enabling condition dropout for classifier-free guidance). Everything is loaded in memory:
  a thin path for fine-tuning on a subset, not a data pipeline for LAION. `write_latent_file` makes
  one such file from images and captions with a pipeline's own VAE and text encoder.

Batches are drawn with an explicit generator seeded per step, so a resumed run draws what an
uninterrupted one would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch

from snapbench.errors import SnapbenchError
from snapbench.specs.arch_spec import ArchSpec
from snapbench.training.toy_digits import DIGIT_PROMPTS, digit_images, is_toy, tokenize

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


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
        from snapbench.user_files import load_safetensors

        p = Path(folder)
        files = sorted(p.glob("*.safetensors")) if p.is_dir() else []
        if not files:
            raise SnapbenchError(f"{p}: --data must be a folder of .safetensors files with 'latents' [N,C,H,W] "
                                 "and 'context' [N,L,D] tensors; none found")
        lat, ctx, unc = [], [], None
        for f in files:
            t = load_safetensors(f)
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


# What an SD pipeline folder must hold for its text encoder and VAE (diffusers' layout, safetensors only).
PIPELINE_FILES = ("text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json",
                  "tokenizer/merges.txt", "vae/config.json", "vae/diffusion_pytorch_model.safetensors")


def missing_files(folder: Path, files: tuple[str, ...]) -> list[str]:
    """The paths of `files` that `folder` lacks (a safetensors file may be sharded: its index counts)."""
    out = []
    for f in files:
        p = folder / f
        sharded = p.with_name(p.name + ".index.json") if p.suffix == ".safetensors" else None
        if not p.is_file() and not (sharded and sharded.is_file()):
            out.append(str(p))
    return out


def pipeline_text_and_vae(pipeline: str | Path) -> tuple[Callable[[Sequence[str]], torch.Tensor], AutoencoderKL]:
    """A pipeline folder's prompt encoder (texts -> the text encoder's last hidden state, padded to the
    tokenizer's length) and its AutoencoderKL, both loaded from local files only."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    pipe = Path(pipeline)
    tokenizer = CLIPTokenizer.from_pretrained(pipe / "tokenizer", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(pipe / "text_encoder", local_files_only=True).eval()
    vae = AutoencoderKL.from_pretrained(pipe / "vae", local_files_only=True).eval()

    def encode(texts: Sequence[str]) -> torch.Tensor:
        ids = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        return text_encoder(ids)[0]

    return encode, vae


@torch.no_grad()
def write_latent_file(pipeline: str | Path, images: torch.Tensor, captions: Sequence[str],
                      out_file: str | Path) -> Path:
    """Encode images [N, 3, H, W] in [-1, 1] and their captions with a pipeline's VAE and text encoder
    into the file `train --data` reads: latents (VAE latent mean x scaling factor), context (the text
    encoder's last hidden state, padded to the tokenizer's length), uncond_context (the empty prompt's)."""
    from safetensors.torch import save

    from snapbench.atomic import atomic_write_bytes

    encode, vae = pipeline_text_and_vae(pipeline)
    latents = vae.encode(images).latent_dist.mean * vae.config.scaling_factor
    tensors = {"latents": latents.contiguous(), "context": encode(captions).contiguous(),
               "uncond_context": encode([""]).contiguous()}
    return atomic_write_bytes(out_file, save(tensors))


def training_data(spec: ArchSpec, data: str | Path | None) -> TrainingData:
    if data is not None:
        return LatentFolderData(data, spec)
    if is_toy(spec):
        return ToyDigitsData()
    raise SnapbenchError(f"{spec.name}: no training data; give --data FOLDER of precomputed latents + text "
                         "contexts (.safetensors with 'latents' and 'context'), or use --model toy-digits")
