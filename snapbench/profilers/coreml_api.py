"""The coremltools 9.0 calls the `iphone` and `mac` backends make, in one thin adapter.

Everything here needs macOS (loading, compiling, prediction, compute plans) and, for an iPhone, full
Xcode. The adapter takes the coremltools module as an argument so that tests on Linux hand in fakes
built from the real classes (`tests/test_coreml_contract.py` checks every name used here against the
installed coremltools); it never checks the platform at import time.

APIs used (coremltools 9.0, `coremltools.models.ml_program.experimental`, read from its source):
- `remote_device.Device.get_connected_devices(DeviceType.IPHONE)`; `await
  device.prepare_for_model_debugging(credentials=AppSigningCredentials(...), working_directory=, clean=)`
  builds the model-runner app with `xcodebuild`, installs and launches it with `devicectl`.
- `async_wrapper.MLModelAsyncWrapper.from_spec_or_path(..., device=)`: a model on the phone (device
  given) or on this Mac (None). `await load()` (its `load_duration_in_nano_seconds` is Core ML's own
  figure), `await predict(inputs, state=)` (then `last_predict_duration_in_nano_seconds`), `await
  retrieve_compute_plan()` (the plan of *this* loaded model: no second copy), `await unload()`,
  `cleanup()`. This is the layer `perf_utils.MLModelBenchmarker` is built on; using it directly lets
  every loaded model be unloaded in a `finally` (the benchmarker keeps its model, and coremltools'
  unload in `__del__` is fire-and-forget on an event loop that is gone by then).
- `compute_plan.MLComputePlan`: `model_structure.program.functions[*].block.operations` and
  `get_compute_device_usage_for_mlprogram_operation(op).preferred_compute_device`, an instance of
  `compute_device.MLNeuralEngineComputeDevice` / `MLGPUComputeDevice` / `MLCPUComputeDevice`.

What coremltools 9.0 gets wrong, and what this adapter does about it (all read from `remote_device.py`):
- It launches the runner app with `Popen` (`devicectl device process launch --console`) and never checks
  that it started; `_DeviceCtlSocket.is_alive` returns the session's *bound method* `is_alive` without
  calling it (always truthy), so a request to a dead app polls its whole budget. `app_alive` calls the
  session's real `is_alive()`; the patched request service (`request_time_limit`) gives coremltools'
  poll loop a socket whose `is_alive` is that call, so a dead app fails the request at once; `relaunch`
  starts the installed app again through `_DeviceCtl.launch_app` (`Device._launch_app` passes it an
  `app_path` keyword it does not take).
- Its request budget counts attempts, each a `devicectl` run plus 0.5 s, so it is a lower bound:
  every request here also runs under `asyncio.wait_for` with the time limit.
- Every prediction's input goes to a `NamedTemporaryFile(delete=False)` and every request leaves its
  files in the app's Documents folder and in the session's working folder: the patched service removes
  the input after each prediction, and `clean_requests` removes the Mac side and empties (one `devicectl
  copy to` of an empty file each: coremltools has no delete) what large files a package left on the phone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import shutil
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import numpy as np

from snapbench.errors import SnapbenchError
from snapbench.profilers.coreml_types import (
    ArrayDataTypes,
    AsyncModel,
    ComputePlan,
    DeviceCtlSocket,
    ModelDescription,
    RemoteDevice,
    RpcRequest,
)

COMPUTE_UNITS = {"cpu_and_ne": "CPU_AND_NE", "cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "all": "ALL"}
POLL_S = 0.5  # coremltools' own interval between devicectl polls for a response
# coremltools gives each request to the phone 20 polls 0.5 s apart; the first load of a large UNet block
# compiles it for the Neural Engine and takes minutes. This default outlasts the largest SD-v1.5 block.
DEFAULT_REQUEST_TIMEOUT_S = 900.0
RUNNER_SOURCE = "Documents/modelrunnerd"  # where coremltools' runner reads requests and writes responses
# Files on the phone smaller than this are left as they are: emptying one costs a devicectl run (~1 s).
PHONE_CLEANUP_MIN_BYTES = 1 << 20
T = TypeVar("T")


class RequestTimeout(SnapbenchError):
    """A request to the phone got no answer within the time limit."""


@dataclass(frozen=True)
class Signing:
    """Who signs the model-runner app (its Xcode project pins Apple's own team, which nobody else has)."""

    team_id: str
    bundle_id: str

    @staticmethod
    def for_team(team_id: str, bundle_id: str | None = None) -> Signing:
        # An app id must be unique to the team that registers it; coremltools' default is Apple's.
        return Signing(team_id, bundle_id or f"dev.snapbench.modelrunner.{team_id.lower()}")


@dataclass(frozen=True)
class PackageTiming:
    """One package on one device: Core ML's own durations (ms) and where its ops were placed."""

    predict_ms: list[float]
    first_load_ms: float | None  # the first load: on the Neural Engine this includes compiling for it
    warm_load_ms: float | None  # a second load right after (the compiled program is cached)
    placement: dict[str, int]  # ops per preferred compute unit: ane, gpu, cpu, unknown
    plan_error: str | None = None  # the compute plan failed: the timings above still stand


@dataclass
class RequestFiles:
    """What the requests of one package left behind, recorded as coremltools' socket sends and receives."""

    mac_folders: list[Path] = field(default_factory=list)  # each socket's working folder (requests, responses)
    phone_files: list[tuple[str, int]] = field(default_factory=list)  # (path in the app's container, bytes)


class _LiveSocket:
    """coremltools' `_DeviceCtlSocket` with an `is_alive` that asks the app session (calls it), and a record
    of the files each request puts on the phone and leaves on this Mac."""

    def __init__(self, socket: DeviceCtlSocket, files: RequestFiles) -> None:
        self._socket, self._files = socket, files
        files.mac_folders.append(Path(socket.working_directory))

    def __getattr__(self, name: str) -> object:  # the rest of the socket, as coremltools uses it
        return getattr(self._socket, name)

    @property
    def is_alive(self) -> bool:
        return session_alive(self._socket.device)

    def send(self, request: RpcRequest, resource_path: Path | None = None) -> None:
        self._socket.send(request, resource_path)
        if resource_path is not None:
            root = f"{self._socket.source}/requests/resources/{request.id}/{Path(resource_path).name}"
            self._files.phone_files.extend(_files_under(Path(resource_path), root))

    def receive(self, id: str) -> object:
        response = self._socket.receive(id)
        resource = getattr(response, "resource", None)
        if resource is not None:
            self._files.phone_files.extend(_files_under(Path(resource),
                                                        f"{self._socket.source}/responses/{id}/{Path(resource).name}"))
        return response


def _files_under(local: Path, remote: str) -> list[tuple[str, int]]:
    if local.is_file():
        return [(remote, local.stat().st_size)]
    return [(f"{remote}/{f.relative_to(local).as_posix()}", f.stat().st_size)
            for f in sorted(local.rglob("*")) if f.is_file()]


def session_alive(device: RemoteDevice | None) -> bool:
    """Is the runner app running? The session's own check, *called* (coremltools reads the bound method)."""
    session = getattr(device, "session", None)
    return session is not None and bool(session.is_alive())


class CoreMLTools:
    def __init__(self, ct: ModuleType | None = None) -> None:
        self._ct = ct
        self._time_limit_s: float | None = None
        self.request_files = RequestFiles()

    @property
    def ct(self) -> ModuleType:
        if self._ct is None:
            import coremltools  # heavy; only when a device backend actually runs

            self._ct = coremltools
        return self._ct

    @property
    def _rd(self) -> ModuleType:
        return self.ct.models.ml_program.experimental.remote_device

    def version(self) -> str:
        return str(getattr(self.ct, "__version__", "?"))

    # the phone ----------------------------------------------------------------------------------------
    def connected_iphones(self) -> list[RemoteDevice]:
        rd = self._rd
        return list(rd.Device.get_connected_devices(rd.DeviceType.IPHONE))

    async def prepare(self, phone: RemoteDevice, signing: Signing, working_dir: Path, *,
                      clean: bool = False) -> RemoteDevice:
        """Build (once: the build folder persists and is reused unless `clean`), install and launch the
        runner app."""
        rd = self._rd
        credentials = rd.AppSigningCredentials(development_team=signing.team_id,
                                               provisioning_profile_uuid=None,
                                               bundle_identifier=signing.bundle_id)
        working_dir.mkdir(parents=True, exist_ok=True)
        try:
            return await phone.prepare_for_model_debugging(credentials=credentials,
                                                           working_directory=working_dir, clean=clean)
        except rd._AppBuilder.Error as e:
            raise SnapbenchError(build_failure(e, working_dir / "xcodebuild.log")) from None

    def app_alive(self, device: RemoteDevice) -> bool:
        return session_alive(device)

    def launch_failure(self, device: RemoteDevice) -> str:
        """What `devicectl device process launch` said when it exited (its stderr), or ''."""
        process = getattr(getattr(device, "session", None), "_process", None)
        if process is None or process.poll() is None or process.stderr is None:
            return ""
        with contextlib.suppress(Exception):
            raw = process.stderr.read()
            return describe(Exception(raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)))
        return ""

    def relaunch(self, device: RemoteDevice) -> RemoteDevice:
        """Start the installed runner app again; the same Device with the new session."""
        old = device.session
        with contextlib.suppress(Exception):
            old.stop()
        session = self._rd._DeviceCtl.launch_app(device=device, installation_info=old.installation_info,
                                                 working_directory=old.working_directory)
        return dataclasses.replace(device, session=session)

    @contextlib.contextmanager
    def request_time_limit(self, seconds: float) -> Iterator[None]:
        """Give every request to the phone `seconds` before it fails, instead of coremltools' 20 x 0.5 s.

        coremltools builds its request service inside `_RemoteMLModelService.load_on_device` with
        default arguments and no way to pass others, so for the duration of this block the module's
        service class is a subclass whose defaults are ours; the original is put back in `finally`."""
        rd = self._rd
        original = rd._DeviceCtlRemoteService
        attempts = max(1, math.ceil(seconds / POLL_S))
        files = self.request_files

        class _Patient(original):  # type: ignore[misc, valid-type]
            def __init__(self, socket: DeviceCtlSocket, poll_time: float = POLL_S, max_attempts: int = attempts) -> None:
                super().__init__(_LiveSocket(socket, files), poll_time=poll_time, max_attempts=max_attempts)

            async def call_method(self, name: str, params: object, resource: Path | None = None) -> object:
                try:
                    return await super().call_method(name, params, resource)
                finally:
                    # a prediction's input is a NamedTemporaryFile(delete=False) nobody else removes
                    if resource is not None and name == "MLModelService.Prediction":
                        Path(resource).unlink(missing_ok=True)

        setattr(rd, "_DeviceCtlRemoteService", _Patient)  # noqa: B010 (a module attribute: mypy refuses the assignment)
        self._time_limit_s = seconds
        try:
            yield
        finally:
            setattr(rd, "_DeviceCtlRemoteService", original)  # noqa: B010
            self._time_limit_s = None

    async def _within(self, what: str, request: Awaitable[T]) -> T:
        """One request, bounded by the time limit in force (coremltools' own budget is a lower bound)."""
        if self._time_limit_s is None:
            return await request
        try:
            return await asyncio.wait_for(request, self._time_limit_s)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"{what}: no answer from the runner app within {self._time_limit_s:.0f} s "
                                 "(raise --request-timeout for a large first load)") from None

    def clean_requests(self, device: RemoteDevice | None) -> RequestFiles:
        """Remove what the requests since the last call left: their folders on this Mac, and (emptied: an
        empty file copied over each) their large files in the app's container on the phone."""
        done, self.request_files = self.request_files, RequestFiles()
        for folder in done.mac_folders:
            shutil.rmtree(folder, ignore_errors=True)
        session = getattr(device, "session", None)
        big = [path for path, size in done.phone_files if size >= PHONE_CLEANUP_MIN_BYTES]
        if session is not None and big and session_alive(device):
            with tempfile.TemporaryDirectory() as tmp:
                empty = Path(tmp) / "empty"
                empty.write_bytes(b"")
                for path in big:
                    with contextlib.suppress(Exception):  # best effort: never fail a measured package
                        session.send_file_to_app(empty, destination=path)
        return done

    # one package -------------------------------------------------------------------------------------
    def _wrapper(self, path: Path, compute_units: str, device: RemoteDevice | None) -> AsyncModel:
        wrappers = self.ct.models.ml_program.experimental.async_wrapper
        return wrappers.MLModelAsyncWrapper.from_spec_or_path(
            spec_or_path=str(path), weights_dir=str(path / "Data" / "com.apple.CoreML" / "weights"),
            compute_units=getattr(self.ct.ComputeUnit, COMPUTE_UNITS[compute_units]), device=device)

    @contextlib.asynccontextmanager
    async def _loaded(self, path: Path, compute_units: str, device: RemoteDevice | None) -> AsyncIterator[AsyncModel]:
        model = self._wrapper(path, compute_units, device)
        try:
            await self._within(f"loading {path.name}", model.load())
        except BaseException:
            model.cleanup()  # the compiled copy it made in a temporary folder
            raise
        try:
            yield model
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report
                await self._within(f"unloading {path.name}", model.unload())
            model.cleanup()
            raise
        await self._within(f"unloading {path.name}", model.unload())
        model.cleanup()

    async def time_package(self, path: Path, *, device: RemoteDevice | None, compute_units: str, warmup: int,
                           repeats: int) -> PackageTiming:
        """Load twice (first = compile, then warm), predict `warmup` + `repeats` times on random inputs of the
        package's own shapes, read the compute plan of the loaded model; every load unloaded in a finally."""
        inputs = random_inputs(self.ct.utils.load_spec(str(path)).description,
                               self.ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType)
        async with self._loaded(path, compute_units, device) as first:
            first_load = _ms(first.load_duration_in_nano_seconds)
        async with self._loaded(path, compute_units, device) as model:
            warm_load = _ms(model.load_duration_in_nano_seconds)
            samples = []
            for i in range(warmup + repeats):
                await self._within(f"predicting with {path.name}", model.predict(inputs, state=model.make_state_if_needed()))
                took = _ms(model.last_predict_duration_in_nano_seconds)
                if took is None:
                    raise SnapbenchError(f"{path.name}: Core ML reported no prediction duration")
                if i >= warmup:
                    samples.append(took)
            placement: dict[str, int] = {}
            plan_error = None
            try:  # the timings are measured: a compute plan that fails must not discard them
                placement = self.placement(await self._within(f"the compute plan of {path.name}",
                                                              model.retrieve_compute_plan()))
            except Exception as e:  # coremltools raises ValueError / its own errors
                if isinstance(e, RequestTimeout) or (device is not None and not session_alive(device)):
                    raise  # the app is gone: not the plan's problem
                plan_error = describe(e)
        return PackageTiming(samples, first_load, warm_load, placement, plan_error)

    def placement(self, plan: ComputePlan) -> dict[str, int]:
        """Ops per preferred compute unit ('ane', 'gpu', 'cpu', 'unknown'), consts left out."""
        program = plan.model_structure.program
        if program is None:
            return {}
        devices = self.ct.models.compute_device
        names = ((devices.MLNeuralEngineComputeDevice, "ane"), (devices.MLGPUComputeDevice, "gpu"),
                 (devices.MLCPUComputeDevice, "cpu"))
        counts: Counter[str] = Counter()
        for fn in program.functions.values():
            for op in fn.block.operations:
                if op.operator_name == "const":
                    continue
                usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
                where = usage.preferred_compute_device if usage is not None else None
                counts[next((n for cls, n in names if isinstance(where, cls)), "unknown")] += 1
        return dict(counts)


