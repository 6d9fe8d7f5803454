"""Tiny random checkpoints in the layouts real ones have, so the real loading code runs on them.

Used by the tests and by `snapbench selftest`; every folder is written with the libraries' own
`save_pretrained` (plus the tokenizer files SD-v1.5's repository ships), never a snapbench shortcut:

- `pipeline/`: a diffusers StableDiffusionPipeline folder: model_index.json, unet/ (the `sd15-tiny`
  preset), vae/ (a test-sized AutoencoderKL: 8/16/16/16 channels, 8x upsampling like SD's), text_encoder/
  (a 2-layer CLIPTextModel as wide as the UNet's context), tokenizer/ (vocab.json + merges.txt of a
  1,000-token byte-level BPE, special tokens last as in CLIP's 49,408), scheduler/ (SD-v1.5's PNDM
  settings). No safety checker or feature extractor, as `requires_safety_checker=False` saves it.
- `clip/`: a transformers CLIPModel folder as openai/clip-vit-base-patch16 is laid out (config.json,
  model.safetensors, preprocessor_config.json, tokenizer files): 32x32 images, 16-wide towers.
- `data/`: what `train --data` reads (a .safetensors file of `latents`, `context`, `uncond_context`),
  made the way a user makes it: small synthetic images encoded by the pipeline's VAE (latent mean x
  scaling factor) and their captions by its tokenizer + text encoder; `captions.txt` beside it.
- `prompts.txt`: prompts for the CLIP evaluator, one per line.

Weights are random (seeded): these folders test paths, not image quality.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from snapbench.atomic import atomic_path
from snapbench.training.data import write_latent_file

UNET_PRESET = "sd15-tiny"
VOCAB_SIZE = 1000  # >= the ids `convert --component text_encoder` traces with; bos/eos last, as in CLIP's vocab
IMAGE_SIZE = 32  # the tiny CLIP's input resolution
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
                block_out_channels=[8, 16, 16, 16], norm_num_groups=4, sample_size=64,
                down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                scaling_factor=0.18215)
# SD-v1.5's scheduler/scheduler_config.json (PNDM, scaled-linear betas).
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, clip_sample=False,
                      trained_betas=None)
PROMPTS = ("a photograph of an astronaut riding a horse", "a red cube on a blue table",
           "a watercolor painting of a lighthouse at dusk")
CAPTIONS = ("a red square on a black background", "a green circle on a white background",
            "a blue stripe across a gray field", "a yellow square in the corner",
            "a purple gradient from left to right", "a white circle on a red background",
            "a black stripe on a yellow field", "an orange square in the middle")


@dataclass(frozen=True)
class TinyFixtures:
    root: Path
    pipeline: Path
    clip: Path
    data: Path
    prompts: Path


def write_fixtures(root: str | Path, *, seed: int = 0) -> TinyFixtures:
    """All tiny fixtures under `root` (pipeline/, clip/, data/, prompts.txt); each written atomically."""
    root = Path(root)
    pipeline = write_tiny_pipeline(root / "pipeline", seed=seed)
    clip = write_tiny_clip(root / "clip", seed=seed + 1)
    data = write_training_data(pipeline, root / "data", seed=seed + 2)
    prompts = root / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    return TinyFixtures(root, pipeline, clip, data, prompts)


# -- tokenizer ---------------------------------------------------------------------------------------
def bpe_vocabulary(corpus: Sequence[str], size: int = VOCAB_SIZE) -> tuple[dict[str, int], list[str]]:
    """A CLIP-style byte-level BPE vocabulary of `size` tokens and its merges, learnt on `corpus`.

    CLIP's layout: the 256 byte symbols, the same with the end-of-word suffix `</w>`, one token per merge
    in merge order, then <|startoftext|> and <|endoftext|> last. Merges are learnt greedily (most frequent
    adjacent pair first) on the corpus words; when the corpus runs out, letter pairs fill the rest."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_symbols = list(bytes_to_unicode().values())
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols]
    known = set(tokens)
    merges: list[str] = []
    want = size - len(tokens) - 2
    words: dict[tuple[str, ...], int] = {}
    for text in corpus:
        for w in text.lower().split():
            key = (*w[:-1], w[-1] + "</w>")
            words[key] = words.get(key, 0) + 1

    def add(a: str, b: str) -> None:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        known.add(a + b)

    while len(merges) < want:
        pairs: dict[tuple[str, str], int] = {}
        for word, n in words.items():
            for pair in zip(word, word[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        pairs = {p: n for p, n in pairs.items() if p[0] + p[1] not in known}
        if not pairs:
            break
        a, b = max(pairs, key=lambda p: (pairs[p], p))
        add(a, b)
        merged: dict[tuple[str, ...], int] = {}
        for word, n in words.items():
            out: list[str] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] = n
        words = merged
    letters = "abcdefghijklmnopqrstuvwxyz"
    for a in letters:
        for b in [*letters, *(c + "</w>" for c in letters)]:
            if len(merges) >= want:
                break
            if a + b not in known:
                add(a, b)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tiny_tokenizer(folder: str | Path, corpus: Sequence[str] = PROMPTS + CAPTIONS) -> Path:
    """A CLIPTokenizer folder as SD-v1.5 ships it: vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json (the merges file starts with a version line, as CLIP's does)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = bpe_vocabulary(corpus)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True, **special}, indent=2))
    return folder


def _only_files_sd15_ships(folder: Path) -> None:
    """save_pretrained adds a tokenizer.json; SD-v1.5's folder has none, so the loader must build one."""
    for f in folder.iterdir():
        f.unlink()
    write_tiny_tokenizer(folder)


def _load_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _text_config(tokenizer, width: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=4 * width,
                          num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                          hidden_act="quick_gelu", projection_dim=width, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


# -- pipeline ----------------------------------------------------------------------------------------
def write_tiny_pipeline(folder: str | Path, *, seed: int = 0) -> Path:
    """A StableDiffusionPipeline folder (save_pretrained) around the sd15-tiny UNet; random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    from snapbench.specs.presets import load_preset

    out = Path(folder)
    with atomic_path(out) as tmp:
        tok_dir = write_tiny_tokenizer(tmp / "tokenizer")
        tokenizer = _load_tokenizer(tok_dir)
        unet_cfg = {k: v for k, v in load_preset(UNET_PRESET).base_config.items() if not k.startswith("_")}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DConditionModel(**unet_cfg)
            vae = AutoencoderKL(**TINY_VAE)
            text_encoder = CLIPTextModel(_text_config(tokenizer, int(unet_cfg["cross_attention_dim"])))
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=PNDMScheduler.from_config(SD15_SCHEDULER), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.save_pretrained(tmp, safe_serialization=True)
        _only_files_sd15_ships(tmp / "tokenizer")
    return out


def write_tiny_sdxl_pipeline(folder: str | Path, *, seed: int = 0, unet: str = "sdxl-tiny") -> Path:
    """A StableDiffusionXLPipeline folder (save_pretrained) around the UNet of `unet` (a model reference:
    the sdxl-tiny preset, or an SDXL-class twin of it), random weights:
    text_encoder/ (CLIPTextModel) and text_encoder_2/ (CLIPTextModelWithProjection), 16 wide each, so
    their penultimate states side by side are the UNet's 32-wide context and the second one's projected
    pooled output its 16-wide text_embeds; tokenizer/ and tokenizer_2/ (the same BPE); the tiny VAE."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from snapbench.backbones import resolve_model
    from snapbench.specs.layout import text_embeds_dim

    out = Path(folder)
    with atomic_path(out) as tmp:
        tok_dir = write_tiny_tokenizer(tmp / "tokenizer")
        tokenizer = _load_tokenizer(tok_dir)
        unet_cfg = {k: v for k, v in resolve_model(unet).spec.base_config.items() if not k.startswith("_")}
        pooled = text_embeds_dim(unet_cfg)
        assert pooled is not None
        first = int(unet_cfg["cross_attention_dim"]) - pooled
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            unet = UNet2DConditionModel(**unet_cfg)
            vae = AutoencoderKL(**TINY_VAE)
            one = CLIPTextModel(_text_config(tokenizer, first))
            two = CLIPTextModelWithProjection(_text_config(tokenizer, pooled))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=one, text_encoder_2=two, tokenizer=tokenizer,
                                         tokenizer_2=tokenizer, unet=unet,
                                         scheduler=EulerDiscreteScheduler.from_config(SD15_SCHEDULER))
        pipe.save_pretrained(tmp, safe_serialization=True)
        for sub in ("tokenizer", "tokenizer_2"):
            _only_files_sd15_ships(tmp / sub)
    return out


# -- CLIP --------------------------------------------------------------------------------------------
def write_tiny_clip(folder: str | Path, *, seed: int = 1, width: int = 16) -> Path:
    """A CLIPModel folder with its processor (image processor + tokenizer), random weights."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig

    out = Path(folder)
    with atomic_path(out) as tmp:
        tok_dir = write_tiny_tokenizer(tmp)
        tokenizer = _load_tokenizer(tok_dir)
        vision = CLIPVisionConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=8, projection_dim=width,
                                  hidden_act="quick_gelu")
        config = CLIPConfig(text_config=_text_config(tokenizer, width).to_dict(), vision_config=vision.to_dict(),
                            projection_dim=width)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        images = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                    crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        _align_towers(model, images, tokenizer)
        model.save_pretrained(tmp, safe_serialization=True)
        # preprocessor_config.json as the hub's CLIP folders have it (not transformers 5's processor_config.json)
        images.save_pretrained(tmp)
    return out


@torch.no_grad()
def _align_towers(model, image_processor, tokenizer) -> None:
    """A random CLIP's image and text embeddings sit in two narrow cones; when those point apart every
    cosine is negative and every CLIP score clips to 0, so candidates could not differ. Flipping the image
    projection's sign in that case keeps the weights random and makes the scores positive and varied."""
    pixels = image_processor(images=list(_uint8(synthetic_images(4, 64, seed=7))), return_tensors="pt").pixel_values
    ids = tokenizer(list(PROMPTS[:1]) * 4, padding=True, return_tensors="pt")
    out = model(input_ids=ids.input_ids, attention_mask=ids.attention_mask, pixel_values=pixels)
    if torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds, dim=-1).mean() < 0:
        model.visual_projection.weight.neg_()


