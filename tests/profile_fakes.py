"""Fakes for the profile tests: packages without conversion, a toy estimator, a Mac with Xcode and a
phone, and coremltools' device API.

The coremltools fakes are built from the REAL installed coremltools: its enums, dataclasses
(AppSigningCredentials, Device, the compute plan's model structure) are used as they are, and every
object with behaviour the tests replace is `unittest.mock.create_autospec` of the real class or function,
so a wrong method name, argument name or sync/async mismatch fails exactly as it would on a Mac.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from snapbench.latency.packages import ComponentPackage
from snapbench.profilers.estimate.cost_model import CpuOp, Estimate
from snapbench.profilers.readiness import Machine


def toy_estimate(path: Any, device: Any, version: int = 7) -> Estimate:
    """Deterministic stand-in for estimate_package: a figure derived from the package name."""
    h = int(hashlib.sha1(Path(path).name.encode()).hexdigest()[:6], 16)
    total = 1.0 + (h % 1000) / 100
    return Estimate(device=getattr(device, "id", str(device)), total_ms=total, engine_ms=total, cpu_ms=0.0,
                    overhead_ms=0.0, compute_bound_ms=total, memory_bound_ms=0.0, by_op_type={}, by_op_class={},
                    cpu_ops=(CpuOp("gather", "g0", "gather runs on the CPU", 0.0),), n_ops=12,
                    n_engine_segments=1, flops=1e6, dram_bytes=1000 + h % 97, params_version=version)


def toy_estimator(version: int = 7) -> Any:
    from snapbench.profilers.backends import EstimatePricer

    return EstimatePricer(estimate_fn=lambda p, d: toy_estimate(p, d, version), version=lambda: version)


class FakePackages:
    """PackageSource that 'converts' by creating empty package folders, recording what was asked."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[tuple] = []

    def block_packages(self, source, settings, keys, *, progress):
        self.calls.append(("blocks", source.spec.name, settings, len(keys)))
        out = {}
        for k in keys:
            p = self.root / f"{hashlib.sha1(k.encode()).hexdigest()[:12]}.mlpackage"
            p.mkdir(parents=True, exist_ok=True)
            out[k] = p
        return out

    def part_package(self, part, opts, source):
        self.calls.append(("part", part.name, opts.batch))
        p = self.root / f"{part.name}.mlpackage"
        p.mkdir(parents=True, exist_ok=True)
        return p

    def component_package(self, component, source, settings, *, progress):
        self.calls.append(("component", component, settings.batch))
        p = self.root / f"{component}.mlpackage"
        p.mkdir(parents=True, exist_ok=True)
        return ComponentPackage(p, 1000, 2000)


# --- a Mac with Xcode and an attached phone --------------------------------------------------------------
def devicectl_entry(name: str = "Test iPhone", *, product: str = "iPhone15,2", udid: str = "00008120-0001",
                    os_version: str = "18.1", build: str = "22B83", developer_mode: str = "enabled",
                    pairing: str = "paired", tunnel: str = "connected", device_type: str = "iPhone") -> dict:
    """One device as `xcrun devicectl list devices -j` (Xcode 16) writes it."""
    return {
        "capabilities": [], "identifier": f"ID-{udid}",
        "connectionProperties": {"pairingState": pairing, "tunnelState": tunnel, "transportType": "wired"},
        "deviceProperties": {"name": name, "osVersionNumber": os_version, "osBuildUpdate": build,
                             "developerModeStatus": developer_mode, "bootState": "booted"},
        "hardwareProperties": {"deviceType": device_type, "productType": product, "udid": udid,
                               "marketingName": "", "platform": "iOS"},
    }


