"""Shared pieces of the evolution tests: a tiny trained toy folder, a fixed latency source, a stub
evaluator whose quality is known in advance (so the order of removals can be checked exactly)."""

from __future__ import annotations

import csv
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from snapbench.evolution.evaluators import Quality, ToyEvalConfig

# The cheapest evaluation that still runs the whole sampler: 10 images, 1 DDIM step.
TINY_EVAL = ToyEvalConfig(samples_per_prompt=1, steps=1, guidance=2.0, seed=0)

CA_MS, RB_MS, SHORTCUT_MS, AUX_MS = 1.0, 0.5, 0.2, 0.1


class KindSource:
    """A LatencySource that prices a signature by its kind alone (the key starts with it)."""

    def ms(self, signature_key: str) -> tuple[float, str]:
        kind = signature_key.split("|", 1)[0]
        return {"CA": CA_MS, "RB": RB_MS, "RB-shortcut": SHORTCUT_MS}.get(kind, AUX_MS), "fixed"


_COSTS: dict = {}


def fixed_costs(spec):
    """The cost model under KindSource (cutting three variants takes seconds: computed once per config)."""
    import json

    from snapbench.evolution.latency_costs import costs_from_source

    key = json.dumps(dict(spec.base_config), sort_keys=True)
    if key not in _COSTS:
        _COSTS[key] = costs_from_source(spec, KindSource(), device="iphone14pro", tokens=3)
    return _COSTS[key]


def write_fixed_table(spec, path: Path) -> Path:
    """Every signature any candidate of `spec` can have, priced by kind, as a CSV."""
    from snapbench.blocks.cut import InputShapes, cut_blocks
    from snapbench.evolution.latency_costs import _variant
    from snapbench.model.loading import ModelSource, build_unet

    keys = set()
    for keep, copies in ((True, 0), (False, 0), (True, 1)):
        m = build_unet(ModelSource("v", _variant(spec, keep, copies, "v")), device="meta")
        keys |= {b.signature.key() for b in cut_blocks(m, InputShapes(latent=8, batch=2, tokens=3)) if b.signature}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["signature", "latency_ms", "backend"])
        for k in sorted(keys):
            w.writerow([k, KindSource().ms(k)[0], "fixed"])
    return path


@dataclass(frozen=True)
class PenaltyEval:
    """Quality = 1 - the penalties of the blocks not running (+ `copy_gain` per copy): known in advance.

    Per sample, `noise` adds a draw shared by every candidate (common random numbers: sample s is as
    hard for all) and `spread` one of the candidate's own; both average to about 0 over the samples."""

    penalties: tuple[tuple[str, float], ...]
    default_penalty: float = 0.5
    copy_gain: float = 0.0
    samples: int = 4
    noise: float = 0.0
    spread: float = 0.0
    name: str = "stub"
    batch: int = 64

    def check(self, spec) -> None:
        pass

    def build(self) -> PenaltyEval:
        return self

    def sample_count(self) -> int:
        return self.samples

    def describe_samples(self) -> str:
        return f"{self.samples} samples"

    def _quality(self, model, disabled: Collection[str]) -> float:
        table = dict(self.penalties)
        q = 1.0
        for u in model.elastic_units():
            off = u.removed or u.block_id in disabled
            if u.instance and not off:
                q += self.copy_gain
            elif not u.instance and off:
                q -= table.get(u.block_id, self.default_penalty)
        return q

    def evaluate(self, bundle, model, disabled: Collection[str] = ()) -> Quality:
        return Quality(self._quality(model, disabled), {"accuracy": None})

    def sample_scores(self, bundle, model, candidates, samples) -> list[list[float]]:
        import zlib

        import numpy as np

        shared = np.random.default_rng(0).standard_normal(self.samples) * self.noise
        out = []
        for off in candidates:
            running = sorted(u.block_id for u in model.elastic_units() if not (u.removed or u.block_id in off))
            own = np.random.default_rng(zlib.crc32("|".join(running).encode())).standard_normal(self.samples)
            q = self._quality(model, off)
            out.append([q + float(shared[s] + self.spread * own[s]) for s in samples])
        return out


def train_tiny(folder: Path, *, steps: int = 2, robust: bool = True, seed: int = 0) -> Path:
    from snapbench.evolution.robust_training import TrainConfig, train

    torch.set_num_threads(1)
    train("toy-digits", folder, TrainConfig(steps=steps, batch_size=4, save_every=1000, robust=robust, seed=seed),
          progress=False)
    return folder


@pytest.fixture(scope="session")
def fixed_table_csv(tmp_path_factory) -> Path:
    from snapbench.specs.presets import load_preset

    return write_fixed_table(load_preset("toy-digits"), tmp_path_factory.mktemp("table") / "fixed.csv")


@pytest.fixture(scope="session")
def toy_folder(tmp_path_factory) -> Path:
    """A toy-digits folder after two robust-training steps (weights are near random: fine for mechanics)."""
    return train_tiny(tmp_path_factory.mktemp("toy") / "toy")
