"""The iphone and mac backends against fakes built from coremltools' real classes (`profile_fakes`), a
Mac with Xcode and a phone described by canned `devicectl` JSON: readiness refusals, which phone is which
catalog device, the runner app prepared once, rows kept after every package, resume, `auto`'s choice."""

from __future__ import annotations

import pytest
from profile_fakes import (
    FakeCoreML,
    FakePackages,
    devicectl_entry,
    fake_device_backend,
    fake_mac,
    toy_estimator,
    xcodebuild_failure,
)

from snapbench.backbones import resolve_model
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.latency.model_latency import profile_model
from snapbench.latency.table import LatencyTable, Settings
from snapbench.profilers.backends import DeviceBackend, choose_backend
from snapbench.profilers.measurement import PackageJob
from snapbench.profilers.readiness import blocker, put_devicectl_on_path


def jobs(tmp_path, n=2):
    out = []
    for i in range(n):
        p = tmp_path / f"b{i}.mlpackage"
        p.mkdir()
        out.append(PackageJob(f"sig{i}", f"RB[Down-1, {i + 1}]", p))
    return out


backend = fake_device_backend


def test_mac_backend_times_each_package_with_loads_and_compute_plan(tmp_path):
    be, fake = backend(tmp_path, "mac", warmup=2, repeats=5, chip="Apple M2")
    target = be.identify(None)
    assert (target.device_id, target.os_build) == ("mac-m2", "24B83")
    dev = resolve_device("mac-m2")
    with be.open(target) as price:
        ms = [price(j, dev) for j in jobs(tmp_path)]
    assert [c[0] for c in fake.calls] == ["load", "unload", "load", "retrieve_compute_plan", "unload"] * 2
    assert all(c[3] is None for c in fake.calls if c[0] == "load")  # on this Mac, not a phone
    m = ms[0]
    assert (m.backend, m.latency_ms, m.samples) == ("mac", 5.0, 5)
    assert m.p90_ms == pytest.approx(5.8)
    assert m.placement == "ane=2;cpu=1"
    assert (m.first_load_ms, m.warm_load_ms, m.os_build) == (60_000.0, 900.0, "24B83")
    assert f"coremltools={fake.real.__version__}" in m.versions and fake.loaded == []


def test_iphone_backend_identifies_the_phone_and_prepares_the_runner_once(tmp_path):
    be, fake = backend(tmp_path, warmup=0, repeats=3)
    target = be.identify(None)  # --device auto
    assert (target.device_id, target.name, target.os_build) == ("iphone14pro", "Test iPhone", "22B83")
    dev = resolve_device("iphone14pro")
    with be.open(target) as price:
        ms = [price(j, dev) for j in jobs(tmp_path, 3)]
    prepares = [c for c in fake.calls if c[0] == "prepare_for_model_debugging"]
    assert len(prepares) == 1 and prepares[0][1].development_team == "ABCDE12345"
    assert all(c[3] == "Test iPhone" for c in fake.calls if c[0] == "load")
    assert {m.backend for m in ms} == {"iphone"} and all(m.samples == 3 for m in ms)
    assert ms[0].source == "Test iPhone (iOS 18.1, build 22B83)"


def test_a_phone_of_another_model_than_device_is_refused(tmp_path):
    be, _ = backend(tmp_path)
    with pytest.raises(SnapbenchError, match="--device iphone15 is not attached.*Test iPhone is iphone14pro.*--device auto"):
        be.identify(resolve_device("iphone15"))


@pytest.mark.parametrize("entry, words", [
    (dict(pairing="unpaired"), "does not trust this Mac"),
    (dict(developer_mode="disabled"), "Developer Mode off"),
    (dict(tunnel="disconnected"), "not connected.*unlock it"),
    (dict(os_version="17.2"), "iOS 17.2.*17.4 or later"),
    (dict(product="iPhone99,9"), "catalog does not have"),
])
def test_phone_problems_are_one_line_with_the_fix(tmp_path, entry, words):
    be, _ = backend(tmp_path, devices=[devicectl_entry(**entry)])
    with pytest.raises(SnapbenchError, match=words) as e:
        be.identify(None)
    assert "\n" not in str(e.value)


