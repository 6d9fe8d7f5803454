"""What a conversion is asked to do: one frozen, validated, serialisable options object.

The CLI and the profile command build a `ConvertOptions` and hand it to the converters; every invalid
value is refused here, in one line that lists the valid choices, so the API and the CLI fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal, get_args

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject
from snapbench.settings import (  # noqa: F401 re-exported
    ATTENTIONS,
    COMPONENTS,
    IOS_TARGETS,
    PRECISIONS,
    WEIGHT_BITS,
    Component,
    IOSTarget,
    Precision,
    RunSettings,
    check_choice,
)

Mode = Literal["profile", "deploy"]
Target = IOSTarget  # the name callers used before `snapbench.settings`
MODES: tuple[str, ...] = get_args(Mode)
TARGETS: tuple[str, ...] = IOS_TARGETS


def default_jobs() -> int:
    """The cores this process may use (not the machine's: containers and taskset restrict it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ConvertOptions:
    # Choices are plain strings checked in __post_init__ (the CLI hands over what the user typed).
    mode: str = "profile"  # Mode; profile: one package per block signature; deploy: one per block, real weights
    attention: str = "original"  # one of snapbench.settings.ATTENTIONS
    weight_bits: int = 16  # 16: fp16 weights; 8: linear int8; 6 / 4: palettized
    target: str = "iOS16"  # Target; minimum deployment target of the packages
    precision: str = "fp16"  # Precision: compute precision
    latent: int = 64
    batch: int = 2
    tokens: int = 77
    jobs: int | None = None  # worker processes; None: the cores available
    check: bool = False  # also run each package against PyTorch (macOS only)
    chunks: int = 1  # whole UNet only: 2 = two packages (Apple's iOS split)
    seed: int = 0  # random weights (presets without a checkpoint, and every profile-mode package)
    # mixed-bit palettization (mixed_bit.py): (layer, bits) pairs, sorted; empty: --weight-bits for all
    recipe: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        check_choice("--mode", self.mode, MODES)
        check_choice("--attention", self.attention, ATTENTIONS)
        check_choice("--target", self.target, TARGETS)
        check_choice("--precision", self.precision, PRECISIONS)
        check_choice("--weight-bits", self.weight_bits, WEIGHT_BITS)
        if self.weight_bits < 16 and self.precision == "fp32":
            raise SnapbenchError("--weight-bits below 16 compresses fp16 weights; it needs --precision fp16")
        for name in ("latent", "batch", "tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SnapbenchError(f"--{name} must be a positive integer, got {v!r}")
        if self.jobs is not None and (isinstance(self.jobs, bool) or not isinstance(self.jobs, int) or self.jobs < 1):
            raise SnapbenchError(f"--jobs must be a positive integer, got {self.jobs!r}")
        if self.recipe and self.mode != "deploy":
            raise SnapbenchError("--recipe compresses each block's real weights: it needs --mode deploy")
        if self.recipe and (self.weight_bits != 16 or self.precision != "fp16"):
            raise SnapbenchError("--recipe gives each layer its bit width; leave --weight-bits at 16 and --precision "
                                 "at fp16 (a recipe's 16 means fp16)")
        if self.chunks not in (1, 2):
            raise SnapbenchError(f"--chunks must be 1 or 2 (coremltools bisects a model in two), got {self.chunks!r}")

    @classmethod
    def from_settings(cls, settings: RunSettings, *, mode: str = "profile", jobs: int | None = None,
                      seed: int = 0) -> ConvertOptions:
        """Options for packages that `settings` price (compute units are chosen at load time, not here)."""
        return cls(mode=mode, attention=settings.attention, weight_bits=settings.weight_bits,
                   precision=settings.precision, latent=settings.latent, batch=settings.batch,
                   tokens=settings.tokens, jobs=jobs, seed=seed)

    def run_settings(self, compute_units: str = "cpu_and_ne") -> RunSettings:
        """The `RunSettings` these options convert at (a package does not fix its compute units)."""
        return RunSettings(compute_units=compute_units, precision=self.precision, weight_bits=self.weight_bits,
                           attention=self.attention, batch=self.batch, latent=self.latent, tokens=self.tokens)

    @property
    def workers(self) -> int:
        return self.jobs if self.jobs is not None else default_jobs()

    @property
    def palettization(self) -> str | None:
        """How 6- and 4-bit weights are clustered (see compression.py for why it depends on the mode)."""
        if self.recipe:
            return "kmeans_histogram"
        if self.weight_bits >= 8:
            return None
        return "uniform" if self.mode == "profile" else "kmeans_histogram"  # see palette.py

    def cache_fields(self) -> JSONObject:
        """The options that change a package's bytes: part of every cache key (jobs and check do not)."""
        fields: JSONObject = {"mode": self.mode, "weight_bits": self.weight_bits, "palettization": self.palettization,
                  "target": self.target, "precision": self.precision, "seed": self.seed}
        if self.recipe:  # only then: keys of packages without one stay as they were
            fields["recipe"] = self.recipe_digest
        return fields

    @property
    def recipe_digest(self) -> str | None:
        return recipe_digest(self.recipe) if self.recipe else None

    def to_dict(self) -> JSONObject:
        d = asdict(self)
        d["palettization"] = self.palettization
        d["recipe"] = self.recipe_digest  # the digest; the layers are in the recipe file
        return d


def recipe_digest(items: Iterable[tuple[str, int]]) -> str:
    """A mixed-bit recipe's (layer, bits) pairs as a short key (cache keys, manifests)."""
    return hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()[:16]
