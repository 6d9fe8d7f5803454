"""One image, end to end: 2 x text encoder + steps x UNet step + VAE decoder (the paper's Table 1 budget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

# Classifier-free guidance encodes the prompt and the empty prompt: two text-encoder runs per image.
TEXT_ENCODER_RUNS = 2


class ImageBudgetDoc(TypedDict):
    text_encoder_ms: float
    unet_ms: float
    vae_decoder_ms: float
    total_ms: float
    total_s: float


@dataclass(frozen=True)
class ImageBudget:
    text_encoder_ms: float  # both runs
    unet_ms: float  # every step
    vae_decoder_ms: float
    total_ms: float
    total_s: float

    def to_dict(self) -> ImageBudgetDoc:
        return ImageBudgetDoc(text_encoder_ms=self.text_encoder_ms, unet_ms=self.unet_ms,
                              vae_decoder_ms=self.vae_decoder_ms, total_ms=self.total_ms, total_s=self.total_s)


def image_budget(text_encoder_ms: float, unet_step_ms: float, vae_decoder_ms: float, steps: int) -> ImageBudget:
    te, un = TEXT_ENCODER_RUNS * text_encoder_ms, steps * unet_step_ms
    total = te + un + vae_decoder_ms
    return ImageBudget(te, un, vae_decoder_ms, total, total / 1000)