def test_no_phone(tmp_path):
    be, _ = backend(tmp_path, devices=[])
    with pytest.raises(SnapbenchError, match="no iPhone is attached: plug it in"):
        be.identify(None)


def test_runner_build_failure_names_the_xcodebuild_error(tmp_path):
    failure = xcodebuild_failure(b"error: Signing for \"modelrunner\" requires a development team.\n")
    be, _ = backend(tmp_path, fake=FakeCoreML(fail_prepare=failure))
    with pytest.raises(SnapbenchError) as e, be.open(be.identify(None)):
        pass
    msg = str(e.value)
    assert "requires a development team" in msg and "exit 65" in msg and "None" not in msg
    assert (tmp_path / "runner" / "xcodebuild.log").is_file()


def test_coremltools_failure_becomes_one_line_naming_the_block(tmp_path):
    be, fake = backend(tmp_path, "mac", fake=FakeCoreML(fail_on="b1"), chip="Apple M2")
    dev = resolve_device("mac-m2")
    with pytest.raises(SnapbenchError) as e, be.open(be.identify(dev)) as price:
        for j in jobs(tmp_path):
            price(j, dev)
    assert "RB[Down-1, 2]" in str(e.value) and "unsupported op" in str(e.value) and "\n" not in str(e.value)
    assert fake.loaded == []


@pytest.mark.parametrize("setup, words", [
    (dict(platform="linux"), "this machine runs linux"),
    (dict(xcode_path="/Library/Developer/CommandLineTools"), "only the Command Line Tools"),
    (dict(xcode="Xcode 15.4"), "Xcode 15.4.*Xcode 16 or later"),
    (dict(team_id=None), "no team id.*--team-id"),
    (dict(runner=False), "modelrunner.*macOS wheel"),
    (dict(native=False), "not the macOS one"),
    (dict(macos="14.2"), "macOS 14.2.*14.4"),
])
def test_iphone_refusals_before_anything_runs(tmp_path, setup, words):
    machine = fake_mac(tmp_path, **setup)
    with pytest.raises(SnapbenchError, match=words) as e:
        choose_backend("iphone", resolve_device("iphone14pro"), machine=machine)
    assert "--backend estimate" in str(e.value) and "\n" not in str(e.value)
    assert not any(c[:2] == ["xcrun", "devicectl"] for c in machine.shell.calls)  # no phone asked for


def test_devicectl_outside_path_is_put_on_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin")
    machine = fake_mac(tmp_path, on_path=("xcodebuild",))
    assert blocker(machine, "iphone") is None
    assert put_devicectl_on_path(machine) == "/Applications/Xcode.app/Contents/Developer/usr/bin"
    import os

    assert os.environ["PATH"].startswith("/Applications/Xcode.app/Contents/Developer/usr/bin")


def test_mac_backend_never_files_mac_timings_under_an_iphone(tmp_path):
    machine = fake_mac(tmp_path)
    with pytest.raises(SnapbenchError, match="measures this Mac, not an iPhone 14 Pro"):
        choose_backend("mac", resolve_device("iphone14pro"), machine=machine)
    with pytest.raises(SnapbenchError, match="is a Mac; use --backend mac"):
        choose_backend("iphone", resolve_device("mac-m2"), machine=machine)
    be, _ = backend(tmp_path, "mac", chip="Apple M1")
    with pytest.raises(SnapbenchError, match="this Mac is mac-m1, not --device mac-m2"):
        be.identify(resolve_device("mac-m2"))


@pytest.mark.parametrize("setup, target, expected", [
    (dict(), "iphone14pro", "iphone"),
    (dict(devices=[]), "iphone14pro", "estimate"),
    (dict(team_id=None), "iphone14pro", "estimate"),
    (dict(xcode_path="/Library/Developer/CommandLineTools"), "iphone14pro", "estimate"),
    (dict(), "iphone15", "estimate"),  # the attached phone is another model
    (dict(), "mac-m2", "mac"),
    (dict(platform="linux"), "iphone14pro", "estimate"),
    (dict(platform="linux"), "mac-m2", "estimate"),
    (dict(), "ipadpro-m2", "estimate"),
])
def test_auto_picks_the_best_available_and_says_why(tmp_path, setup, target, expected):
    said: list[str] = []
    assert choose_backend("auto", resolve_device(target), machine=fake_mac(tmp_path, **setup),
                          say=said.append) == expected
    assert len(said) == 1 and said[0].startswith(f"backend auto -> {expected} (")