class FakeShell:
    """Answers the commands readiness and phones run, from canned output; records every call."""

    def __init__(self, *, devices: list[dict] | None = None, on_path: tuple[str, ...] = ("devicectl", "xcodebuild"),
                 xcode_path: str = "/Applications/Xcode.app/Contents/Developer", xcode: str = "Xcode 16.1",
                 chip: str = "Apple M2 Pro") -> None:
        self.devices = [devicectl_entry()] if devices is None else devices
        self.on_path, self.xcode_path, self.xcode, self.chip = on_path, xcode_path, xcode, chip
        self.calls: list[list[str]] = []

    def which(self, name: str) -> str | None:
        return f"/usr/bin/{name}" if name in self.on_path else None

    def run(self, argv: list[str], timeout_s: float = 60) -> tuple[int, str, str]:
        self.calls.append(argv)
        if argv[:2] == ["xcode-select", "-p"]:
            return (0, self.xcode_path + "\n", "") if self.xcode_path else (2, "", "no developer directory")
        if argv[:2] == ["xcodebuild", "-version"]:
            if "CommandLineTools" in self.xcode_path:
                return 1, "", "xcode-select: error: tool 'xcodebuild' requires Xcode"
            return 0, f"{self.xcode}\nBuild version 16B40\n", ""
        if argv[:3] == ["xcrun", "--find", "devicectl"]:
            return 0, f"{self.xcode_path}/usr/bin/devicectl\n", ""
        if argv[:4] == ["xcrun", "devicectl", "list", "devices"]:
            Path(argv[argv.index("-j") + 1]).write_text(json.dumps({"result": {"devices": self.devices}}))
            return 0, "", ""
        if argv[:3] == ["sysctl", "-n", "machdep.cpu.brand_string"]:
            return 0, self.chip + "\n", ""
        if argv[:2] == ["sw_vers", "-buildVersion"]:
            return 0, "24B83\n", ""
        if argv[:5] == ["xcrun", "devicectl", "device", "uninstall", "app"]:
            return 0, "", ""
        if Path(argv[0]).name == "ray" and argv[1:2] == ["start"]:
            return 0, "Ray runtime started.\n", ""
        return 127, "", f"{argv[0]}: command not found"


def fake_mac(tmp_path: Path, *, team_id: str | None = "ABCDE12345", platform: str = "darwin",
             macos: str = "15.1", native: bool = True, runner: bool = True, python: tuple[int, int] = (3, 12),
             **shell: Any) -> Machine:
    ct_dir = tmp_path / "site-packages" / "coremltools"
    ct_dir.mkdir(parents=True, exist_ok=True)
    if native:
        (ct_dir / "libcoremlpython.so").write_text("")
    if runner:
        (ct_dir / "modelrunner" / "ModelRunner.xcworkspace").mkdir(parents=True, exist_ok=True)
    return Machine(platform=platform, macos_version=macos, shell=FakeShell(**shell), coremltools_dir=ct_dir,
                   coremltools_version="9.0", team_id=team_id, cache_dir=tmp_path,
                   free_bytes=lambda p: 200 * 10**9, python=python)


# --- coremltools 9's device API, from the real classes --------------------------------------------------
def fake_session(rd: Any, *, alive: Callable[[], bool], working_directory: Path,
                 launch_error: bytes = b"") -> Any:
    """coremltools' `_AppSession` (autospec of the real class): `is_alive()` answers from `alive`; its
    devicectl launch process (`_process`, a real-signature Popen) has exited with `launch_error` when dead."""
    import io
    import subprocess

    session = mock.create_autospec(rd._AppSession, instance=True)
    session.is_alive.side_effect = alive
    session.installation_info = rd._AppInstallationInfo(bundle_identifier="dev.snapbench.modelrunner.abcde12345",
                                                        database_uuid="DB-1")
    session.working_directory = working_directory
    process = mock.create_autospec(subprocess.Popen, instance=True)
    process.poll.side_effect = lambda: None if alive() else 1
    process.stderr = io.BytesIO(launch_error)
    session._process = process
    return session


class FakeApp:
    """The runner app on the fake phone: whether it runs, launch by launch. `untrusted_launches` launches
    fail first (a free team before the user trusts the developer); `crash_on` kills it when that package
    loads (iOS ending it for memory)."""

    def __init__(self, untrusted_launches: int = 0, crash_on: str | None = None) -> None:
        self.untrusted_launches, self.crash_on = untrusted_launches, crash_on
        self.launches = 0
        self.running = False

    def launch(self) -> None:
        self.launches += 1
        self.running = self.launches > self.untrusted_launches


UNTRUSTED = (b"ERROR: The application could not be launched because its profile has not been explicitly trusted "
             b"by the user. (com.apple.dt.CoreDeviceError error 10002.)\n")


