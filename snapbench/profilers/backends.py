"""Measurement sources behind one interface: `measure(jobs) -> {key: Measurement}`.

- `DeviceBackend("iphone" | "mac")`: times each package on a connected iPhone or on this Mac's Neural
  Engine through coremltools (see `coreml_api`), with warm-up runs, repeats (median, p90, sample count)
  and the compute plan's op placement.
- `EstimateBackend`: the Neural Engine cost model (`snapbench.profilers.estimate`), labelled `estimate`.
- `import` is not a package backend (its figures come from a file): see `importer`.

`choose_backend` resolves `auto`: an iPhone if one is connected (and the target is a phone), this Mac if
the target is a Mac and we run on one, else the estimator; it says which on stderr.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from snapbench import __version__
from snapbench.errors import SnapbenchError
from snapbench.profilers.coreml_api import CoreMLTools
from snapbench.profilers.measurement import Measurement, PackageJob, placement_text

BACKEND_CHOICES = ("auto", "iphone", "mac", "import", "estimate")

Progress = Callable[[str], None]  # called once per finished job with its label


class Backend(Protocol):
    name: str

    def measure(self, jobs: Sequence[PackageJob], *, on_done: Progress | None = None) -> dict[str, Measurement]:
        ...


def _is_mac_target(device: Any) -> bool:
    return str(device.id).startswith("mac")


def _suggest(reason: str) -> str:
    return f"{reason}; use --backend estimate (runs anywhere) or --backend import --from FILE"


@dataclass
class DeviceBackend:
    """Times packages with coremltools on an iPhone (remote device API) or on this Mac."""

    name: str  # "iphone" | "mac"
    device: Any  # the catalog Device the figures will be filed under
    api: CoreMLTools = field(default_factory=CoreMLTools)
    compute_units: str = "cpu_and_ne"
    warmup: int = 3
    repeats: int = 20

    def __post_init__(self) -> None:
        if self.name not in ("iphone", "mac"):
            raise ValueError(self.name)
        if self.repeats < 1 or self.warmup < 0:
            raise SnapbenchError(f"--repeats must be >= 1 and --warmup >= 0 (got {self.repeats}, {self.warmup})")

    def check(self) -> None:
        """Raise the one-line reason this backend cannot run here (before anything is converted)."""
        reason = self.api.unavailable_reason(self.name)
        if reason:
            raise SnapbenchError(_suggest(reason))
        # A Mac's engine is not a phone's: never file Mac timings under an iPhone id, or the reverse.
        if self.name == "mac" and not _is_mac_target(self.device):
            raise SnapbenchError(_suggest(f"the mac backend measures this Mac, not an {self.device.name}"))
        if self.name == "iphone" and _is_mac_target(self.device):
            raise SnapbenchError(f"--device {self.device.id} is a Mac; use --backend mac to measure it")
        if self.name == "iphone" and not str(self.device.id).startswith("iphone"):
            # coremltools lists iPhones here; an iPad's figures must not come from a phone
            raise SnapbenchError(_suggest(f"the iphone backend measures iPhones, not an {self.device.name}"))

    def measure(self, jobs: Sequence[PackageJob], *, on_done: Progress | None = None) -> dict[str, Measurement]:
        self.check()
        return asyncio.run(self._measure(jobs, on_done))

    async def _measure(self, jobs: Sequence[PackageJob], on_done: Progress | None) -> dict[str, Measurement]:
        target = None
        where = "this Mac"
        if self.name == "iphone":
            phones = self.api.connected_iphones()
            if not phones:
                raise SnapbenchError(_suggest("no iPhone is connected (plug it in, unlock it, enable Developer Mode)"))
            # One runner-app session serves every package: building and installing it takes minutes.
            target = await self.api.prepare(phones[0])
            where = f"{getattr(target, 'name', 'iPhone')} (iOS {getattr(target, 'os_version', '?')})"
        versions = f"snapbench={__version__};{self.api.versions()}"
        results: dict[str, Measurement] = {}
        for job in jobs:
            try:
                model = self.api.load(job.path, self.compute_units)
                samples = await self.api.benchmark(model, device=target, warmup=self.warmup, repeats=self.repeats)
                placement = await self.api.placement(model, device=target, compute_units=self.compute_units)
            except SnapbenchError:
                raise
            except Exception as e:  # coremltools raises ValueError/RuntimeError with multi-line text
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SnapbenchError(f"{self.name}: {job.label} ({job.path}): {first}") from None
            results[job.key] = Measurement.from_samples(
                self.name, samples, placement=placement_text(placement), source=where, versions=versions)
            if on_done:
                on_done(job.label)
        return results


@dataclass
class EstimateBackend:
    """The calibrated Neural Engine cost model over each package's Core ML program."""

    device: Any
    estimate_fn: Callable[..., Any] | None = None  # estimate_package(path, device) -> Estimate; injectable
    name: str = "estimate"

    def _fn(self) -> Callable[..., Any]:
        return self.estimate_fn or default_estimate_fn()

    def measure(self, jobs: Sequence[PackageJob], *, on_done: Progress | None = None) -> dict[str, Measurement]:
        fn = self._fn()
        results: dict[str, Measurement] = {}
        for job in jobs:
            est = fn(job.path, self.device)
            results[job.key] = estimate_measurement(est)
            if on_done:
                on_done(job.label)
        return results


