"""The contract between `snapbench.profilers.coreml_api` and the installed coremltools, checked on Linux.

Prediction, compute plans and the phone need macOS, so the adapter cannot run here; but every class,
method, attribute, argument name and sync/async-ness it relies on is in coremltools' Python source, which
the Linux wheel ships. Each check below names the adapter call it protects. A renamed or misspelt call
(coremltools' own docstrings say `get_compiled_path`; the method is `get_compiled_model_path`) fails here.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import inspect
import re
import subprocess
import tempfile
from pathlib import Path

import pytest

ct = pytest.importorskip("coremltools")
exp = ct.models.ml_program.experimental
rd, aw = exp.remote_device, exp.async_wrapper
cp, cd = ct.models.compute_plan, ct.models.compute_device

from profile_fakes import FakeCoreML, xcodebuild_failure  # noqa: E402

from snapbench.profilers import coreml_api  # noqa: E402
from snapbench.profilers.coreml_api import COMPUTE_UNITS, CoreMLTools, Signing  # noqa: E402


def binds(fn, *args, **kwargs) -> None:
    inspect.signature(fn).bind(*args, **kwargs)  # TypeError when a name or arity is wrong


def test_compute_units_exist():
    for name in COMPUTE_UNITS.values():
        assert isinstance(getattr(ct.ComputeUnit, name), ct.ComputeUnit)


def test_remote_device_calls():
    # connected_iphones: Device.get_connected_devices(DeviceType.IPHONE), a plain (sync) static method
    binds(rd.Device.get_connected_devices, rd.DeviceType.IPHONE)
    assert not inspect.iscoroutinefunction(rd.Device.get_connected_devices)
    # prepare: await device.prepare_for_model_debugging(credentials=, working_directory=, clean=)
    assert inspect.iscoroutinefunction(rd.Device.prepare_for_model_debugging)
    binds(rd.Device.prepare_for_model_debugging, object(), credentials=None, working_directory=Path("."), clean=False)
    # the credentials the adapter builds
    creds = rd.AppSigningCredentials(development_team="ABCDE12345", provisioning_profile_uuid=None,
                                     bundle_identifier="dev.snapbench.x")
    assert creds.development_team == "ABCDE12345"
    # Device fields the adapter and the fakes read
    assert {"name", "udid", "os_version", "os_build_number", "state", "type"} <= {
        f.name for f in dataclasses.fields(rd.Device)}


def test_build_failure_is_reported_from_the_merged_output():
    # coremltools merges xcodebuild's stderr into stdout and reports e.stderr (None): the adapter reads the
    # output from the CalledProcessError the builder error was raised inside of.
    assert issubclass(rd._AppBuilder.Error, Exception)
    src = inspect.getsource(rd._AppBuilder.build)
    assert "stderr=_subprocess.STDOUT" in src and "message=e.stderr" in src
    err = xcodebuild_failure(b"note: x\nerror: No Account for Team 'X'\n")
    assert str(err) == "[Error Code 65] None"  # what users saw
    text = coreml_api.build_failure(err, Path(tempfile.mkdtemp()) / "log.txt")
    assert "error: No Account for Team 'X'" in text and "exit 65" in text and "--team-id" in text


def test_request_time_limit_patch_point():
    # coremltools builds its request service inside load_on_device with defaults only: the adapter
    # replaces the module's class for the duration of a request, so the lookup must stay a module global.
    assert "_DeviceCtlRemoteService(socket=socket)" in inspect.getsource(rd._RemoteMLModelService.load_on_device)
    binds(rd._DeviceCtlRemoteService.__init__, object(), object(), poll_time=0.5, max_attempts=20)
    api = CoreMLTools(ct)
    original = rd._DeviceCtlRemoteService
    with api.request_time_limit(900):
        patched = rd._DeviceCtlRemoteService
        assert patched is not original and issubclass(patched, original)
        assert inspect.signature(patched.__init__).parameters["max_attempts"].default == 1800
    assert rd._DeviceCtlRemoteService is original  # restored


@pytest.mark.parametrize("cls", [aw.LocalMLModelAsyncWrapper, aw.RemoteMLModelAsyncWrapper])
def test_model_wrapper_calls(cls):
    binds(aw.MLModelAsyncWrapper.from_spec_or_path, spec_or_path="m.mlpackage", weights_dir="w",
          compute_units=ct.ComputeUnit.CPU_AND_NE, device=None)
    for name in ("load", "predict", "retrieve_compute_plan", "unload"):
        assert inspect.iscoroutinefunction(getattr(cls, name)), name
    for name in ("make_state_if_needed", "cleanup"):
        assert not inspect.iscoroutinefunction(getattr(cls, name)), name
    binds(cls.predict, object(), {}, state=None)
    for name in ("load_duration_in_nano_seconds", "last_predict_duration_in_nano_seconds"):
        assert isinstance(inspect.getattr_static(cls, name), property), name


def test_compute_plan_calls():
    assert isinstance(inspect.getattr_static(cp.MLComputePlan, "model_structure"), property)
    binds(cp.MLComputePlan.get_compute_device_usage_for_mlprogram_operation, object(), object())
    fields = lambda c: {f.name for f in dataclasses.fields(c)}  # noqa: E731
    assert "program" in fields(cp.MLModelStructure)
    assert "functions" in fields(cp.MLModelStructureProgram)
    assert "block" in fields(cp.MLModelStructureProgramFunction)
    assert "operations" in fields(cp.MLModelStructureProgramBlock)
    assert "operator_name" in fields(cp.MLModelStructureProgramOperation)
    assert "preferred_compute_device" in fields(cp.MLComputePlanDeviceUsage)
    for name in ("MLNeuralEngineComputeDevice", "MLGPUComputeDevice", "MLCPUComputeDevice"):
        assert issubclass(getattr(cd, name), cd.MLComputeDevice)
    # the remote plan gives the same device classes as the local one
    assert "MLNeuralEngineComputeDevice(" in inspect.getsource(exp.compute_plan_utils)


def test_spec_and_input_types():
    binds(ct.utils.load_spec, "m.mlpackage")
    assert ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.INT32


def test_the_compiled_model_path_has_the_name_coremltools_gives_it():
    # bug 1: the old adapter called get_compiled_path(), which coremltools' docstrings mention but does not have
    assert hasattr(ct.models.MLModel, "get_compiled_model_path")
    assert not hasattr(ct.models.MLModel, "get_compiled_path")


def test_every_coremltools_name_the_adapter_uses_is_checked_here():
    """Attribute names the adapter reads off coremltools objects: each must exist on a real class or module
    (a new call must be added to the checks above, or it fails here)."""
    tree = ast.parse(Path(coreml_api.__file__).read_text())
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    known = set()
    for obj in (ct, ct.models, ct.models.ml_program, exp, rd, aw, cp, cd, ct.utils, ct.proto, rd.Device, rd._AppBuilder,
                aw.MLModelAsyncWrapper, aw.RemoteMLModelAsyncWrapper, cp.MLComputePlan,
                rd.DeviceType, ct.proto.FeatureTypes_pb2, ct.proto.Model_pb2.Model(),
                ct.proto.FeatureTypes_pb2.ArrayFeatureType, ct.proto.Model_pb2.Model().description,
                ct.proto.FeatureTypes_pb2.FeatureType(), ct.proto.FeatureTypes_pb2.ArrayFeatureType(),
                ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType):
        known |= set(dir(obj))
    known |= set(ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.keys())
    for obj in (rd._AppSession, rd._DeviceCtl, rd._DeviceCtlSocket, rd._DeviceCtlRemoteService, subprocess.Popen):
        known |= set(dir(obj))
    for c in (cp.MLModelStructure, cp.MLModelStructureProgram, cp.MLModelStructureProgramFunction,
              cp.MLModelStructureProgramBlock, cp.MLModelStructureProgramOperation, cp.MLComputePlanDeviceUsage,
              rd.Device, rd._JSONRPCRequest, rd._JSONRPCResponse, rd._AppInstallationInfo):
        known |= {f.name for f in dataclasses.fields(c)}
    for c in (rd._AppSession, rd._DeviceCtlSocket):  # attributes their __init__ sets
        known |= set(re.findall(r"self\.(\w+) =", inspect.getsource(c.__init__)))
    ours = {"ct", "_ct", "_rd", "team_id", "bundle_id", "predict_ms", "first_load_ms", "warm_load_ms", "placement",
            "parent", "mkdir", "name", "write_text", "decode", "strip", "splitlines", "lower", "random", "randint",
            "astype", "float32", "int32", "contextmanager", "asynccontextmanager", "suppress", "values",
            "group", "message", "error_code", "output", "stdout", "returncode", "ComputeUnit", "__context__",
            "ndarray", "append", "ceil", "_files", "_socket", "_time_limit_s", "mac_folders", "phone_files",
            "request_files", "extend", "rmtree", "TemporaryDirectory", "TimeoutError", "wait_for", "st_size", "read",
            "stderr"}  # Popen.stderr: set by its __init__
    unknown = sorted(used - known - own - ours - set(dir(Path)) - set(dir(str)))
    assert unknown == [], f"coremltools names not found in the installed coremltools: {unknown}"


# the adapter driven end to end through fakes built from the real classes ----------------------------------
def test_time_package_on_the_phone_unloads_everything(tmp_path):
    fake = FakeCoreML()
    api = CoreMLTools(fake.ct)
    pkg = tmp_path / "b0.mlpackage"
    timing = asyncio.run(api.time_package(pkg, device=fake.phone, compute_units="cpu_and_ne", warmup=2, repeats=5))
    assert [c[0] for c in fake.calls] == ["load", "unload", "load", "retrieve_compute_plan", "unload"]
    assert fake.calls[0] == ("load", "b0.mlpackage", "CPU_AND_NE", "Test iPhone")
    assert fake.loaded == []  # nothing left loaded in the runner app
    assert (timing.first_load_ms, timing.warm_load_ms) == (60_000.0, 900.0)
    # 2 warm-up predictions dropped: samples 3..7 of the cycle (6.0, 5.5, 4.5, 5.0, 4.0 ms)
    assert timing.predict_ms == [6.0, 5.5, 4.5, 5.0, 4.0]
    assert timing.placement == {"ane": 2, "cpu": 1}  # const not counted; gather on the CPU


def test_a_failing_load_leaves_nothing_loaded(tmp_path):
    fake = FakeCoreML(fail_on="b1")
    with pytest.raises(RuntimeError, match="unsupported op"):
        asyncio.run(CoreMLTools(fake.ct).time_package(tmp_path / "b1.mlpackage", device=None,
                                                      compute_units="all", warmup=0, repeats=1))
    assert fake.loaded == []


def test_prepare_signs_with_the_team_and_keeps_the_build_folder(tmp_path):
    fake = FakeCoreML()
    api = CoreMLTools(fake.ct)
    phone = api.connected_iphones()[0]
    got = asyncio.run(api.prepare(phone, Signing.for_team("ABCDE12345"), tmp_path / "runner"))
    assert dataclasses.replace(got, session=None) == fake.phone and api.app_alive(got)
    _, creds, folder, clean = fake.calls[-1]
    assert creds == rd.AppSigningCredentials(development_team="ABCDE12345", provisioning_profile_uuid=None,
                                             bundle_identifier="dev.snapbench.modelrunner.abcde12345")
    assert (folder, clean) == ("runner", False)  # reused across runs: the app is built once


def test_random_inputs_follow_a_real_converted_package(tiny_package):
    spec = ct.utils.load_spec(str(tiny_package))
    inputs = coreml_api.random_inputs(spec.description, ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType)
    declared = {f.name: tuple(f.type.multiArrayType.shape) for f in spec.description.input}
    assert {k: v.shape for k, v in inputs.items()} == declared


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    import numpy as np
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4, 8, 8)), mb.TensorSpec(shape=(1, 16))])
    def prog(x, t):
        return mb.add(x=mb.conv(x=x, weight=np.ones((4, 4, 1, 1), dtype=np.float32)), y=mb.reduce_sum(x=t))

    path = tmp_path_factory.mktemp("pkg") / "tiny.mlpackage"
    ct.convert(prog, convert_to="mlprogram", skip_model_load=True).save(str(path))
    return path