def _ms(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e6


def random_inputs(description: ModelDescription, array_types: ArrayDataTypes) -> dict[str, np.ndarray]:
    """Random arrays of each input's declared shape and type (what coremltools' benchmarker feeds too;
    latency does not depend on values). Our packages take multi-arrays only. `array_types` is
    `coremltools.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType`."""
    ints = {array_types.INT32}
    inputs = {}
    for feature in description.input:
        kind = feature.type.WhichOneof("Type")
        if kind != "multiArrayType":
            raise SnapbenchError(f"input {feature.name!r} is a {kind}; only multi-array inputs can be timed")
        arr = feature.type.multiArrayType
        shape = tuple(int(d) for d in arr.shape)
        inputs[feature.name] = (np.random.randint(0, 10, shape).astype(np.int32) if arr.dataType in ints
                                else np.random.random(shape).astype(np.float32))
    return inputs


def build_failure(error: BaseException, log_path: Path) -> str:
    """coremltools runs xcodebuild with stderr merged into stdout, then reports `e.stderr` (None): the
    message says "[Error Code 65] None". The output is still on the CalledProcessError it was raised
    from; keep it in a log and name its first `error:` line."""
    cause = error.__context__
    raw = getattr(cause, "output", None) or getattr(cause, "stdout", None) or b""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    code = getattr(error, "error_code", None) or getattr(cause, "returncode", "?")
    where = ""
    if text:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text(text)
        where = f"; full log: {log_path}"
    errors = [ln.strip() for ln in text.splitlines() if "error:" in ln]
    first = errors[0] if errors else (text.strip().splitlines() or ["no output"])[-1]
    hint = ""
    if "team" in first.lower() or "signing" in first.lower() or "provisioning" in first.lower():
        hint = " (check --team-id; with a free team also pick a --bundle-id nobody else registered)"
    return f"building coremltools' model-runner app failed (xcodebuild exit {code}): {first}{hint}{where}"


def describe(error: BaseException) -> str:
    """One line for a coremltools error: its devicectl stderr decoded (it keeps bytes), last meaningful line."""
    message = getattr(error, "message", None)
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    text = str(message if message else error).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [type(error).__name__])[0]
