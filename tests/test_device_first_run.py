"""A first iPhone run with a free signing team, and what coremltools 9 gets wrong around it (issue 22).

Two levels of fakes, both from the real coremltools classes: `RunnerOnPhone` answers coremltools' *real*
request path (`_RemoteMLModelService`, `_DeviceCtlSocket`, and the patched `_DeviceCtlRemoteService` built by
coremltools itself) through an autospec'd `_AppSession`; `FakeCoreML` stands in for the model wrappers.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import numpy as np
import pytest
from profile_fakes import FakeApp, FakeCoreML, FakePackages, RunnerOnPhone, fake_device_backend, toy_estimator

from snapbench.cli import main
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.profilers import backends, coreml_api
from snapbench.profilers.backends import PackageFailed
from snapbench.profilers.coreml_api import CoreMLTools
from snapbench.profilers.measurement import PackageJob
from snapbench.profilers.runner_build import STAMP

ct = pytest.importorskip("coremltools")
rd = ct.models.ml_program.experimental.remote_device


def jobs(tmp_path, n=3):
    out = []
    for i in range(n):
        p = tmp_path / f"b{i}.mlpackage"
        p.mkdir(exist_ok=True)
        out.append(PackageJob(f"sig{i}", f"RB[Down-1, {i + 1}]", p))
    return out


# coremltools' own request path, with the patched request class it constructs --------------------------------
def _model_dir(tmp_path):
    model = tmp_path / "model.mlmodelc"
    (model / "weights").mkdir(parents=True)
    (model / "model.mil").write_text("program(1.0)")
    (model / "weights" / "weight.bin").write_bytes(b"\1" * (3 << 20))
    return model


async def _load_predict_unload(runner, model, api):
    service = await rd._RemoteMLModelService.load_on_device(device=runner.device, compiled_model_path=model,
                                                            compute_units=ct.ComputeUnit.CPU_AND_NE)
    await service.predict({"x": np.zeros((1, 4, 256, 256), np.float32)})
    await service.unload()
    return service


def test_coremltools_builds_the_patched_request_class_and_it_answers(tmp_path):
    runner = RunnerOnPhone(tmp_path / "session")
    api = CoreMLTools(ct)
    with api.request_time_limit(30):
        service = asyncio.run(_load_predict_unload(runner, _model_dir(tmp_path), api))
        patched = rd._DeviceCtlRemoteService
    remote = service._service
    assert type(remote) is patched and type(remote) is not rd._DeviceCtlRemoteService  # built by coremltools
    assert (remote.max_attempts, remote.poll_time) == (60, 0.5)
    assert service.load_duration_in_nano_seconds == 60_000_000_000
    assert service.last_predict_duration_in_nano_seconds == 5_000_000
    # the prediction's input (coremltools: NamedTemporaryFile(delete=False)) is gone from this Mac
    sent = [c.args[0] for c in runner.session.send_file_to_app.call_args_list if str(c.args[0]).endswith(".bin")]
    assert sent and not any(p.exists() for p in sent)


# coremltools' own __del__ of a model still loaded on a dead app fires an Unload it never awaits
@pytest.mark.filterwarnings("ignore:coroutine .*call_method' was never awaited")
def test_a_dead_app_fails_the_request_at_the_first_poll(tmp_path):
    runner = RunnerOnPhone(tmp_path / "session")
    api = CoreMLTools(ct)

    async def load_then_die():
        service = await rd._RemoteMLModelService.load_on_device(
            device=runner.device, compiled_model_path=_model_dir(tmp_path), compute_units=ct.ComputeUnit.CPU_AND_NE)
        runner.running = False  # iOS ended the app
        before = runner.receives
        with pytest.raises(rd._DeviceCtlError):
            await service.predict({"x": np.zeros((1, 4), np.float32)})
        return runner.receives - before

    with api.request_time_limit(30):
        polls = asyncio.run(load_then_die())
    assert polls == 1  # coremltools alone polls all 60 (its is_alive is never called)


def test_what_a_package_leaves_is_removed_on_the_mac_and_emptied_on_the_phone(tmp_path):
    runner = RunnerOnPhone(tmp_path / "session")
    api = CoreMLTools(ct)
    with api.request_time_limit(30):
        asyncio.run(_load_predict_unload(runner, _model_dir(tmp_path), api))
    assert any((tmp_path / "session").iterdir())  # each socket's requests/responses folders
    left = api.clean_requests(runner.device)
    assert not any((tmp_path / "session").iterdir())
    big = {p for p, size in left.phone_files if size >= coreml_api.PHONE_CLEANUP_MIN_BYTES}
    assert any(p.endswith("/model.mlmodelc/weights/weight.bin") for p in big)  # the model copy
    assert any(p.endswith("/outputs.bin") for p in big) and any(p.endswith(".bin") and "/requests/" in p for p in big)
    assert all(runner.container[p] == 0 for p in big)  # emptied through the runner's own file copies
    assert api.request_files.phone_files == []  # the next package starts afresh


# the backend: first launch, crashes, limits, failures -----------------------------------------------------------
def test_a_free_teams_first_run_waits_for_the_trust_then_measures(tmp_path):
    said: list[str] = []
    be, fake = fake_device_backend(tmp_path, fake=FakeCoreML(app=FakeApp(untrusted_launches=2)), say=said.append,
                                   repeats=2, warmup=0)
    dev = resolve_device("iphone14pro")
    with be.open(be.identify(dev)) as price:
        ms = [price(j, dev) for j in jobs(tmp_path, 2)]
    assert [m.samples for m in ms] == [2, 2]
    assert said[0].startswith("the runner app did not start on Test iPhone (ERROR: The application could not be "
                              "launched because its profile has not been explicitly trusted by the user.")
    assert "VPN & Device Management" in said[0] and "\n" not in said[0]
    assert any("s left to trust" in line for line in said)  # the countdown
    assert said[-1].startswith("the runner app runs on Test iPhone")
    assert [c[0] for c in fake.calls].count("launch_app") == 2 and fake.app.running


def test_no_trust_within_the_wait_is_one_line(tmp_path):
    said: list[str] = []
    be, _ = fake_device_backend(tmp_path, fake=FakeCoreML(app=FakeApp(untrusted_launches=99)), say=said.append,
                                trust_wait_s=30)
    with pytest.raises(SnapbenchError, match="trust the developer .*VPN & Device Management, then run again") as e:
        with be.open(be.identify(None)):
            pass
    assert "\n" not in str(e.value)
    assert [ln.split(": ")[1].split(" s left")[0] for ln in said if "s left" in ln] == ["20", "10", "0"]


def test_an_app_killed_mid_run_fails_that_package_and_the_run_goes_on(tmp_path):
    said: list[str] = []
    be, fake = fake_device_backend(tmp_path, fake=FakeCoreML(app=FakeApp(crash_on="b1")), say=said.append,
                                   repeats=2, warmup=0)
    dev = resolve_device("iphone14pro")
    got = []
    with be.open(be.identify(dev)) as price:
        for j in jobs(tmp_path):
            try:
                got.append(price(j, dev).samples)
            except PackageFailed as e:
                got.append(str(e))
    assert got[0] == 2 and got[2] == 2
    assert "RB[Down-1, 2]" in got[1] and "runner app stopped" in got[1] and "\n" not in got[1]
    assert [c[0] for c in fake.calls].count("launch_app") == 1 and fake.loaded == []


def test_a_request_never_answered_ends_at_the_limit(tmp_path):
    fake = FakeCoreML()
    api = CoreMLTools(fake.ct)

    async def never(*a, **k):
        await asyncio.sleep(20)  # then "loads": a limit that is not enforced fails the test, not the suite

    wrapper = fake._wrapper
    fake.ct.models.ml_program.experimental.async_wrapper.MLModelAsyncWrapper.from_spec_or_path.side_effect = (
        lambda **kw: _hanging(wrapper(**kw), never))
    with api.request_time_limit(1):
        with pytest.raises(coreml_api.RequestTimeout, match="loading b0.mlpackage: no answer .* within 1 s"):
            asyncio.run(api.time_package(tmp_path / "b0.mlpackage", device=fake.phone, compute_units="all",
                                         warmup=0, repeats=1))


def _hanging(w, never):
    w.load.side_effect = never
    return w


def test_a_failed_compute_plan_keeps_the_timings(tmp_path):
    said: list[str] = []
    be, _ = fake_device_backend(tmp_path, fake=FakeCoreML(plan_fails=True), say=said.append, repeats=5, warmup=0)
    dev = resolve_device("iphone14pro")
    with be.open(be.identify(dev)) as price:
        m = price(jobs(tmp_path, 1)[0], dev)
    assert (m.samples, m.latency_ms, m.placement) == (5, 5.0, "")
    assert any("compute plan failed" in s and "timings kept" in s for s in said)


@pytest.mark.slow  # the whole CLI (about 10 s here)
def test_profile_lists_the_failures_and_exits_1(tmp_path, capsys, monkeypatch):
    from profile_fakes import fake_mac

    from snapbench.latency.model_latency import ProfileTools

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    pk = FakePackages(tmp_path / "pk")
    victim = "text_encoder.mlpackage"
    fake = FakeCoreML(fail_on=victim)
    tools = ProfileTools(packages=pk, estimator=toy_estimator(), coreml=CoreMLTools(fake.ct),
                         machine=fake_mac(tmp_path / "machine"), sleep=lambda s: None)
    rc = main(["profile", "--device", "iphone14pro", "--model", "sd15-tiny", "--latent", "16", "--backend", "iphone",
               "--component", "unet", "--component", "text_encoder", "--repeats", "2", "--warmup", "0", "--json"],
              obj=tools)
    captured = capsys.readouterr()
    err = captured.err
    assert [f["block"] for f in json.loads(captured.out)["failures"]] == ["text_encoder"]
    assert rc == 1
    assert "1 package(s) could not be measured on iphone14pro" in err and f"({victim}): " in err
    assert "unsupported op" in err and "Traceback" not in err


# the runner build ------------------------------------------------------------------------------------------------
def _open(tmp_path, **kw):
    be, fake = fake_device_backend(tmp_path, **kw)
    with be.open(be.identify(None)):
        pass
    return next(c[3] for c in fake.calls if c[0] == "prepare_for_model_debugging"), be


def _built_app(folder, expires: dt.datetime | None = None):
    app = folder / "00008120-0001" / "Release-iphoneos" / "ModelRunner.app"
    app.mkdir(parents=True, exist_ok=True)
    if expires is not None:
        (app / "embedded.mobileprovision").write_bytes(
            b"0\x82\x1f\x00junk<?xml version=\"1.0\"?><plist><dict><key>ExpirationDate</key>\n\t<date>"
            + expires.strftime("%Y-%m-%dT%H:%M:%SZ").encode() + b"</date></dict></plist>junk")


def test_the_runner_is_rebuilt_when_what_built_it_changed(tmp_path):
    from snapbench.profilers.coreml_api import Signing

    said: list[str] = []
    clean, be = _open(tmp_path)
    folder = be.runner_folder()
    assert clean is False and json.loads((folder / STAMP).read_text())["team_id"] == "ABCDE12345"
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=6)
    _built_app(folder, expires=later)
    assert _open(tmp_path)[0] is False  # same team, bundle, Xcode, coremltools, profile valid: reused
    assert _open(tmp_path, rebuild_runner=True)[0] is True
    assert _open(tmp_path, signing=Signing.for_team("ZZZZZ99999", "dev.snapbench.modelrunner.abcde12345"),
                 say=said.append)[0] is True
    assert said == ["building the runner app again: the signing team changed (ABCDE12345 -> ZZZZZ99999)"]
    _open(tmp_path)  # stamped with ABCDE12345 again
    _built_app(folder, expires=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1))
    said.clear()
    assert _open(tmp_path, say=said.append)[0] is True and "provisioning profile expired" in said[0]


def test_cache_clean_device_removes_the_runner_app_from_the_phone(tmp_path, capsys, monkeypatch):
    from profile_fakes import fake_mac

    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    machine = fake_mac(tmp_path / "machine")
    rc = main(["cache", "clean", "--device"], obj=machine)
    assert rc == 2 and "no runner app was built" in capsys.readouterr().err
    stamp = tmp_path / "cache" / "modelrunner" / "dev.snapbench.modelrunner.abcde12345" / STAMP
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"team_id": "ABCDE12345", "bundle_id": "dev.snapbench.modelrunner.abcde12345",
                                 "xcode": "Xcode 16.1", "coremltools": "9.0"}))
    assert main(["cache", "clean", "--device"], obj=machine) == 0
    assert ["xcrun", "devicectl", "device", "uninstall", "app", "--device", "00008120-0001",
            "dev.snapbench.modelrunner.abcde12345"] in machine.shell.calls  # type: ignore[attr-defined]
    assert "dev.snapbench.modelrunner.abcde12345 removed with its files" in capsys.readouterr().out


def test_startup_check_waits_a_few_seconds_not_the_request_budget():
    assert backends.STARTUP_S <= 10 < coreml_api.DEFAULT_REQUEST_TIMEOUT_S


def test_a_relaunch_that_fails_is_one_line(tmp_path):
    fake = FakeCoreML(app=FakeApp(untrusted_launches=1))
    fake.remote_device._DeviceCtl.launch_app.side_effect = rd._DeviceCtlError(
        message=b"ERROR: The device was disconnected.\n", error_code=1)
    be, _ = fake_device_backend(tmp_path, fake=fake)
    with pytest.raises(SnapbenchError, match="relaunching the runner app on Test iPhone failed: ERROR: The device "
                                             "was disconnected.; run `snapbench doctor`"), be.open(be.identify(None)):
        pass
