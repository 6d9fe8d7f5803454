"""Fakes for the profile tests: a recording coremltools, packages without conversion, a toy estimator."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def toy_estimate(path: Any, device: Any) -> SimpleNamespace:
    """Deterministic stand-in for estimate_package: a figure derived from the package name."""
    h = int(hashlib.sha1(Path(path).name.encode()).hexdigest()[:6], 16)
    return SimpleNamespace(total_ms=1.0 + (h % 1000) / 100, dram_bytes=1000 + h % 97, params_version=7,
                           n_ops=12, cpu_ops=())


toy_estimate.params_version = 7  # type: ignore[attr-defined]


class FakePackages:
    """PackageSource that 'converts' by creating empty package folders, recording what was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple] = []

    def block_packages(self, source, settings, tokens, keys, *, progress):
        self.calls.append(("blocks", source.spec.name, settings, len(keys)))
        out = {}
        for k in keys:
            p = self.root / f"{hashlib.sha1(k.encode()).hexdigest()[:12]}.mlpackage"
            p.mkdir(parents=True, exist_ok=True)
            out[k] = p
        return out

    def component_package(self, component, source, settings, tokens, *, progress):
        self.calls.append(("component", component, settings.batch))
        p = self.root / f"{component}.mlpackage"
        p.mkdir(parents=True, exist_ok=True)
        return p


# --- a fake of the coremltools 9 API surface the iphone/mac backends use -------------------------------

class MLNeuralEngineComputeDevice:  # names matter: the adapter reads the class name
    pass


class MLCPUComputeDevice:
    pass


def make_fake_coremltools(calls: list, *, phones: int = 1, fail_on: str | None = None,
                          samples: tuple[float, ...] = (5.0, 4.0, 6.0, 5.5, 4.5)) -> Any:
    """A module-like object; every call is appended to `calls` as a tuple."""

    class ComputeUnit:
        CPU_AND_NE = "CPU_AND_NE"
        CPU_ONLY = "CPU_ONLY"
        CPU_AND_GPU = "CPU_AND_GPU"
        ALL = "ALL"

    class MLModel:
        def __init__(self, path, compute_units=None):
            calls.append(("MLModel", Path(path).name, compute_units))
            if fail_on and fail_on in str(path):
                raise RuntimeError("Error compiling model: unsupported op\nmore detail on line 2")
            self.path = path

        def get_compiled_path(self):
            return str(self.path) + "c"

    class Measurement:
        def __init__(self, s):
            self.samples = list(s)

    class MLModelBenchmarker:
        def __init__(self, model, device=None):
            calls.append(("Benchmarker", Path(model.path).name, getattr(device, "name", None)))

        async def benchmark_predict(self, inputs=None, iterations=1, warmup=False):
            calls.append(("benchmark_predict", iterations, warmup))
            return Measurement((samples * (iterations // len(samples) + 1))[:iterations])

    op = lambda name: SimpleNamespace(operator_name=name)  # noqa: E731
    ops = [op("const"), op("conv"), op("softmax"), op("gather")]

    class Plan:
        model_structure = SimpleNamespace(program=SimpleNamespace(
            functions={"main": SimpleNamespace(block=SimpleNamespace(operations=ops))}))

        def get_compute_device_usage_for_mlprogram_operation(self, o):
            dev = MLCPUComputeDevice() if o.operator_name == "gather" else MLNeuralEngineComputeDevice()
            return SimpleNamespace(preferred_compute_device=dev)

    class MLComputePlan:
        @staticmethod
        def load_from_path(path, compute_units=None):
            calls.append(("MLComputePlan.load_from_path", Path(path).name, compute_units))
            return Plan()

    async def load_compute_plan_from_path_on_device(path, compute_units=None, device=None):
        calls.append(("load_compute_plan_from_path_on_device", Path(path).name, compute_units, device.name))
        return Plan()

    class DeviceType:
        IPHONE = "iphone"

    class Phone:
        def __init__(self, name, session=None):
            self.name, self.os_version, self.session = name, "18.1", session

        async def prepare_for_model_debugging(self, credentials=None, working_directory=None, clean=False):
            calls.append(("prepare_for_model_debugging", self.name))
            return Phone(self.name, session="runner")

    class Device:
        @staticmethod
        def get_connected_devices(device_type):
            calls.append(("get_connected_devices", device_type))
            return [Phone(f"Test iPhone {i}") for i in range(phones)]

    experimental = SimpleNamespace(
        remote_device=SimpleNamespace(Device=Device, DeviceType=DeviceType),
        perf_utils=SimpleNamespace(MLModelBenchmarker=MLModelBenchmarker),
        compute_plan_utils=SimpleNamespace(load_compute_plan_from_path_on_device=load_compute_plan_from_path_on_device),
    )
    return SimpleNamespace(
        __version__="9.0-fake", ComputeUnit=ComputeUnit,
        models=SimpleNamespace(MLModel=MLModel, compute_plan=SimpleNamespace(MLComputePlan=MLComputePlan),
                               ml_program=SimpleNamespace(experimental=experimental)),
    )