class FakeCoreML:
    """A coremltools module tree for `CoreMLTools(ct=...)`: real enums and dataclasses, autospec'd
    behaviour. `calls` records what the adapter did, in order."""

    def __init__(self, *, udid: str = "00008120-0001", fail_on: str | None = None, interrupt_on: str | None = None,
                 fail_prepare: Exception | None = None, app: FakeApp | None = None, plan_fails: bool = False,
                 samples_ns: tuple[int, ...] = (5_000_000, 4_000_000, 6_000_000, 5_500_000, 4_500_000),
                 load_ns: tuple[int, ...] = (60_000_000_000, 900_000_000), real_packages: bool = False) -> None:
        """`real_packages`: the packages are real conversions; their interface is read with coremltools' own
        `load_spec` and every prediction must feed exactly the package's inputs at their shapes."""
        import tempfile

        import coremltools as ct

        self.real = ct
        self.calls: list[tuple] = []
        self.loaded: list[Any] = []  # wrappers currently loaded (load() called, unload() not yet)
        self.fail_on, self.samples_ns, self.load_ns = fail_on, samples_ns, load_ns
        self.interrupt_on = interrupt_on  # a package whose load is "interrupted" by Ctrl-C
        self.plan_fails = plan_fails
        self.app = app or FakeApp()
        self._loads = 0
        exp = ct.models.ml_program.experimental
        rd, aw = exp.remote_device, exp.async_wrapper
        self.rd = rd
        self.session_dir = Path(tempfile.mkdtemp(prefix="fake-session-"))
        self.phone = rd.Device(name="Test iPhone", type=rd.DeviceType.IPHONE, identifier=f"ID-{udid}", udid=udid,
                               os_version="18.1", os_build_number="22B83", developer_mode_state="enabled",
                               state=rd.DeviceState.CONNECTED, session=None)
        calls = self.calls

        def launched() -> Any:
            self.app.launch()
            running = self.app.running
            return fake_session(rd, alive=lambda: running and self.app.running, working_directory=self.session_dir,
                                launch_error=b"" if running else UNTRUSTED)

        async def prepare(credentials=None, working_directory=None, clean=False):
            calls.append(("prepare_for_model_debugging", credentials, Path(working_directory).name, clean))
            if fail_prepare is not None:
                raise fail_prepare
            # a real Device with a session, as coremltools returns it (launched, never checked)
            return dataclasses.replace(self.phone, session=launched())

        def connected(device_type):
            calls.append(("get_connected_devices", device_type))
            if device_type != self.phone.type:
                return []  # coremltools keeps devices of the asked type only
            phone = mock.create_autospec(rd.Device, instance=True)
            for f in ("name", "udid", "identifier", "os_version", "os_build_number", "type", "state"):
                setattr(phone, f, getattr(self.phone, f))
            phone.prepare_for_model_debugging.side_effect = prepare
            return [phone]

        def launch_app(device, installation_info, working_directory):
            calls.append(("launch_app", installation_info.bundle_identifier))
            return launched()

        device_ns = SimpleNamespace(get_connected_devices=mock.create_autospec(
            rd.Device.get_connected_devices, side_effect=connected))
        remote_device = SimpleNamespace(
            Device=device_ns, DeviceType=rd.DeviceType, DeviceState=rd.DeviceState,
            AppSigningCredentials=rd.AppSigningCredentials, _AppBuilder=rd._AppBuilder,
            _DeviceCtlRemoteService=rd._DeviceCtlRemoteService,
            _DeviceCtl=SimpleNamespace(launch_app=mock.create_autospec(rd._DeviceCtl.launch_app,
                                                                       side_effect=launch_app)))
        self.remote_device = remote_device
        wrappers = SimpleNamespace(MLModelAsyncWrapper=SimpleNamespace(from_spec_or_path=mock.create_autospec(
            aw.MLModelAsyncWrapper.from_spec_or_path, side_effect=self._wrapper)))
        spec = ct.proto.Model_pb2.Model()
        for name, shape in (("hidden_states", (2, 4, 8, 8)), ("temb", (2, 16))):
            f = spec.description.input.add()
            f.name = name
            f.type.multiArrayType.shape.extend(shape)
            f.type.multiArrayType.dataType = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.FLOAT16
        self.spec = spec
        self.real_packages = real_packages
        load_spec = (mock.create_autospec(ct.utils.load_spec, side_effect=ct.utils.load_spec) if real_packages
                     else mock.create_autospec(ct.utils.load_spec, return_value=spec))
        self.ct = SimpleNamespace(
            __version__=ct.__version__, ComputeUnit=ct.ComputeUnit, proto=ct.proto,
            utils=SimpleNamespace(load_spec=load_spec),
            models=SimpleNamespace(
                compute_device=ct.models.compute_device,
                ml_program=SimpleNamespace(experimental=SimpleNamespace(
                    remote_device=remote_device, async_wrapper=wrappers))))

    def _plan(self) -> Any:
        cp, cd = self.real.models.compute_plan, self.real.models.compute_device
        ops = [cp.MLModelStructureProgramOperation(inputs={}, operator_name=n, outputs=[], blocks=[], __proxy__=None)
               for n in ("const", "conv", "softmax", "gather")]
        block = cp.MLModelStructureProgramBlock(inputs=[], operations=ops, output_names=[])
        structure = cp.MLModelStructure(neuralnetwork=None, pipeline=None, program=cp.MLModelStructureProgram(
            functions={"main": cp.MLModelStructureProgramFunction(inputs=[], block=block)}))
        plan = mock.create_autospec(cp.MLComputePlan, instance=True)
        plan.model_structure = structure

        def usage(operation):
            where = cd.MLCPUComputeDevice if operation.operator_name == "gather" else cd.MLNeuralEngineComputeDevice
            return cp.MLComputePlanDeviceUsage(preferred_compute_device=mock.create_autospec(where, instance=True),
                                               supported_compute_devices=[])

        plan.get_compute_device_usage_for_mlprogram_operation.side_effect = usage
        return plan

    def _wrapper(self, spec_or_path, weights_dir, compute_units=None, function_name=None, optimization_hints=None,
                 device=None):
        aw = self.real.models.ml_program.experimental.async_wrapper
        cls = aw.LocalMLModelAsyncWrapper if device is None else aw.RemoteMLModelAsyncWrapper
        w = mock.create_autospec(cls, instance=True)
        name = Path(spec_or_path).name
        where = None if device is None else device.name
        w.load_duration_in_nano_seconds = None
        w.last_predict_duration_in_nano_seconds = None
        w.make_state_if_needed.return_value = None
        predictions = iter(range(10**6))
        if self.real_packages:
            wanted = {f.name: tuple(f.type.multiArrayType.shape)
                      for f in self.real.utils.load_spec(str(spec_or_path)).description.input}
        else:
            wanted = {"hidden_states": (2, 4, 8, 8), "temb": (2, 16)}

        async def load():
            self.calls.append(("load", name, compute_units.name, where))
            if device is not None and device.session is not None and not device.session.is_alive():
                raise self.rd._DeviceCtlError(message=b"ERROR: file not found", error_code=1)
            if device is not None and self.app.crash_on and self.app.crash_on in name:
                self.app.running = False  # iOS ended it for memory while it loaded
                raise self.rd._DeviceCtlError(message=b"ERROR: file not found", error_code=1)
            if self.fail_on and self.fail_on in name:
                raise RuntimeError("Error compiling model: unsupported op\nmore detail on line 2")
            if self.interrupt_on and self.interrupt_on in name:
                raise KeyboardInterrupt
            w.load_duration_in_nano_seconds = self.load_ns[self._loads % len(self.load_ns)]  # first, warm, ...
            self._loads += 1
            self.loaded.append(w)

        async def predict(inputs, state=None):
            i = next(predictions)
            assert {k: tuple(v.shape) for k, v in inputs.items()} == wanted if self.real_packages else \
                set(inputs) == set(wanted) and inputs["hidden_states"].shape == wanted["hidden_states"]
            w.last_predict_duration_in_nano_seconds = self.samples_ns[i % len(self.samples_ns)]
            return {}

        async def plan():
            self.calls.append(("retrieve_compute_plan", name))
            if self.plan_fails:
                raise ValueError("Error Domain=com.apple.CoreML Code=0 \"Failed to load the compute plan\"")
            return self._plan()

        async def unload():
            self.calls.append(("unload", name))
            self.loaded.remove(w)

        w.load.side_effect, w.predict.side_effect = load, predict
        w.retrieve_compute_plan.side_effect, w.unload.side_effect = plan, unload
        return w


