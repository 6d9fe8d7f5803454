"""Where `distill-decoder` gets its teacher VAE and latents: the toy's, or a local AutoencoderKL plus a
folder of latents the user made (e.g. with their UNet), held out 10% for PSNR."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from snapbench.distillation.decoder import LatentSet
from snapbench.errors import SnapbenchError

if TYPE_CHECKING:
    from diffusers import AutoencoderKL


def load_teacher_vae(ref: str, *, say: Callable[[str], None] = lambda s: None) -> AutoencoderKL:
    if ref == "toy":
        from snapbench.distillation.toy_vae import load_toy_vae

        return load_toy_vae(say=say)
    from diffusers import AutoencoderKL

    p = Path(ref)
    folder = next((c for c in (p, p / "vae") if (c / "config.json").is_file()), None)
    if folder is None:
        raise SnapbenchError(f"--vae {ref}: no config.json there or in vae/ (give an AutoencoderKL folder, a "
                             "pipeline folder, or 'toy'; nothing is downloaded)")
    try:
        return AutoencoderKL.from_pretrained(folder, local_files_only=True, use_safetensors=True).eval()
    except (OSError, ValueError) as e:
        raise SnapbenchError(f"--vae {folder}: cannot load an AutoencoderKL with its weights ({e})") from None


def load_latents(ref: str, vae: AutoencoderKL, folder: str | None) -> LatentSet:
    if ref == "toy":
        from snapbench.distillation.toy_vae import toy_latents

        if folder is not None:
            raise SnapbenchError("--latents is for a real VAE; the toy encodes its own digits")
        return toy_latents(vae)
    if folder is None:
        raise SnapbenchError(f"--vae {ref}: give --latents FOLDER of .safetensors files with 'latents' [N,C,H,W]")
    from snapbench.user_files import load_safetensors

    files = sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []
    if not files:
        raise SnapbenchError(f"--latents {folder}: no .safetensors files with a 'latents' tensor there")
    parts = []
    for f in files:
        t = load_safetensors(f)
        if "latents" not in t:
            raise SnapbenchError(f"{f}: lacks tensor 'latents' [N,C,H,W]")
        parts.append(t["latents"].float())
    z = torch.cat(parts)
    want = int(vae.config.latent_channels)
    if z.ndim != 4 or z.shape[1] != want:
        raise SnapbenchError(f"--latents {folder}: latents shaped {list(z.shape)}, the VAE takes [N,{want},H,W]")
    if len(z) < 2:
        raise SnapbenchError(f"--latents {folder}: need at least 2 latents (one is held out for PSNR)")
    z = z / float(vae.config.scaling_factor)  # stored as the UNet sees them; the decoder takes them unscaled
    held = max(1, len(z) // 10)
    return LatentSet(z[:-held], z[-held:], None)