def _uint8(images: torch.Tensor) -> torch.Tensor:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


# -- training data -----------------------------------------------------------------------------------
def synthetic_images(n: int, size: int, *, seed: int = 0) -> torch.Tensor:
    """`n` RGB images in [-1, 1], [n, 3, size, size]: a coloured rectangle on a coloured background."""
    g = torch.Generator().manual_seed(seed)
    images = torch.empty(n, 3, size, size)
    for i in range(n):
        bg, fg = torch.rand(3, generator=g) * 2 - 1, torch.rand(3, generator=g) * 2 - 1
        images[i] = bg[:, None, None]
        y0, x0 = (int(v) for v in torch.randint(0, size // 2, (2,), generator=g))
        images[i, :, y0:y0 + size // 2, x0:x0 + size // 2] = fg[:, None, None]
    return images


def write_training_data(pipeline: str | Path, folder: str | Path, *, seed: int = 2,
                        captions: Sequence[str] = CAPTIONS) -> Path:
    """A `train --data` folder for `pipeline`: one .safetensors file + captions.txt."""
    pipe = Path(pipeline)
    vae_cfg = json.loads((pipe / "vae" / "config.json").read_text())
    unet_cfg = json.loads((pipe / "unet" / "config.json").read_text())
    size = int(unet_cfg["sample_size"]) * 2 ** (len(vae_cfg["block_out_channels"]) - 1)
    out = Path(folder)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        write_latent_file(pipe, synthetic_images(len(captions), size, seed=seed), captions,
                          tmp / "train-000.safetensors")
        (tmp / "captions.txt").write_text("\n".join(captions) + "\n")
    return out


if __name__ == "__main__":  # `python -m snapbench.fixtures DIR`: what `selftest` runs as its first stage
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m snapbench.fixtures DIR")
    torch.set_num_threads(1)
    print(write_fixtures(sys.argv[1]))
