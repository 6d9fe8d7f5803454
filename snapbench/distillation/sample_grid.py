"""`snapbench sample`: a PNG grid (one row per prompt) of what a model generates with DDIM + CFG, so people
can look at what distillation did.

- toy-digits models: prompts "digit k", the 8x8 images upscaled by whole pixels.
- SD-structured models: prompts through a local pipeline's tokenizer + text encoder, latents decoded by
  its VAE (`--pipeline FOLDER` with text_encoder/, tokenizer/, vae/; nothing is downloaded).

Steps default to what the model was distilled for (its sampling.json), else 50.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from snapbench.errors import SnapbenchError
from snapbench.training.checkpoints import ModelBundle, load_bundle
from snapbench.training.sampling import ddim_sample
from snapbench.training.toy_digits import is_toy, tokenize

DEFAULT_STEPS = 50
MAX_IMAGES = 256  # a grid is for looking at; more is a benchmark


@dataclass(frozen=True)
class SampleConfig:
    prompts: tuple[str, ...]
    steps: int | None = None  # None: the model's sampling.json, else DEFAULT_STEPS
    guidance: float = 5.0
    per_prompt: int = 8
    seed: int = 0
    pipeline: str | None = None  # SD: a local pipeline folder (text_encoder/, tokenizer/, vae/)
    scale: int = 4  # toy: pixels per image pixel

    def __post_init__(self) -> None:
        if not self.prompts:
            raise SnapbenchError("give at least one --prompt")
        if self.steps is not None and self.steps < 1:
            raise SnapbenchError(f"--steps {self.steps} must be >= 1")
        if self.per_prompt < 1 or len(self.prompts) * self.per_prompt > MAX_IMAGES:
            raise SnapbenchError(f"--per-prompt {self.per_prompt} x {len(self.prompts)} prompts: between 1 and "
                                 f"{MAX_IMAGES} images in a grid")
        if self.guidance < 0:
            raise SnapbenchError(f"--cfg {self.guidance} must be >= 0")
        if self.scale < 1:
            raise SnapbenchError(f"--scale {self.scale} must be >= 1")


def resolve_steps(model: str | Path, steps: int | None) -> int:
    from snapbench.distillation.step_distillation import read_sampling

    if steps is not None:
        return steps
    settings = read_sampling(model) if Path(str(model)).is_dir() else None
    return int(settings["steps"]) if settings else DEFAULT_STEPS


@torch.no_grad()
def generate(bundle: ModelBundle, config: SampleConfig, steps: int) -> torch.Tensor:
    """Images [P * per_prompt, C, H, W] in [-1, 1], prompt-major."""
    prompts = [p for p in config.prompts for _ in range(config.per_prompt)]
    cfg = bundle.model.config
    g = torch.Generator().manual_seed(config.seed)
    noise = torch.randn(len(prompts), cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    if is_toy(bundle.spec):
        tokenize(prompts)  # refuses unknown prompts before any work
        encoder = bundle.encoder
        if encoder is None:  # load_bundle gives every toy one; a hand-made bundle may lack it
            raise SnapbenchError(f"{bundle.ref}: a toy-digits model needs its prompt encoder to sample")
        context, uncond = encoder.encode(prompts), encoder.encode([""])
        return ddim_sample(bundle.model, context, uncond, noise, noise_schedule=bundle.noise_schedule, steps=steps,
                           guidance=config.guidance).clamp(-1, 1)
    return _generate_sd(bundle, config, prompts, noise, steps)


def _generate_sd(bundle: ModelBundle, config: SampleConfig, prompts: list[str], noise: torch.Tensor,
                 steps: int) -> torch.Tensor:
    from snapbench.training.data import PIPELINE_FILES, missing_files, pipeline_text_and_vae

    if config.pipeline is None:
        raise SnapbenchError(f"{bundle.ref}: an SD-structured model needs --pipeline FOLDER (text_encoder/, "
                             "tokenizer/, vae/) to encode prompts and decode images; nothing is downloaded")
    missing = missing_files(Path(config.pipeline), PIPELINE_FILES)
    if missing:
        raise SnapbenchError(f"--pipeline {config.pipeline}: missing {missing[0]}")
    encode, vae = pipeline_text_and_vae(config.pipeline)
    latents = ddim_sample(bundle.model, encode(prompts), encode([""]), noise, noise_schedule=bundle.noise_schedule,
                          steps=steps, guidance=config.guidance)
    return vae.decode(latents / vae.config.scaling_factor).sample.clamp(-1, 1)


def grid_image(images: torch.Tensor, rows: int, scale: int = 1, gap: int = 1) -> np.ndarray:
    """[N, C, H, W] in [-1, 1] -> a uint8 grid [rows*(H*scale+gap)-gap, cols*(W*scale+gap)-gap, 3]."""
    n, c, h, w = images.shape
    cols = n // rows
    px = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    px = px.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    if c == 1:
        px = px.expand(-1, 3, -1, -1)
    elif c != 3:
        px = px[:, :3] if c > 3 else px[:, :1].expand(-1, 3, -1, -1)
    hh, ww = h * scale, w * scale
    out = np.full((rows * (hh + gap) - gap, cols * (ww + gap) - gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        out[r * (hh + gap):r * (hh + gap) + hh, k * (ww + gap):k * (ww + gap) + ww] = px[i].permute(1, 2, 0).numpy()
    return out


def sample_grid(model: str | Path, out: str | Path, config: SampleConfig) -> dict:
    """Generate and write the grid as a PNG (atomically); returns what was done."""
    from PIL import Image

    from snapbench.atomic import atomic_path

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise SnapbenchError(f"--out {out}: the grid is written as PNG; give a path ending in .png")
    steps = resolve_steps(model, config.steps)
    bundle = load_bundle(model)
    images = generate(bundle, config, steps)
    grid = grid_image(images, rows=len(config.prompts), scale=config.scale if is_toy(bundle.spec) else 1)
    with atomic_path(out) as tmp:
        Image.fromarray(grid).save(tmp, format="PNG")
    return {"out": str(out), "steps": steps, "guidance": config.guidance, "prompts": list(config.prompts),
            "per_prompt": config.per_prompt, "width": int(grid.shape[1]), "height": int(grid.shape[0])}