def xcodebuild_failure(output: bytes, code: int = 65) -> Exception:
    """The error coremltools' `_AppBuilder.build` raises when xcodebuild fails, raised the way it raises it
    (inside the `except CalledProcessError`, so the process output survives only as `__context__`)."""
    import subprocess

    import coremltools as ct

    rd = ct.models.ml_program.experimental.remote_device
    try:
        try:
            raise subprocess.CalledProcessError(code, "xcodebuild", output=output)
        except subprocess.CalledProcessError as e:
            raise rd._AppBuilder.Error(error_code=e.returncode, message=e.stderr)  # noqa: B904 (coremltools' way)
    except rd._AppBuilder.Error as err:
        return err


def fake_device_backend(tmp_path: Path, name: str = "iphone", fake: FakeCoreML | None = None, **kw: Any):
    """A DeviceBackend on a fake Mac (Xcode 16, one iPhone 14 Pro attached) over FakeCoreML; (backend, fake)."""
    from snapbench.profilers.backends import DeviceBackend
    from snapbench.profilers.coreml_api import CoreMLTools, Signing

    fake = fake or FakeCoreML()
    machine = kw.pop("machine", None) or fake_mac(tmp_path, chip=kw.pop("chip", "Apple M2 Pro"),
                                                  devices=kw.pop("devices", None))
    kw.setdefault("sleep", lambda s: None)  # the startup and trust waits count, they do not wait
    return DeviceBackend(name, api=CoreMLTools(fake.ct), machine=machine,
                         signing=kw.pop("signing", Signing.for_team("ABCDE12345")),
                         runner_dir=tmp_path / "runner", **kw), fake