def test_profile_on_a_fake_iphone_saves_every_row_and_resumes(tmp_path):
    pk = FakePackages(tmp_path / "pk")
    s = Settings(latent=16)
    saved: list[int] = []
    be, fake = backend(tmp_path, repeats=4, warmup=1)
    run = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), s, backend=be, estimator=toy_estimator(), packages=pk,
                        progress=False, on_table=lambda t: saved.append(len(t)))
    assert run.backend == "iphone" and run.measured_on.os_build == "22B83"
    assert {r.backend for r in run.new_rows} == {"iphone"}
    assert saved == list(range(1, len(run.new_rows) + 1))  # the table handed on after every package
    assert all(r.samples == 4 and r.p90_ms is not None and r.placement for r in run.new_rows)
    assert all((r.first_load_ms, r.warm_load_ms, r.os_build) == (60_000.0, 900.0, "22B83") for r in run.new_rows)
    assert {r.block for r in run.new_rows if r.stage == "-"} == {"text_encoder", "vae_decoder"}
    # a component's load time: every block's package loaded once (a block repeated is a model loaded twice)
    assert run.components["unet"].first_load_ms == pytest.approx(60_000.0 * sum(1 for b in run.blocks if b.signature))
    # a second run with the table measures nothing again
    fake.calls.clear()
    again = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), s, table=run.table, backend=be, estimator=toy_estimator(),
                          packages=pk, progress=False)
    assert again.new_rows == [] and fake.calls == []
    # after an iOS update the same table is measured again
    be2, _ = backend(tmp_path, devices=[devicectl_entry(build="22C152", os_version="18.2")])
    newer = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), s, table=run.table, backend=be2, estimator=toy_estimator(),
                          packages=pk, progress=False)
    assert len(newer.new_rows) == len(run.new_rows) and {r.os_build for r in newer.table.rows()} == {"22C152"}


def test_a_failed_package_does_not_end_the_run(tmp_path):
    pk = FakePackages(tmp_path / "pk")
    s = Settings(latent=16)
    tables: list[LatencyTable] = []
    first = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), s, backend="estimate", estimator=toy_estimator(),
                          packages=pk, progress=False, components=("unet",))
    victim = sorted(pk.root.glob("*.mlpackage"))[3].name
    be, _ = backend(tmp_path, fake=FakeCoreML(fail_on=victim))
    run = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), s, backend=be, estimator=toy_estimator(), packages=pk,
                        progress=False, components=("unet",), on_table=tables.append)
    assert [(f.path.name, "unsupported op" in f.reason) for f in run.failures] == [(victim, True)]
    assert "\n" not in run.failures[0].reason
    measured = [r for r in tables[-1].rows() if r.backend == "iphone"]
    assert len(measured) == len(first.new_rows) - 1  # every other package measured, after the failure too
    # the failed one is estimated and labelled so; a rerun measures only it
    assert sorted(r.backend for r in run.new_rows).count("estimate") == 1
    be_ok, fake = backend(tmp_path)
    rerun = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), s, table=run.table, backend=be_ok, estimator=toy_estimator(),
                          packages=pk, progress=False, components=("unet",))
    assert [r.backend for r in rerun.new_rows] == ["iphone"] and rerun.failures == []


def test_estimates_are_labelled_and_refreshed_for_a_newer_estimator(tmp_path):
    pk = FakePackages(tmp_path / "pk")
    s = Settings(latent=16)
    old = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14"), s, backend=toy_estimator(7), packages=pk, progress=False,
                        components=("unet",))
    r = old.new_rows[0]
    assert (r.backend, r.samples, r.p90_ms, r.placement) == ("estimate", 0, None, "ane=11;cpu=1")
    assert "estimator=7" in r.versions
    again = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14"), s, table=old.table, backend=toy_estimator(7), packages=pk,
                          progress=False, components=("unet",))
    assert again.new_rows == []
    fresh = profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14"), s, table=old.table, backend=toy_estimator(8), packages=pk,
                          progress=False, components=("unet",))
    assert len(fresh.new_rows) == len(old.new_rows)
    assert all("estimator=8" in r.versions for r in fresh.table.rows())


