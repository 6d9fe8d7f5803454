"""The iphone and mac backends' orchestration against a fake of the coremltools API that records calls,
`auto`'s choice, and the refusals on a machine that cannot measure."""

from __future__ import annotations


import pytest

from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.latency import LatencyTable, Settings, profile_model
from snapbench.profilers.backends import DeviceBackend, EstimateBackend, choose_backend
from snapbench.profilers.coreml_api import CoreMLTools
from snapbench.profilers.measurement import PackageJob

from profile_fakes import FakePackages, make_fake_coremltools, toy_estimate

XCODE = lambda name: f"/usr/bin/{name}"  # noqa: E731
NO_XCODE = lambda name: None  # noqa: E731


def jobs(tmp_path, n=2):
    out = []
    for i in range(n):
        p = tmp_path / f"b{i}.mlpackage"
        p.mkdir()
        out.append(PackageJob(f"sig{i}", f"RB[Down-1, {i + 1}]", p))
    return out


def test_mac_backend_times_each_package_with_warmup_and_compute_plan(tmp_path):
    calls: list = []
    api = CoreMLTools(make_fake_coremltools(calls), platform="darwin", which=XCODE)
    be = DeviceBackend("mac", resolve_device("mac-m2"), api, warmup=2, repeats=5)
    res = be.measure(jobs(tmp_path))
    assert calls == [
        ("MLModel", "b0.mlpackage", "CPU_AND_NE"),
        ("Benchmarker", "b0.mlpackage", None),
        ("benchmark_predict", 2, False),  # warm-up, discarded
        ("benchmark_predict", 5, False),
        ("MLComputePlan.load_from_path", "b0.mlpackagec", "CPU_AND_NE"),
        ("MLModel", "b1.mlpackage", "CPU_AND_NE"),
        ("Benchmarker", "b1.mlpackage", None),
        ("benchmark_predict", 2, False),
        ("benchmark_predict", 5, False),
        ("MLComputePlan.load_from_path", "b1.mlpackagec", "CPU_AND_NE"),
    ]
    m = res["sig0"]
    assert (m.backend, m.latency_ms, m.samples) == ("mac", 5.0, 5)
    assert m.p90_ms == pytest.approx(5.8)
    assert m.placement == "ane=2;cpu=1"  # const ops are not counted; gather ran on the CPU
    assert "coremltools=9.0-fake" in m.versions


def test_iphone_backend_prepares_the_runner_app_once(tmp_path):
    calls: list = []
    api = CoreMLTools(make_fake_coremltools(calls, phones=2), platform="darwin", which=XCODE)
    be = DeviceBackend("iphone", resolve_device("iphone14pro"), api, warmup=0, repeats=3)
    res = be.measure(jobs(tmp_path, 3))
    assert calls[:2] == [("get_connected_devices", "iphone"), ("prepare_for_model_debugging", "Test iPhone 0")]
    assert sum(c[0] == "prepare_for_model_debugging" for c in calls) == 1
    assert ("Benchmarker", "b2.mlpackage", "Test iPhone 0") in calls
    assert ("load_compute_plan_from_path_on_device", "b1.mlpackagec", "CPU_AND_NE", "Test iPhone 0") in calls
    assert not any(c[0] == "benchmark_predict" and c[1] == 0 for c in calls)  # no warm-up call when 0
    assert {m.backend for m in res.values()} == {"iphone"} and all(m.samples == 3 for m in res.values())
    assert "Test iPhone 0 (iOS 18.1)" == res["sig0"].source


def test_iphone_backend_without_a_phone_says_what_to_do(tmp_path):
    api = CoreMLTools(make_fake_coremltools([], phones=0), platform="darwin", which=XCODE)
    with pytest.raises(SnapbenchError, match="no iPhone is connected.*--backend estimate"):
        DeviceBackend("iphone", resolve_device("iphone14pro"), api).measure(jobs(tmp_path))


def test_coremltools_failure_becomes_one_line_naming_the_block(tmp_path):
    api = CoreMLTools(make_fake_coremltools([], fail_on="b1"), platform="darwin", which=XCODE)
    with pytest.raises(SnapbenchError) as e:
        DeviceBackend("mac", resolve_device("mac-m1"), api).measure(jobs(tmp_path))
    assert "RB[Down-1, 2]" in str(e.value) and "unsupported op" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("platform, which, target, message", [
    ("linux", XCODE, "iphone14pro", "the iphone backend measures on an iPhone from a Mac with Xcode, and this machine runs linux"),
    ("darwin", NO_XCODE, "iphone14pro", "needs Xcode"),
])
def test_iphone_refusals(platform, which, target, message):
    calls: list = []
    api = CoreMLTools(make_fake_coremltools(calls), platform=platform, which=which)
    with pytest.raises(SnapbenchError, match=message) as e:
        choose_backend("iphone", resolve_device(target), api=api)
    assert "--backend estimate" in str(e.value) and calls == []  # refused before touching coremltools


