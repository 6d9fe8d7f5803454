"""DDIM in closed form on a batch where every sample sits at its own timestep.

diffusers' DDIMScheduler.step takes one timestep per call; distillation draws a timestep per sample, so
the same arithmetic is written here over tensors of alphas (checked against DDIMScheduler.step in the
tests). Notation: z_t = alpha_t x0 + sigma_t eps, alpha_t = sqrt(alphas_cumprod[t]), sigma_t =
sqrt(1 - alphas_cumprod[t]); the step to a negative timestep lands on the scheduler's final alpha.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from snapbench.json_types import JSON, json_int


@dataclass(frozen=True)
class NoiseLevels:
    """alpha / sigma lookup for a training noise schedule (a diffusers DDPM/DDIM config)."""

    alphas_cumprod: torch.Tensor  # [T]
    final_alphas_cumprod: float  # what a step to t < 0 lands on
    prediction_type: str
    clip_sample: float | None  # clip range of the predicted x0, or None

    @classmethod
    def from_schedule(cls, noise_schedule: Mapping[str, JSON]) -> NoiseLevels:
        from snapbench.training.sampling import ddim_scheduler

        sched = ddim_scheduler(noise_schedule)
        clip = float(sched.config.clip_sample_range) if sched.config.clip_sample else None
        return cls(sched.alphas_cumprod.double(), float(sched.final_alpha_cumprod),
                   str(sched.config.prediction_type), clip)

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """alpha_t, sigma_t as float tensors shaped [B, 1, 1, 1]; t < 0 means the final step's target."""
        t = t.long().cpu()
        a = torch.where(t >= 0, self.alphas_cumprod[t.clamp(min=0)],
                        torch.full(t.shape, self.final_alphas_cumprod, dtype=torch.float64))
        return a.sqrt().float().view(-1, 1, 1, 1), (1 - a).sqrt().float().view(-1, 1, 1, 1)

    def to_x0_eps(self, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor,
                  prediction_type: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A model output (epsilon or v) at z_t -> (predicted x0, predicted eps), both unclipped."""
        a, s = (x.to(z_t.device) for x in self.alpha_sigma(t))
        kind = prediction_type or self.prediction_type
        if kind == "v_prediction":
            return a * z_t - s * output, a * output + s * z_t
        if kind == "epsilon":
            return (z_t - s * output) / a, output
        raise ValueError(f"prediction type {kind!r}: epsilon or v_prediction")

    def ddim_step(self, output: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor,
                  prediction_type: str | None = None) -> torch.Tensor:
        """One deterministic DDIM step (eta = 0) from t to t_prev, as sampling.ddim_step computes it: x0
        clipped when the schedule clips, and then eps re-derived from the clipped x0 (so the step stays on
        the line from z_t through x0; the raw eps let guided 32-step sampling drift and collapse)."""
        x0, eps = self.to_x0_eps(output, z_t, t, prediction_type)
        if self.clip_sample is not None:
            x0 = x0.clamp(-self.clip_sample, self.clip_sample)
            a, s = (x.to(z_t.device) for x in self.alpha_sigma(t))
            eps = (z_t - a * x0) / s
        a_prev, s_prev = (x.to(z_t.device) for x in self.alpha_sigma(t_prev))
        return a_prev * x0 + s_prev * eps

    def x0_reaching(self, z_t: torch.Tensor, t: torch.Tensor, z_prev: torch.Tensor,
                    t_prev: torch.Tensor) -> torch.Tensor:
        """The x0 prediction whose single DDIM step from (z_t, t) lands exactly on (z_prev, t_prev).

        From z_prev = alpha' x + sigma' (z_t - alpha x) / sigma: the student's target when one of its
        steps must do what several teacher steps did (Salimans & Ho 2022, eq. 8)."""
        a, s = (x.to(z_t.device) for x in self.alpha_sigma(t))
        a_prev, s_prev = (x.to(z_t.device) for x in self.alpha_sigma(t_prev))
        ratio = s_prev / s
        return (z_prev - ratio * z_t) / (a_prev - ratio * a)

    def snr_weight(self, t: torch.Tensor) -> torch.Tensor:
        """Truncated-SNR weighting max(alpha^2 / sigma^2, 1) of an x-space loss, shaped [B]."""
        a, s = self.alpha_sigma(t)
        return (a.square() / s.square()).clamp(min=1.0).view(-1)


def ddim_timesteps(noise_schedule: Mapping[str, JSON], steps: int) -> list[int]:
    """The timesteps `steps`-step DDIM sampling visits (snapbench's sampler: trailing spacing)."""
    from snapbench.training.sampling import ddim_scheduler

    sched = ddim_scheduler(noise_schedule)
    sched.set_timesteps(steps)
    return [int(t) for t in sched.timesteps]


def prev_timestep(noise_schedule: Mapping[str, JSON], t: int, steps: int) -> int:
    """Where diffusers' DDIM step from t goes at `steps` steps (t - T // steps; negative: the end)."""
    return t - json_int(noise_schedule, "num_train_timesteps", 1000) // steps