def test_device_backend_validates_its_numbers():
    with pytest.raises(SnapbenchError, match="--repeats"):
        DeviceBackend("mac", repeats=0)
    with pytest.raises(SnapbenchError, match="--request-timeout"):
        DeviceBackend("iphone", request_timeout_s=0)


def test_ipads_are_never_measured_on_a_phone(tmp_path):
    with pytest.raises(SnapbenchError, match="measures iPhones, not an iPad Pro"):
        choose_backend("iphone", resolve_device("ipadpro-m2"), machine=fake_mac(tmp_path))


def test_the_team_id_may_come_from_the_environment(tmp_path):
    be, fake = backend(tmp_path, signing=None)  # fake_mac's team id stands for SNAPBENCH_TEAM_ID
    with be.open(be.identify(None)):
        pass
    creds = next(c[1] for c in fake.calls if c[0] == "prepare_for_model_debugging")
    assert creds.development_team == "ABCDE12345"
    be, _ = backend(tmp_path, signing=None, machine=fake_mac(tmp_path, team_id=None))
    with pytest.raises(SnapbenchError, match="pass --team-id"), be.open(be.identify(None)):
        pass


def test_an_untrusted_developer_profile_says_where_to_trust_it(tmp_path):
    import coremltools as ct

    rd = ct.models.ml_program.experimental.remote_device
    launch = rd._DeviceCtlError(message=b"ERROR: The application could not be launched because its profile has "
                                        b"not been explicitly trusted by the user.\n", error_code=1)
    be, _ = backend(tmp_path, fake=FakeCoreML(fail_prepare=launch))
    with pytest.raises(SnapbenchError, match="not been explicitly trusted.*VPN & Device Management") as e:
        with be.open(be.identify(None)):
            pass
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("chip, cid", [("Apple M2 Pro", "mac-m2pro"), ("Apple M1 Max", "mac-m1max"),
                                       ("Apple M2 Ultra", "mac-m2ultra"), ("Apple M3", "mac-m3"),
                                       ("Apple M3 Max", "mac-m3max"), ("Apple M4 Pro", "mac-m4pro")])
def test_pro_max_and_ultra_macs_are_filed_under_their_own_chip(tmp_path, chip, cid):
    be, _ = backend(tmp_path, "mac", chip=chip)
    assert be.identify(None).device_id == cid
    assert choose_backend("mac", resolve_device(cid), machine=be.here) == "mac"  # --device mac-m2pro --backend mac
    assert be.identify(resolve_device(cid)).device_id == cid


def test_a_mac_chip_the_catalog_lacks_is_refused_not_filed_under_the_base_chip(tmp_path):
    be, _ = backend(tmp_path, "mac", chip="Apple M3 Ultra")
    with pytest.raises(SnapbenchError, match=r"Apple M3 Ultra\) is not in the device catalog \(no mac-m3ultra"):
        be.identify(None)


def test_a_phone_whose_tunnel_is_down_is_refused_before_any_conversion(tmp_path):
    pk = FakePackages(tmp_path / "pk")
    be, fake = backend(tmp_path, devices=[devicectl_entry(tunnel="disconnected")])
    with pytest.raises(SnapbenchError, match="tunnel state disconnected.*devicectl device info details"):
        profile_model(resolve_model("sd15-tiny"), resolve_device("iphone14pro"), Settings(latent=16), backend=be, estimator=toy_estimator(),
                      packages=pk, progress=False, components=("unet",))
    assert pk.calls == [] and fake.calls == []


def test_connected_iphones_asks_coremltools_for_iphones(tmp_path):
    import coremltools as ct

    from snapbench.profilers.coreml_api import CoreMLTools

    fake = FakeCoreML()
    assert [p.udid for p in CoreMLTools(fake.ct).connected_iphones()] == ["00008120-0001"]
    assert fake.calls == [("get_connected_devices", ct.models.ml_program.experimental.remote_device.DeviceType.IPHONE)]
