"""The toy's proof of step distillation (the paper's Fig. 7 in miniature): teacher at N steps, the
undistilled teacher at M steps and the distilled student at M steps, each at several guidance scales,
all from the same fresh noise (a seed no training step used), scored by

- quality: the toy judge's mean probability that an image shows the digit its prompt asked for (the
  role CLIP score plays for SD), and
- FD: the Frechet distance between Gaussians fitted to the digit classifier's logits (10 features) of the
  generated images and of all 1,797 real digits (the role FID plays; logits because the judge is a
  linear classifier, they are its only learned features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch

from snapbench.errors import SnapbenchError
from snapbench.training.checkpoints import ModelBundle
from snapbench.training.sampling import ddim_sample
from snapbench.training.toy_digits import DIGIT_PROMPTS, digit_images, is_toy, load_classifier

DEFAULT_GUIDANCE: tuple[float, ...] = (1.0, 3.0, 5.0, 7.0, 9.0)
class Scores(TypedDict):
    """One model over the guidance scales: quality and FD to real digits, keyed by the scale ("3")."""

    steps: int
    quality: dict[str, float]
    fd: dict[str, float]


# {"teacher": ..., "student": ..., "undistilled": ...}: `distill --json` prints it
Comparison = dict[str, Scores]

EVAL_SEED = 1_000_003  # far from any training step's seed: fresh noise
CACHE_VERSION = 2  # bump when scoring or sampling changes: cached teacher rows follow it (2: clipped-eps DDIM)


@dataclass(frozen=True)
class ToyCompareConfig:
    guidance: tuple[float, ...] = DEFAULT_GUIDANCE
    samples_per_digit: int = 50
    seed: int = EVAL_SEED

    def __post_init__(self) -> None:
        if not self.guidance:
            raise SnapbenchError("--eval-guidance: give at least one guidance scale, e.g. 1,3,5,7,9")
        if any(w < 0 for w in self.guidance):
            raise SnapbenchError(f"--eval-guidance {list(self.guidance)}: scales must be >= 0")
        if self.samples_per_digit < 2:
            raise SnapbenchError("--eval-samples must be >= 2 per digit (the Frechet distance needs a covariance)")


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(C_a + C_b - 2 (C_a C_b)^1/2) between Gaussians fitted to rows of a and b."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # sqrtm's `disp` argument is gone from recent scipy (a distill run on one crashed while scoring)
    root = np.asarray(linalg.sqrtm(ca @ cb)).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(ca + cb - 2 * root))


def _real_features() -> np.ndarray:
    x, _ = digit_images()
    return load_classifier().logits(x).numpy()


def fresh_noise(bundle: ModelBundle, config: ToyCompareConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels [N], noise [N, C, H, W]): the same for every model compared."""
    cfg = bundle.model.config
    labels = torch.arange(10).repeat_interleave(config.samples_per_digit)
    g = torch.Generator().manual_seed(config.seed)
    noise = torch.randn(len(labels), cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
    return labels, noise


@torch.no_grad()
def score(bundle: ModelBundle, steps: int, config: ToyCompareConfig, labels: torch.Tensor, noise: torch.Tensor,
          real: np.ndarray | None = None) -> Scores:
    """{"steps": n, "quality": {"<w>": q}, "fd": {"<w>": f}} for one model over the guidance scales."""
    if not is_toy(bundle.spec) or bundle.encoder is None:
        raise SnapbenchError(f"{bundle.ref}: the toy comparison scores toy-digits models only")
    clf = load_classifier()
    real = _real_features() if real is None else real
    prompts = [DIGIT_PROMPTS[k] for k in labels.tolist()]
    context = bundle.encoder.encode(prompts)
    uncond = bundle.encoder.encode([""])
    quality: dict[str, float] = {}
    fd: dict[str, float] = {}
    for w in config.guidance:
        images = ddim_sample(bundle.model, context, uncond, noise, noise_schedule=bundle.noise_schedule,
                             steps=steps, guidance=w)
        probs = clf.probs(images)
        key = _key(w)
        quality[key] = round(float(probs[torch.arange(len(labels)), labels].mean()), 4)
        fd[key] = round(frechet_distance(clf.logits(images).numpy(), real), 3)
    return {"steps": steps, "quality": quality, "fd": fd}


def compare(teacher: ModelBundle, student: ModelBundle, teacher_steps: int, student_steps: int,
            config: ToyCompareConfig) -> Comparison:
    """The issue's JSON: {"teacher": E, "student": E, "undistilled": E}, all on the same noise.

    The teacher's two rows are cached by its weights and the settings: a second student of the same
    teacher (vanilla, then CFG-aware) is compared against the very same numbers without resampling."""
    labels, noise = fresh_noise(teacher, config)
    real = _real_features()
    return {"teacher": _cached_score(teacher, teacher_steps, config, labels, noise, real),
            "student": score(student, student_steps, config, labels, noise, real),
            "undistilled": _cached_score(teacher, student_steps, config, labels, noise, real)}


def compare_distilled(out: str | Path, teacher_steps: int, student_steps: int, config: ToyCompareConfig
                      ) -> Comparison:
    """`compare` for the student distilled into `out` and the teacher it was distilled from."""
    from snapbench.distillation.step_distillation import teacher_of
    from snapbench.training.checkpoints import load_bundle

    return compare(load_bundle(teacher_of(out)), load_bundle(out), teacher_steps, student_steps, config)


def score_cache_path(bundle: ModelBundle, steps: int, config: ToyCompareConfig) -> Path:
    """Where a model's scores under these settings are cached: keyed by its weights, not its path."""
    import hashlib
    import json

    from snapbench.paths import cache_root

    h = hashlib.sha256()
    for module in (bundle.model, bundle.encoder):
        if module is None:  # SD bundles have no prompt encoder of their own
            continue
        for name, t in module.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([bundle.noise_schedule, steps, list(config.guidance), config.samples_per_digit,
                         config.seed, CACHE_VERSION], sort_keys=True).encode())
    return cache_root() / "toy-compare" / f"{h.hexdigest()[:32]}.json"


def _cached_score(bundle: ModelBundle, steps: int, config: ToyCompareConfig, labels: torch.Tensor,
                  noise: torch.Tensor, real: np.ndarray) -> Scores:
    import json

    from snapbench.atomic import atomic_write_text

    path = score_cache_path(bundle, steps, config)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # a damaged cache entry is recomputed
    result = score(bundle, steps, config, labels, noise, real)
    atomic_write_text(path, json.dumps(result) + "\n")
    return result


def _key(w: float) -> str:
    return f"{w:g}"


def parse_guidance(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SnapbenchError(f"--eval-guidance {text!r}: give comma-separated numbers, e.g. 1,3,5,7,9") from None
    return values


def table_rows(result: Comparison, names: Sequence[str] = ("teacher", "undistilled", "student")
               ) -> list[list[str | int | float]]:
    """Rows [model, steps, w, quality, fd] for printing."""
    rows: list[list[str | int | float]] = []
    for name in names:
        e = result[name]
        for w, q in e["quality"].items():
            rows.append([name, e["steps"], w, q, e["fd"][w]])
    return rows
