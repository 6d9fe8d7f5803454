"""Evaluators: one interface, the quality of the images a given architecture generates for a prompt set.

An evaluator is configured by a frozen, picklable config (`ToyEvalConfig`, `ClipEvalConfig`) so that
worker processes and Ray tasks can rebuild it; `check()` runs up front in the main process and refuses
missing weights or an empty prompt file before any run state is touched; `build()` gives the object whose
`evaluate(bundle, model, disabled)` returns a `Quality`.

Evolution scores candidates sample by sample (`sample_scores`): sample `s` is one image, always from the
same prompt and the same starting noise whichever candidate draws it (common random numbers), so a
candidate scored on the first n samples and another on the first 2n are compared on the n they share, and
their difference is not noise between draws. The quality over all `sample_count()` samples is the mean
of the per-sample scores and equals `evaluate`'s. Several candidates run as one batch through a model
that holds every block any of them runs (`PerRow`), at most `batch` images per pass.

- `toy`: the toy-digits judge (mean probability, under a cached digit classifier, that each image shows
  the digit its prompt asked for; accuracy alongside). Plays CLIP score's role on a CPU.
- `clip`: CLIP score (100 * max(cos(image, text), 0), as torchmetrics computes it) of images generated with
  DDIM, 50 steps, CFG 7.5 by default (the paper's setting), from local SD parts (text encoder, tokenizer,
  VAE) and a local CLIP model, through transformers. Nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import torch

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject
from snapbench.model.elastic_unet import Disabled, ElasticUNet, PerRow
from snapbench.specs.arch_spec import ArchSpec
from snapbench.training.checkpoints import ModelBundle
from snapbench.training.data import PIPELINE_FILES, missing_files
from snapbench.training.sampling import ddim_sample
from snapbench.training.toy_digits import DIGIT_PROMPTS, is_toy, load_classifier
from snapbench.user_files import read_user_json, read_user_text

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor


class QualityDetails(TypedDict, total=False):
    """What an evaluation reports beside its quality."""

    accuracy: float  # toy: share of images classified as the digit asked for
    per_digit: list[float]  # toy: mean probability of the asked digit, per digit
    images: int  # images generated for this evaluation
    samples: int  # evolution: samples the quality is the mean over


@dataclass(frozen=True)
class Quality:
    quality: float  # the number evolution optimises (higher is better)
    details: QualityDetails = field(default_factory=QualityDetails)


class Evaluator(Protocol):
    def evaluate(self, bundle: ModelBundle, model: ElasticUNet, disabled: Collection[str] = ()) -> Quality: ...

    def sample_scores(self, bundle: ModelBundle, model: ElasticUNet, candidates: Sequence[frozenset[str]],
                      samples: Sequence[int]) -> list[list[float]]:
        """Per candidate (the blocks of `model` it does not run), the score of each sample in `samples`."""


def _row_chunks(candidates: Sequence[frozenset[str]], samples: Sequence[int],
                batch: int) -> Iterator[tuple[list[tuple[int, int]], PerRow]]:
    """(candidate index, sample position) rows, candidate-major, `batch` at a time, with their PerRow."""
    rows = [(c, j) for c in range(len(candidates)) for j in range(len(samples))]
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        yield chunk, PerRow(tuple(candidates[c] for c, _ in chunk))


# -- toy --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyEvalConfig:
    """10 prompts x `samples_per_prompt` images, DDIM `steps`, CFG `guidance`, noise from `seed`.

    Few steps and a low guidance suit the toy: it is scored by a classifier, not by eye, and a full
    evaluation must cost seconds because evolution runs one per candidate action. Sample s asks for
    digit s % 10, so any first 10k samples cover every digit k times."""

    samples_per_prompt: int = 8
    steps: int = 10
    guidance: float = 2.0
    seed: int = 0
    name: str = "toy"
    batch: int = 640  # images per pass when candidates are batched (8x8 latents: a few MB per activation)

    def check(self, spec: ArchSpec) -> None:
        if not is_toy(spec):
            raise SnapbenchError(f"the toy evaluator scores toy-digits models and {spec.name} is not one; "
                                 "use --evaluator clip with --prompts, --clip-weights and --pipeline")
        if self.samples_per_prompt < 1 or self.steps < 1:
            raise SnapbenchError("toy evaluator: samples per prompt and steps must be >= 1")

    def sample_count(self) -> int:
        return 10 * self.samples_per_prompt

    def describe_samples(self) -> str:
        return f"10 prompts x {self.samples_per_prompt}"

    def build(self) -> ToyEvaluator:
        return ToyEvaluator(self)


class ToyEvaluator:
    def __init__(self, config: ToyEvalConfig) -> None:
        self.config = config
        self.classifier = load_classifier()

    def _noise(self, model: ElasticUNet) -> torch.Tensor:
        """Every image's starting noise, digit-major (digit k's images are rows k*spp ... (k+1)*spp - 1),
        drawn on the CPU from `seed`: the same on every device and for every candidate."""
        c, cfg = self.config, model.config
        g = torch.Generator().manual_seed(c.seed)
        return torch.randn(c.sample_count(), cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)

    def _probs(self, bundle: ModelBundle, model: ElasticUNet, labels: torch.Tensor, noise: torch.Tensor,
               disabled: Disabled) -> torch.Tensor:
        c = self.config
        if bundle.encoder is None:
            raise SnapbenchError(f"{bundle.ref}: no toy prompt encoder; the toy evaluator needs a toy-digits model")
        device = next(model.parameters()).device
        with torch.no_grad():
            context = bundle.encoder.encode([DIGIT_PROMPTS[k] for k in labels.tolist()])
            uncond = bundle.encoder.encode([""])
            images = ddim_sample(model, context, uncond, noise.to(device), noise_schedule=bundle.noise_schedule,
                                 steps=c.steps, guidance=c.guidance, disabled=disabled)
        return self.classifier.probs(images.cpu())

    def evaluate(self, bundle: ModelBundle, model: ElasticUNet, disabled: Collection[str] = ()) -> Quality:
        c = self.config
        labels = torch.arange(10).repeat_interleave(c.samples_per_prompt)
        probs = self._probs(bundle, model, labels, self._noise(model), disabled)
        wanted = probs[torch.arange(len(labels)), labels]
        per_digit = wanted.reshape(10, c.samples_per_prompt).mean(1)
        return Quality(float(wanted.mean()), {
            "accuracy": float((probs.argmax(1) == labels).float().mean()),
            "images": len(labels),
            "per_digit": [round(float(v), 4) for v in per_digit],
        })

    def sample_scores(self, bundle: ModelBundle, model: ElasticUNet, candidates: Sequence[frozenset[str]],
                      samples: Sequence[int]) -> list[list[float]]:
        spp = self.config.samples_per_prompt
        noise = self._noise(model)
        digit = [s % 10 for s in samples]
        row = [d * spp + s // 10 for d, s in zip(digit, samples)]  # the image evaluate() draws for sample s
        out = [[0.0] * len(samples) for _ in candidates]
        for chunk, per_row in _row_chunks(candidates, samples, self.config.batch):
            labels = torch.tensor([digit[j] for _, j in chunk])
            probs = self._probs(bundle, model, labels, noise[[row[j] for _, j in chunk]], per_row)
            for (cand, j), p in zip(chunk, probs[torch.arange(len(chunk)), labels].tolist()):
                out[cand][j] = p
        return out


# -- CLIP -------------------------------------------------------------------------------------------
def read_prompts(path: str | Path) -> tuple[str, ...]:
    p = Path(path)
    lines = read_user_text(p, "prompts file").splitlines()
    prompts = tuple(s.strip() for s in lines if s.strip())
    if not prompts:
        raise SnapbenchError(f"{p}: the prompts file is empty (one prompt per line)")
    return prompts


# What a CLIP folder must hold (transformers' layout, safetensors only; the pipeline's: training/data.py).
_CLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt")


def _json_config(path: Path) -> JSONObject:
    data = read_user_json(path, "JSON config")
    if not isinstance(data, dict):
        raise SnapbenchError(f"{path}: not a JSON object")
    return data


@dataclass(frozen=True)
class ClipEvalConfig:
    prompts: tuple[str, ...]
    clip_weights: str | None  # a transformers CLIPModel folder (e.g. clip-vit-base-patch16 saved locally)
    pipeline: str | None  # an SD pipeline folder: text_encoder/, tokenizer/, vae/
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    images_per_prompt: int = 1
    name: str = "clip"
    batch: int = 8  # images per pass when candidates are batched (x2 rows with CFG; 64x64 latents on a GPU)

    def check(self, spec: ArchSpec) -> None:
        if not self.prompts:
            raise SnapbenchError("clip evaluator: no prompts; give --prompts FILE (one prompt per line)")
        if self.clip_weights is None or self.pipeline is None:
            raise SnapbenchError("clip evaluator needs local weights: --clip-weights FOLDER (a CLIP model saved with "
                                 "transformers) and --pipeline FOLDER (SD text_encoder/, tokenizer/, vae/); "
                                 "nothing is downloaded")
        missing = missing_files(Path(self.pipeline), PIPELINE_FILES) + missing_files(Path(self.clip_weights), _CLIP_FILES)
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise SnapbenchError(f"clip evaluator: missing {', '.join(missing[:3])}{more} "
                                 "(CLIP score needs local CLIP and SD weights; nothing is downloaded)")
        clip_cfg = _json_config(Path(self.clip_weights) / "config.json")
        if clip_cfg.get("model_type") != "clip":
            archs = clip_cfg.get("architectures")
            kind = clip_cfg.get("model_type") or (archs[0] if isinstance(archs, list) and archs else "an unknown model")
            raise SnapbenchError(f"--clip-weights {self.clip_weights}: holds {kind}, not a CLIPModel; give a folder "
                                 "saved from transformers' CLIPModel (e.g. openai/clip-vit-large-patch14)")
        width = _json_config(Path(self.pipeline) / "text_encoder" / "config.json").get("hidden_size")
        want = spec.base_config.get("cross_attention_dim")
        want = want[0] if isinstance(want, (list, tuple)) else want
        if want is not None and width != want:
            raise SnapbenchError(f"--pipeline {self.pipeline}: its text encoder is {width} wide, the UNet's "
                                 f"cross_attention_dim is {want}; give the pipeline the UNet was trained with")

    def sample_count(self) -> int:
        return len(self.prompts) * self.images_per_prompt

    def describe_samples(self) -> str:
        return f"{len(self.prompts)} prompts x {self.images_per_prompt}"

    def build(self) -> ClipEvaluator:
        return ClipEvaluator(self)


class ClipEvaluator:
    """Images from the elastic UNet (DDIM + CFG from seeded noise), decoded by the pipeline's VAE, scored
    by CLIP against their prompts. The SD parts and CLIP follow the UNet's device."""

    def __init__(self, config: ClipEvalConfig) -> None:
        from diffusers import AutoencoderKL
        from transformers import CLIPModel, CLIPProcessor, CLIPTextModel, CLIPTokenizer

        self.config = config
        pipe = Path(config.pipeline or "")
        self.tokenizer = CLIPTokenizer.from_pretrained(pipe / "tokenizer", local_files_only=True)
        self.text_encoder = CLIPTextModel.from_pretrained(pipe / "text_encoder", local_files_only=True).eval()
        self.vae = AutoencoderKL.from_pretrained(pipe / "vae", local_files_only=True).eval()
        self.clip = CLIPModel.from_pretrained(config.clip_weights, local_files_only=True).eval()
        self.processor = CLIPProcessor.from_pretrained(config.clip_weights, local_files_only=True)

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return self.text_encoder(ids.to(self.text_encoder.device))[0]

    def _noise(self, model: ElasticUNet, prompt_index: int) -> torch.Tensor:
        """The starting noise of prompt `prompt_index`'s images, from its own generator (seed, prompt): any
        subset of prompts draws the same noise as the whole set, on every device and for every candidate."""
        c, cfg = self.config, model.config
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + prompt_index)
        return torch.randn(c.images_per_prompt, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)

    @torch.no_grad()
    def _scores(self, bundle: ModelBundle, model: ElasticUNet, prompts: list[str], noise: torch.Tensor,
                disabled: Disabled) -> list[float]:
        c = self.config
        device = next(model.parameters()).device
        for part in (self.text_encoder, self.vae, self.clip):
            part.to(device)
        latents = ddim_sample(model, self._encode(prompts), self._encode([""]), noise.to(device),
                              noise_schedule=bundle.noise_schedule, steps=c.steps, guidance=c.guidance,
                              disabled=disabled)
        images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return clip_score(self.clip, self.processor, pixels, prompts).tolist()

    def evaluate(self, bundle: ModelBundle, model: ElasticUNet, disabled: Collection[str] = ()) -> Quality:
        c = self.config
        scores: list[float] = []
        for p, prompt in enumerate(c.prompts):
            scores.extend(self._scores(bundle, model, [prompt] * c.images_per_prompt, self._noise(model, p), disabled))
        return Quality(float(sum(scores) / len(scores)), {"images": len(scores)})

    def sample_scores(self, bundle: ModelBundle, model: ElasticUNet, candidates: Sequence[frozenset[str]],
                      samples: Sequence[int]) -> list[list[float]]:
        c, n = self.config, len(self.config.prompts)
        noises: dict[int, torch.Tensor] = {}
        out = [[0.0] * len(samples) for _ in candidates]
        for chunk, per_row in _row_chunks(candidates, samples, c.batch):
            where = [(samples[j] % n, samples[j] // n) for _, j in chunk]  # (prompt, its image)
            for p, _ in where:
                if p not in noises:
                    noises[p] = self._noise(model, p)
            noise = torch.stack([noises[p][k] for p, k in where])
            scores = self._scores(bundle, model, [c.prompts[p] for p, _ in where], noise, per_row)
            for (cand, j), v in zip(chunk, scores):
                out[cand][j] = v
        return out


@torch.no_grad()
def clip_score(clip: CLIPModel, processor: CLIPProcessor, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
    """CLIP score of each image [N, 3, H, W] (uint8) with its prompt: 100 * max(cos(image, text), 0), the
    embeddings being CLIP's projections (torchmetrics' definition). `processor` resizes, crops and
    normalises the images and tokenizes the prompts as the CLIP checkpoint was trained."""
    device = next(clip.parameters()).device
    inputs = processor(text=list(prompts), images=list(images.cpu()), return_tensors="pt", padding=True,
                       truncation=True)
    # The model's forward returns the projected embeddings under these names in every transformers
    # version; get_image_features returns a tensor before 5.0 and a model output after.
    out = clip(input_ids=inputs["input_ids"].to(device), attention_mask=inputs["attention_mask"].to(device),
               pixel_values=inputs["pixel_values"].to(device))
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1)
    return 100 * cos.clamp(min=0)


EvalConfig = ToyEvalConfig | ClipEvalConfig
