"""The built-in toy, `toy-digits`: SnapFusion's method at a size a laptop CPU trains in minutes.

- Data: scikit-learn's bundled handwritten digits (1,797 images, 8x8, values 0..16; no download), used
  directly as a 1-channel 8x8 "latent" scaled to [-1, 1]. Upscaling to 16x16 was measured 3.5x slower
  per training step on this 2-core machine and adds no information.
- UNet: the `toy-digits` preset, SD-v1.5's exact block structure (so every paper stage and block id
  exists) at 16/32/32/32 channels, built by the same diffusers + elastic UNet code as SD-v1.5.
- Text: the prompt "digit k" goes through a learned embedding table (3 tokens: <bos> digit k) into
  cross-attention; the empty prompt ("<bos> <pad> <pad>") is the unconditional branch of CFG. No CLIP.
- Quality (CLIP score's role): a small digit classifier, trained once and cached under
  the cache folder, scores whether each generated image shows the digit its prompt asked for.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from snapbench.atomic import atomic_write_bytes
from snapbench.dit.family import context_key
from snapbench.errors import SnapbenchError
from snapbench.specs.arch_spec import ArchSpec

TOY_PRESET = "toy-digits"
VOCAB: tuple[str, ...] = ("<pad>", "<bos>", "digit", *map(str, range(10)))
CONTEXT_TOKENS = 3  # <bos> digit k
DIGIT_PROMPTS: tuple[str, ...] = tuple(f"digit {k}" for k in range(10))
ENCODER_FILE = "toy_text.safetensors"
CLASSIFIER_VERSION = 1  # bump when the classifier's recipe changes: the cache key follows it


def is_toy(spec: ArchSpec) -> bool:
    return spec.notes.get("toy") == "digits"


def cache_dir() -> Path:
    """Where trained-once artefacts live: the cache folder (snapbench.paths)."""
    from snapbench.paths import cache_root

    return cache_root()


# -- text -------------------------------------------------------------------------------------------
def tokenize(prompts: Sequence[str]) -> torch.Tensor:
    """Prompts -> token ids [B, 3]. Only "digit k" (k = 0..9) and "" (unconditional) are known."""
    ids = []
    for p in prompts:
        words = p.lower().split()
        if not words:
            ids.append([1, 0, 0])
            continue
        if len(words) != 2 or words[0] != "digit" or words[1] not in VOCAB[3:]:
            raise SnapbenchError(f"toy prompt {p!r}: the toy knows only \"digit 0\" .. \"digit 9\" (or \"\")")
        ids.append([1, VOCAB.index("digit"), VOCAB.index(words[1])])
    return torch.tensor(ids, dtype=torch.long)


class PromptEncoder(nn.Module):
    """The toy's text encoder: a token table plus a position table, trained with the UNet."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(len(VOCAB), width)
        self.positions = nn.Parameter(torch.zeros(CONTEXT_TOKENS, width))
        nn.init.normal_(self.tokens.weight, std=0.5)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:  # [B, 3] -> [B, 3, width]
        return self.tokens(token_ids) + self.positions

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        return self(tokenize(prompts).to(self.positions.device))


def context_width(spec: ArchSpec) -> int:
    """The width of the prompt encoder's output: what the backbone's text input takes."""
    d = spec.base_config.get(context_key(spec.base_config.get("_class_name")), 32)
    return int(d[0] if isinstance(d, (list, tuple)) else d)


# -- data -------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def digit_images() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as [N, 1, 8, 8] in [-1, 1] and their labels [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0
    return x, torch.tensor(d.target, dtype=torch.long)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] -> the dataset's 0..16 scale, clamped."""
    return ((x.clamp(-1, 1) + 1.0) * 8.0).reshape(x.shape[0], -1)


# -- the judge --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DigitClassifier:
    """Multinomial logistic regression on the 64 pixels (scikit-learn), applied in torch.

    Linear on purpose: it is a template matcher that never saw generated images, so it rewards images
    that look like the dataset's digits and nothing else. Its held-out accuracy is kept for reports."""

    weight: np.ndarray  # [10, 64]
    bias: np.ndarray  # [10]
    mean: np.ndarray  # [64] standardisation fitted on the training split
    scale: np.ndarray  # [64]
    holdout_accuracy: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 1, 8, 8] in [-1, 1] -> class logits [N, 10] (float64)."""
        f = (to_pixels(x).double() - torch.from_numpy(self.mean)) / torch.from_numpy(self.scale)
        return f @ torch.from_numpy(self.weight).T + torch.from_numpy(self.bias)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, 1, 8, 8] in [-1, 1] -> class probabilities [N, 10]."""
        return torch.softmax(self.logits(x), dim=1).float()


def _train_classifier() -> DigitClassifier:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = digit_images()
    pixels, labels = to_pixels(x).numpy(), y.numpy()
    xa, xb, ya, yb = train_test_split(pixels, labels, test_size=0.25, random_state=0, stratify=labels)
    scaler = StandardScaler().fit(xa)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    clf = LogisticRegression(C=0.1, max_iter=3000).fit((xa - scaler.mean_) / scale, ya)
    acc = float(clf.score((xb - scaler.mean_) / scale, yb))
    return DigitClassifier(clf.coef_, clf.intercept_, scaler.mean_, scale, acc)


_CLASSIFIER: DigitClassifier | None = None


def load_classifier(folder: Path | None = None) -> DigitClassifier:
    """The cached classifier (npz, no pickle); trained in about a second the first time."""
    global _CLASSIFIER
    if _CLASSIFIER is not None and folder is None:
        return _CLASSIFIER
    path = (folder or cache_dir()) / f"toy-digits-classifier-v{CLASSIFIER_VERSION}.npz"
    clf = None
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                clf = DigitClassifier(z["weight"], z["bias"], z["mean"], z["scale"], float(z["holdout_accuracy"]))
        except (OSError, KeyError, ValueError):  # a damaged cache file is rebuilt, not fatal
            clf = None
    if clf is None:
        clf = _train_classifier()
        buf = io.BytesIO()
        np.savez(buf, weight=clf.weight, bias=clf.bias, mean=clf.mean, scale=clf.scale,
                 holdout_accuracy=np.array(clf.holdout_accuracy))
        atomic_write_bytes(path, buf.getvalue())
    if folder is None:
        _CLASSIFIER = clf
    return clf
