"""Evaluators: one interface, the quality of the images a given architecture generates for a prompt set.

An evaluator is configured by a frozen, picklable config (`ToyEvalConfig`, `ClipEvalConfig`) so that
worker processes and Ray tasks can rebuild it; `check()` runs up front in the main process and refuses
missing weights or an empty prompt file before any run state is touched; `build()` gives the object whose
`evaluate(bundle, model, disabled)` returns a `Quality`.

- `toy`: the toy-digits judge (mean probability, under a cached digit classifier, that each image shows
  the digit its prompt asked for; accuracy alongside). Plays CLIP score's role on a CPU.
- `clip`: CLIP score (100 * max(cos(image, text), 0), as torchmetrics computes it) of images generated with
  DDIM, 50 steps, CFG 7.5 by default (the paper's setting), from local SD parts (text encoder, tokenizer,
  VAE) and a local CLIP model, through transformers. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Protocol, Sequence, Union

import torch

from snapbench.errors import SnapbenchError
from snapbench.user_files import read_user_json, read_user_text
from snapbench.evolution.checkpoints import ModelBundle
from snapbench.evolution.sampling import ddim_sample
from snapbench.evolution.toy_digits import DIGIT_PROMPTS, is_toy, load_classifier
from snapbench.model.elastic_unet import ElasticUNet
from snapbench.specs.arch_spec import ArchSpec


@dataclass(frozen=True)
class Quality:
    quality: float  # the number evolution optimises (higher is better)
    details: dict[str, Any] = field(default_factory=dict)


class Evaluator(Protocol):
    def evaluate(self, bundle: ModelBundle, model: ElasticUNet, disabled: Collection[str] = ()) -> Quality: ...


# -- toy --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToyEvalConfig:
    """10 prompts x `samples_per_prompt` images, DDIM `steps`, CFG `guidance`, noise from `seed`.

    Few steps and a low guidance suit the toy: it is scored by a classifier, not by eye, and a full
    evaluation must cost seconds because evolution runs one per candidate action."""

    samples_per_prompt: int = 8
    steps: int = 10
    guidance: float = 2.0
    seed: int = 0
    name: str = "toy"

    def check(self, spec: ArchSpec) -> None:
        if not is_toy(spec):
            raise SnapbenchError(f"the toy evaluator scores toy-digits models and {spec.name} is not one; "
                                 "use --evaluator clip with --prompts, --clip-weights and --pipeline")
        if self.samples_per_prompt < 1 or self.steps < 1:
            raise SnapbenchError("toy evaluator: samples per prompt and steps must be >= 1")

    def build(self) -> "ToyEvaluator":
        return ToyEvaluator(self)


class ToyEvaluator:
    def __init__(self, config: ToyEvalConfig) -> None:
        self.config = config
        self.classifier = load_classifier()

    def evaluate(self, bundle: ModelBundle, model: ElasticUNet, disabled: Collection[str] = ()) -> Quality:
        c = self.config
        if bundle.encoder is None:
            raise SnapbenchError(f"{bundle.ref}: no toy prompt encoder; the toy evaluator needs a toy-digits model")
        labels = torch.arange(10).repeat_interleave(c.samples_per_prompt)
        prompts = [DIGIT_PROMPTS[k] for k in labels.tolist()]
        cfg = model.config
        device = next(model.parameters()).device
        g = torch.Generator().manual_seed(c.seed)  # noise drawn on the CPU: the same on every device
        noise = torch.randn(len(prompts), cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=g)
        with torch.no_grad():
            context = bundle.encoder.encode(prompts)
            uncond = bundle.encoder.encode([""])
            images = ddim_sample(model, context, uncond, noise.to(device), noise_schedule=bundle.noise_schedule,
                                 steps=c.steps, guidance=c.guidance, disabled=disabled)
        probs = self.classifier.probs(images.cpu())
        wanted = probs[torch.arange(len(labels)), labels]
        per_digit = wanted.reshape(10, c.samples_per_prompt).mean(1)
        return Quality(float(wanted.mean()), {
            "accuracy": float((probs.argmax(1) == labels).float().mean()),
            "images": len(labels),
            "per_digit": [round(float(v), 4) for v in per_digit],
        })


# -- CLIP -------------------------------------------------------------------------------------------
def read_prompts(path: str | Path) -> tuple[str, ...]:
    p = Path(path)
    lines = read_user_text(p, "prompts file").splitlines()
    prompts = tuple(s.strip() for s in lines if s.strip())
    if not prompts:
        raise SnapbenchError(f"{p}: the prompts file is empty (one prompt per line)")
    return prompts


# What each folder must hold (transformers / diffusers layouts, safetensors only).
_PIPELINE_FILES = ("text_encoder/config.json", "text_encoder/model.safetensors", "tokenizer/vocab.json",
                   "tokenizer/merges.txt", "vae/config.json", "vae/diffusion_pytorch_model.safetensors")
_CLIP_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "vocab.json", "merges.txt")


def _missing(folder: Path, files: tuple[str, ...]) -> list[str]:
    out = []
    for f in files:
        p = folder / f
        sharded = p.with_name(p.name + ".index.json") if p.suffix == ".safetensors" else None
        if not p.is_file() and not (sharded and sharded.is_file()):
            out.append(str(p))
    return out


def _json_config(path: Path) -> dict[str, Any]:
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

    def check(self, spec: ArchSpec) -> None:
        if not self.prompts:
            raise SnapbenchError("clip evaluator: no prompts; give --prompts FILE (one prompt per line)")
        if self.clip_weights is None or self.pipeline is None:
            raise SnapbenchError("clip evaluator needs local weights: --clip-weights FOLDER (a CLIP model saved with "
                                 "transformers) and --pipeline FOLDER (SD text_encoder/, tokenizer/, vae/); "
                                 "nothing is downloaded")
        missing = _missing(Path(self.pipeline), _PIPELINE_FILES) + _missing(Path(self.clip_weights), _CLIP_FILES)
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise SnapbenchError(f"clip evaluator: missing {', '.join(missing[:3])}{more} "
                                 "(CLIP score needs local CLIP and SD weights; nothing is downloaded)")
        clip_cfg = _json_config(Path(self.clip_weights) / "config.json")
        if clip_cfg.get("model_type") != "clip":
            kind = clip_cfg.get("model_type") or (clip_cfg.get("architectures") or ["an unknown model"])[0]
            raise SnapbenchError(f"--clip-weights {self.clip_weights}: holds {kind}, not a CLIPModel; give a folder "
                                 "saved from transformers' CLIPModel (e.g. openai/clip-vit-large-patch14)")
        width = _json_config(Path(self.pipeline) / "text_encoder" / "config.json").get("hidden_size")
        want = spec.base_config.get("cross_attention_dim")
        want = want[0] if isinstance(want, (list, tuple)) else want
        if want is not None and width != want:
            raise SnapbenchError(f"--pipeline {self.pipeline}: its text encoder is {width} wide, the UNet's "
                                 f"cross_attention_dim is {want}; give the pipeline the UNet was trained with")

    def build(self) -> "ClipEvaluator":
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

    @torch.no_grad()
    def evaluate(self, bundle: ModelBundle, model: ElasticUNet, disabled: Collection[str] = ()) -> Quality:
        c = self.config
        device = next(model.parameters()).device
        for part in (self.text_encoder, self.vae, self.clip):
            part.to(device)
        g = torch.Generator().manual_seed(c.seed)
        uncond = self._encode([""])
        scores = []
        cfg = model.config
        for prompt in c.prompts:
            context = self._encode([prompt] * c.images_per_prompt)
            noise = torch.randn(c.images_per_prompt, cfg.in_channels, cfg.sample_size, cfg.sample_size,
                                generator=g).to(device)
            latents = ddim_sample(model, context, uncond, noise, noise_schedule=bundle.noise_schedule,
                                  steps=c.steps, guidance=c.guidance, disabled=disabled)
            images = self.vae.decode(latents / self.vae.config.scaling_factor).sample
            pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            scores.extend(clip_score(self.clip, self.processor, pixels, [prompt] * len(pixels)).tolist())
        return Quality(float(sum(scores) / len(scores)), {"images": len(scores)})


@torch.no_grad()
def clip_score(clip: Any, processor: Any, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
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


EvalConfig = Union[ToyEvalConfig, ClipEvalConfig]
