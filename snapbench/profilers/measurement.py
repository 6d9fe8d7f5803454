"""What pricing one package gives back: a median with its spread, or an estimate, never unlabelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from snapbench import __version__
from snapbench.errors import SnapbenchError

if TYPE_CHECKING:
    from snapbench.profilers.estimate.cost_model import Estimate


@dataclass(frozen=True)
class PackageJob:
    """One Core ML package to price: `key` is the table key it fills (a signature or component key)."""

    key: str
    label: str  # what a person calls it: "CA[Up-1, 2]", "text_encoder"
    path: Path


@dataclass(frozen=True)
class Measurement:
    backend: str  # iphone | mac | import | estimate
    latency_ms: float  # median of the samples (the estimate itself for `estimate`)
    p90_ms: float | None = None
    samples: int = 0
    bytes_moved: int | None = None
    placement: str = ""  # "ane=120;cpu=2": ops per compute unit from the compute plan
    source: str = ""  # the device's name, the import file, the estimator's parameters version
    versions: str = ""
    first_load_ms: float | None = None  # first load on the device (includes the Neural Engine compile)
    warm_load_ms: float | None = None  # a second load right after it
    os_build: str = ""  # the measured device's OS build ("22B83"): a new build can change every figure

    @staticmethod
    def from_samples(backend: str, samples_ms: Sequence[float], **kw) -> Measurement:
        if len(samples_ms) == 0:
            raise SnapbenchError(f"{backend}: the benchmark returned no samples")
        a = np.asarray(samples_ms, dtype=float)
        return Measurement(backend, float(np.median(a)), float(np.percentile(a, 90)), int(a.size), **kw)

    @staticmethod
    def from_estimate(est: Estimate) -> Measurement:
        """The cost model's figure as a row-ready result; placement is the cost model's own rule (ops it
        prices on the engine vs the CPU), not a compute plan."""
        return Measurement(
            "estimate", float(est.total_ms), None, 0, bytes_moved=int(est.dram_bytes),
            placement=placement_text({"ane": est.n_ops - len(est.cpu_ops), "cpu": len(est.cpu_ops)}),
            source=f"estimator params {est.params_version}",
            versions=f"snapbench={__version__};estimator={est.params_version}",
        )


def placement_text(counts: dict[str, int]) -> str:
    """{'ane': 120, 'cpu': 2} -> 'ane=120;cpu=2' (ANE first: it is the figure people look for)."""
    order = {"ane": 0, "gpu": 1, "cpu": 2}
    return ";".join(f"{k}={v}" for k, v in sorted(counts.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])) if v)
