"""The few coremltools 9 calls the `iphone` and `mac` backends make, in one thin adapter.

Everything here needs macOS (prediction, compiled models, compute plans) and, for an iPhone, Xcode
(coremltools builds its model-runner app with `xcodebuild` and talks to it through `devicectl`). The
adapter takes the coremltools module and the platform name as arguments so that tests on Linux hand in
a fake that records calls; it never checks the platform at import time.

APIs used (coremltools 9.0, `coremltools.models.ml_program.experimental`):
- `remote_device.Device.get_connected_devices(DeviceType.IPHONE)` and `await
  device.prepare_for_model_debugging()`: build, install and launch the runner app on the phone.
- `perf_utils.MLModelBenchmarker(model, device).benchmark_predict(iterations=, warmup=)`: prediction
  durations in ms as measured by Core ML (on the phone when `device` is given, else on this Mac).
- `compute_plan.MLComputePlan.load_from_path(compiled_path, compute_units)` (this Mac) and
  `compute_plan_utils.load_compute_plan_from_path_on_device(path=, compute_units=, device=)` (the phone):
  the preferred compute device of every op.
"""

from __future__ import annotations

import shutil
import sys
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

_COMPUTE_UNITS = {"cpu_and_ne": "CPU_AND_NE", "cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "all": "ALL"}


class CoreMLTools:
    def __init__(self, ct: ModuleType | Any | None = None, *, platform: str | None = None,
                 which: Callable[[str], str | None] = shutil.which) -> None:
        self._ct = ct
        self.platform = platform or sys.platform
        self._which = which

    @property
    def ct(self) -> Any:
        if self._ct is None:
            import coremltools  # heavy; only when a device backend actually runs

            self._ct = coremltools
        return self._ct

    # what this machine can do ---------------------------------------------------------------------
    def unavailable_reason(self, backend: str) -> str | None:
        """None when `backend` can run here, else why not (one clause, no trailing period)."""
        if self.platform != "darwin":
            what = "an iPhone from a Mac with Xcode" if backend == "iphone" else "this Mac's Neural Engine"
            return f"the {backend} backend measures on {what}, and this machine runs {self.platform}"
        if backend == "iphone" and self._which("xcodebuild") is None:
            return "the iphone backend needs Xcode (xcodebuild not found) to build coremltools' runner app"
        return None

    def versions(self) -> str:
        return f"coremltools={getattr(self.ct, '__version__', '?')}"

    # devices ----------------------------------------------------------------------------------------
    def connected_iphones(self) -> list[Any]:
        rd = self.ct.models.ml_program.experimental.remote_device
        return list(rd.Device.get_connected_devices(rd.DeviceType.IPHONE))

    async def prepare(self, device: Any) -> Any:
        """Build, install and launch the model-runner app; returns the device with its session."""
        return await device.prepare_for_model_debugging()

    # timing and placement ---------------------------------------------------------------------------
    def load(self, path: Path, compute_units: str) -> Any:
        cu = getattr(self.ct.ComputeUnit, _COMPUTE_UNITS[compute_units])
        return self.ct.models.MLModel(str(path), compute_units=cu)

    async def benchmark(self, model: Any, *, device: Any | None, warmup: int, repeats: int) -> list[float]:
        """Prediction durations in ms; `warmup` runs first and are discarded (first runs compile/page in)."""
        perf = self.ct.models.ml_program.experimental.perf_utils
        bench = perf.MLModelBenchmarker(model=model, device=device)
        if warmup > 0:
            await bench.benchmark_predict(iterations=warmup, warmup=False)
        result = await bench.benchmark_predict(iterations=repeats, warmup=False)
        return [float(s) for s in result.samples]

    async def placement(self, model: Any, *, device: Any | None, compute_units: str) -> dict[str, int]:
        """Ops per preferred compute unit ('ane', 'gpu', 'cpu', 'unknown'), consts left out."""
        cu = getattr(self.ct.ComputeUnit, _COMPUTE_UNITS[compute_units])
        compiled = model.get_compiled_path()
        if device is None:
            plan = self.ct.models.compute_plan.MLComputePlan.load_from_path(path=compiled, compute_units=cu)
        else:
            utils = self.ct.models.ml_program.experimental.compute_plan_utils
            plan = await utils.load_compute_plan_from_path_on_device(path=compiled, compute_units=cu, device=device)
        program = plan.model_structure.program
        if program is None:
            return {}
        counts: Counter[str] = Counter()
        for fn in program.functions.values():
            for op in fn.block.operations:
                if op.operator_name == "const":
                    continue
                usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
                counts[_unit_name(usage.preferred_compute_device) if usage is not None else "unknown"] += 1
        return dict(counts)


def _unit_name(device: Any) -> str:
    # Local and remote plans use different classes (MLNeuralEngineComputeDevice, remote proxies of it);
    # their names all say which engine they are.
    for cls in type(device).__mro__:
        name = cls.__name__
        if "NeuralEngine" in name:
            return "ane"
        if "GPU" in name:
            return "gpu"
        if "CPU" in name:
            return "cpu"
    return "unknown"