# --- the runner app behind coremltools' real request path ------------------------------------------------
class RunnerOnPhone:
    """The model-runner app as coremltools' real `_DeviceCtlSocket` sees it through an `_AppSession`
    (autospec of the real class): files copied into the app's container (`send_file_to_app`) and read
    back (`receive_file_from_app`, devicectl's "file not found" until the response exists). A request's
    message.json is answered the way the runner answers (modelID, duration; predictions with an output
    resource). `running` False: nothing answers; `answer_after` receives fail before the answer shows."""

    def __init__(self, working_directory: Path, *, answer_after: int = 0) -> None:
        import coremltools as ct

        self.rd = ct.models.ml_program.experimental.remote_device
        self.container: dict[str, int] = {}  # path in the app's container -> bytes
        self.running = True
        self.answer_after = answer_after
        self.receives = 0
        self.copies_to: list[str] = []
        self._answers: dict[str, bytes] = {}
        self.session = fake_session(self.rd, alive=lambda: self.running, working_directory=working_directory)
        self.session.send_file_to_app.side_effect = self._send
        self.session.receive_file_from_app.side_effect = self._receive
        self.device = dataclasses.replace(_phone(self.rd), session=self.session)

    def _send(self, source_path, destination):
        source_path = Path(source_path)
        self.copies_to.append(destination)
        files = [source_path] if source_path.is_file() else [f for f in source_path.rglob("*") if f.is_file()]
        for f in files:
            rel = "" if f == source_path else "/" + f.relative_to(source_path).as_posix()
            self.container[destination + rel] = f.stat().st_size
        if destination.endswith("/message.json") and "/requests/messages/" in destination and self.running:
            self._answer(json.loads(source_path.read_text()), destination.split("/requests/")[0])
        return self.rd._DataTransferInfo(source=str(source_path), destination=destination)

    def _answer(self, message: dict, root: str) -> None:
        rid, params = message["id"], message["params"]
        result: dict[str, Any] = {"modelID": params["modelID"]}
        reply: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        if message["method"] == "MLModelService.Load":
            result["duration"] = 60_000_000_000
        elif message["method"] == "MLModelService.Prediction":
            result.update(outputs={}, duration=5_000_000)
            reply["resource"] = "outputs.bin"
            self._answers[f"{root}/responses/{rid}/outputs.bin"] = b"\0" * (2 << 20)
            self.container[f"{root}/responses/{rid}/outputs.bin"] = 2 << 20
        reply["result"] = result
        self._answers[f"{root}/responses/{rid}/message.json"] = json.dumps(reply).encode()
        self.container[f"{root}/responses/{rid}/message.json"] = len(self._answers[f"{root}/responses/{rid}/message.json"])

    def _receive(self, destination_path, source):
        self.receives += 1
        if self.receives <= self.answer_after or source not in self._answers:
            raise self.rd._DeviceCtlError(message=b"ERROR: The file couldn't be opened because it doesn't exist.",
                                          error_code=1)
        Path(destination_path).write_bytes(self._answers[source])
        return self.rd._DataTransferInfo(source=source, destination=str(destination_path))


def _phone(rd: Any) -> Any:
    return rd.Device(name="Test iPhone", type=rd.DeviceType.IPHONE, identifier="ID-00008120-0001",
                     udid="00008120-0001", os_version="18.1", os_build_number="22B83",
                     developer_mode_state="enabled", state=rd.DeviceState.CONNECTED, session=None)