def default_estimate_fn() -> Callable[..., Any]:
    try:
        from snapbench.profilers.estimate import estimate_package
    except ImportError:
        from snapbench.profilers.estimate.cost_model import estimate_package
    return estimate_package


def estimate_measurement(est: Any) -> Measurement:
    """An estimator result as a Measurement (duck-typed: the estimator owns its result type)."""
    total = _first_attr(est, ("total_ms", "latency_ms", "ms"))
    if total is None:
        raise SnapbenchError(f"estimator returned {type(est).__name__} without a total in ms")
    bytes_moved = _first_attr(est, ("bytes_moved", "dram_bytes", "bytes"))
    placement = _first_attr(est, ("placement",))
    if isinstance(placement, dict):
        placement = placement_text(placement)
    n_ops, cpu_ops = _first_attr(est, ("n_ops",)), _first_attr(est, ("cpu_ops",))
    if placement is None and n_ops is not None and cpu_ops is not None:
        # the cost model's own placement rules (not a compute plan): ops it prices on the engine vs CPU
        placement = placement_text({"ane": int(n_ops) - len(cpu_ops), "cpu": len(cpu_ops)})
    version = _first_attr(est, ("params_version", "version"))
    return Measurement(
        "estimate", float(total), None, 0,
        bytes_moved=int(bytes_moved) if bytes_moved is not None else None,
        placement=placement or "",
        source=f"estimator params {version}" if version is not None else "estimator",
        versions=f"snapbench={__version__}" + (f";estimator={version}" if version is not None else ""),
    )


def _first_attr(obj: Any, names: tuple[str, ...]) -> Any:
    for n in names:
        v = obj.get(n) if isinstance(obj, dict) else getattr(obj, n, None)
        if v is not None:
            return v
    return None


def choose_backend(requested: str, device: Any, *, api: CoreMLTools | None = None,
                   say: Callable[[str], None] | None = None) -> str:
    """Resolve `auto` to the best backend this machine has for `device`; check explicit choices."""
    if requested not in BACKEND_CHOICES:
        raise SnapbenchError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    api = api or CoreMLTools()
    if requested != "auto":
        if requested in ("iphone", "mac"):
            DeviceBackend(requested, device, api).check()
        return requested
    picked, why = "estimate", ""
    if _is_mac_target(device):
        reason = api.unavailable_reason("mac")
        if reason is None:
            picked, why = "mac", "this Mac's Neural Engine"
        else:
            why = reason
    elif not str(device.id).startswith("iphone"):
        why = f"no measuring backend for a {device.name}"
    else:
        reason = api.unavailable_reason("iphone")
        if reason is None:
            try:
                phones = api.connected_iphones()
            except Exception as e:  # devicectl missing or failing: fall back, but say why
                phones, reason = [], f"listing iPhones failed ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})"
            if phones:
                picked, why = "iphone", f"connected iPhone {getattr(phones[0], 'name', '')}".rstrip()
            else:
                why = reason or "no iPhone is connected"
        else:
            why = reason
    if say:
        if picked == "estimate":
            say(f"backend auto -> estimate ({why}); figures are predictions, labelled estimate")
        else:
            say(f"backend auto -> {picked} ({why})")
    return picked


def make_backend(name: str, device: Any, *, compute_units: str = "cpu_and_ne", warmup: int = 3,
                 repeats: int = 20, api: CoreMLTools | None = None,
                 estimate_fn: Callable[..., Any] | None = None) -> Backend:
    if name in ("iphone", "mac"):
        return DeviceBackend(name, device, api or CoreMLTools(), compute_units, warmup, repeats)
    if name == "estimate":
        return EstimateBackend(device, estimate_fn)
    raise SnapbenchError(f"backend {name!r} does not time packages")
