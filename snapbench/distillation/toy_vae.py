"""The toy VAE: a small diffusers AutoencoderKL trained on the digits, standing in for SD's VAE so that
decoder pruning and distillation run on a CPU in minutes.

The 8x8 digits go in as they are (1 channel); the VAE has SD's structure at small size: two levels
(32/64 channels, 16 GroupNorm groups, one ResNet per level, mid-block attention), 4 latent channels at
4x4 (a 16x16 version was measured 3-4x slower per step on this shared 2-core machine). Trained once on the first 1,500 digits (the rest are held out for PSNR) with
reconstruction MSE plus a small KL term (SD's VAE has a KL weight of 1e-6 too), then cached in
snapbench's cache folder (snapbench.paths; save_pretrained, safetensors).
"""

from __future__ import annotations

import torch

from snapbench.training.toy_digits import cache_dir, digit_images

TOY_VAE_VERSION = 1
IMAGE_SIZE = 8
TRAIN_DIGITS = 1500  # the rest (297) are held out
TOY_VAE_CONFIG = dict(in_channels=1, out_channels=1, latent_channels=4, block_out_channels=[32, 64],
                      layers_per_block=1, norm_num_groups=16, sample_size=IMAGE_SIZE,
                      down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                      scaling_factor=1.0)
TRAIN_STEPS = 400
KL_WEIGHT = 1e-6


def toy_images() -> torch.Tensor:
    """All digits as [N, 1, 8, 8] in [-1, 1]."""
    x, _ = digit_images()
    return x


def load_toy_vae(*, steps: int | None = None, say=lambda s: None):
    """The cached toy AutoencoderKL, trained here the first time (a few minutes on one core)."""
    from diffusers import AutoencoderKL

    from snapbench.atomic import atomic_path

    steps = TRAIN_STEPS if steps is None else steps
    folder = cache_dir() / f"toy-digits-vae-v{TOY_VAE_VERSION}-{steps}"
    if (folder / "config.json").is_file():
        try:
            return AutoencoderKL.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError):
            pass  # a damaged cache is rebuilt
    say(f"training the toy VAE ({steps} steps, cached in {folder})")
    vae = train_toy_vae(steps)
    with atomic_path(folder) as tmp:
        vae.save_pretrained(tmp, safe_serialization=True)
    return vae.eval()


def train_toy_vae(steps: int, *, batch_size: int = 32, lr: float = 1e-3, seed: int = 0):
    from diffusers import AutoencoderKL

    images = toy_images()[:TRAIN_DIGITS]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(**TOY_VAE_CONFIG)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    vae.train()
    for _ in range(steps):
        x = images[torch.randint(len(images), (batch_size,), generator=g)]
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
        recon = vae.decode(z).sample
        loss = torch.nn.functional.mse_loss(recon, x) + KL_WEIGHT * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return vae.eval()


@torch.no_grad()
def toy_latents(vae, seed: int = 0):
    """Latents of the digits through the toy VAE's encoder (a posterior sample each): the first 1,500 to
    train on, the held-out 297 with their images."""
    from snapbench.distillation.decoder import LatentSet

    images = toy_images()
    posterior = vae.encode(images).latent_dist
    g = torch.Generator().manual_seed(seed)
    z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
    return LatentSet(z[:TRAIN_DIGITS], z[TRAIN_DIGITS:], images[TRAIN_DIGITS:])