def test_mac_backend_never_files_mac_timings_under_an_iphone():
    api = CoreMLTools(make_fake_coremltools([]), platform="darwin", which=XCODE)
    with pytest.raises(SnapbenchError, match="measures this Mac, not an iPhone 14 Pro"):
        choose_backend("mac", resolve_device("iphone14pro"), api=api)
    with pytest.raises(SnapbenchError, match="is a Mac; use --backend mac"):
        choose_backend("iphone", resolve_device("mac-m2"), api=api)


@pytest.mark.parametrize("platform, which, phones, target, expected", [
    ("darwin", XCODE, 1, "iphone14pro", "iphone"),
    ("darwin", XCODE, 0, "iphone14pro", "estimate"),
    ("darwin", NO_XCODE, 1, "iphone14pro", "estimate"),
    ("darwin", XCODE, 1, "mac-m2", "mac"),
    ("linux", XCODE, 1, "iphone14pro", "estimate"),
    ("linux", XCODE, 1, "mac-m2", "estimate"),
])
def test_auto_picks_the_best_available_and_says_so(platform, which, phones, target, expected):
    said: list[str] = []
    api = CoreMLTools(make_fake_coremltools([], phones=phones), platform=platform, which=which)
    assert choose_backend("auto", resolve_device(target), api=api, say=said.append) == expected
    assert len(said) == 1 and said[0].startswith(f"backend auto -> {expected}")


def test_profile_on_a_fake_iphone_fills_the_table_and_resumes(tmp_path):
    calls: list = []
    api = CoreMLTools(make_fake_coremltools(calls), platform="darwin", which=XCODE)
    pk = FakePackages(tmp_path / "pk")
    s = Settings(latent=16)
    run = profile_model("sd15-tiny", "iphone14pro", s, backend="auto", api=api, packages=pk,
                        estimate_fn=toy_estimate, progress=False, repeats=4, warmup=1)
    assert run.backend == "iphone"
    assert {r.backend for r in run.new_rows} == {"iphone"}
    assert all(r.samples == 4 and r.p90_ms is not None and r.placement for r in run.new_rows)
    comps = {r.block for r in run.new_rows if r.stage == "-"}
    assert comps == {"text_encoder", "vae_decoder"}
    assert {c.backend for c in run.components.values()} == {"iphone"}
    # a second run with the table measures nothing again
    calls.clear()
    again = profile_model("sd15-tiny", "iphone14pro", s, table=run.table, backend="iphone", api=api,
                          packages=pk, estimate_fn=toy_estimate, progress=False)
    assert again.new_rows == [] and not any(c[0] == "Benchmarker" for c in calls)
    # measured rows beat estimates already in the table, and the estimates stay
    est = profile_model("sd15-tiny", "iphone14pro", s, table=LatencyTable.empty(), backend="estimate",
                        packages=pk, estimate_fn=toy_estimate, progress=False)
    both = est.table.merge(run.table)
    assert len(both) == 2 * len(run.table)
    key = run.new_rows[0].signature
    assert both.lookup("iphone14pro", s, key).backend == "iphone"
    assert both.lookup_backend("iphone14pro", s, key, "estimate") is not None


def test_estimate_backend_labels_rows(tmp_path):
    res = EstimateBackend(resolve_device("iphone14"), toy_estimate).measure(jobs(tmp_path, 1))
    m = res["sig0"]
    assert m.backend == "estimate" and m.samples == 0 and m.p90_ms is None
    assert m.placement == "ane=12" and "estimator=7" in m.versions


def test_device_backend_validates_repeats():
    with pytest.raises(SnapbenchError, match="--repeats"):
        DeviceBackend("mac", resolve_device("mac-m2"), CoreMLTools(platform="darwin"), repeats=0)


def test_estimates_of_an_older_estimator_are_refreshed(tmp_path):
    from types import SimpleNamespace

    pk = FakePackages(tmp_path / "pk")
    s = Settings(latent=16)
    old = profile_model("sd15-tiny", "iphone14", s, backend="estimate", packages=pk, estimate_fn=toy_estimate,
                        progress=False, components=("unet",))

    def newer(path, device):
        return SimpleNamespace(**{**vars(toy_estimate(path, device)), "params_version": 8})

    newer.params_version = 8
    again = profile_model("sd15-tiny", "iphone14", s, table=old.table, backend="estimate", packages=pk,
                          estimate_fn=toy_estimate, progress=False, components=("unet",))
    assert again.new_rows == []  # same estimator: nothing to do
    fresh = profile_model("sd15-tiny", "iphone14", s, table=old.table, backend="estimate", packages=pk,
                          estimate_fn=newer, progress=False, components=("unet",))
    assert len(fresh.new_rows) == len(old.new_rows)
    assert all("estimator=8" in r.versions for r in fresh.table.rows())


def test_ipads_are_never_measured_on_a_phone():
    api = CoreMLTools(make_fake_coremltools([]), platform="darwin", which=XCODE)
    with pytest.raises(SnapbenchError, match="measures iPhones, not an iPad Pro"):
        choose_backend("iphone", resolve_device("ipadpro-m2"), api=api)
    assert choose_backend("auto", resolve_device("ipadpro-m2"), api=api) == "estimate"
