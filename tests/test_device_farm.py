"""The device farm on a local Ray cluster of processes (`ray.cluster_utils.Cluster`: a head and two nodes,
each a raylet with its own workers), nodes measuring with fake device backends (`farm_fakes`). Ray tests
are few and slow: they start real Ray processes."""

from __future__ import annotations

import collections
import json
import os
import threading
import time
from pathlib import Path

import pytest
from farm_fakes import DELAY_ENV, LOG_ENV, fake_node_backend
from profile_fakes import FakePackages, devicectl_entry, fake_mac, toy_estimator

from snapbench.backbones import resolve_model
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.latency.farm_profile import profile_on_farm
from snapbench.latency.table import Settings
from snapbench.profilers.farm import NodeSettings, check_holders, pack, unpack

TESTS = str(Path(__file__).resolve().parent)


def test_nodes_must_hold_the_devices_asked_for():
    devs = [resolve_device("iphone14pro"), resolve_device("iphone15pro")]
    with pytest.raises(SnapbenchError, match="no node of the Ray cluster at h:1 holds a phone or Mac: .*farm join"):
        check_holders(devs, {"CPU": 4.0}, "h:1")
    with pytest.raises(SnapbenchError, match=r"--device iphone15pro: no node .* holds one \(nodes hold iphone14pro x2\)"):
        check_holders(devs, {"CPU": 4.0, "iphone14pro": 2.0}, "h:1")
    assert check_holders(devs, {"iphone14pro": 1.0, "iphone15pro": 1.0, "mac-m2pro": 1.0}, "h:1") == {
        "iphone14pro": 1, "iphone15pro": 1}


def test_a_package_travels_whole(tmp_path):
    pkg = tmp_path / "b.mlpackage"
    (pkg / "Data" / "com.apple.CoreML" / "weights").mkdir(parents=True)
    (pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(os.urandom(1000))
    (pkg / "Manifest.json").write_text("{}")
    out = unpack(pack(pkg), tmp_path / "node", "b.mlpackage")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "Data/com.apple.CoreML/weights/weight.bin", "Manifest.json"]
    assert (out / "Data/com.apple.CoreML/weights/weight.bin").read_bytes() == (
        pkg / "Data/com.apple.CoreML/weights/weight.bin").read_bytes()


def test_a_ray_address_that_does_not_answer_is_one_line():
    with pytest.raises(SnapbenchError, match="Ray at 127.0.0.1:9 does not answer"):
        profile_on_farm(resolve_model("sd15-tiny"), [resolve_device("iphone14pro")], Settings(latent=16), address="127.0.0.1:9")


@pytest.fixture
def listening():
    """An address that accepts TCP connections (what `farm join` checks before `ray start`)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield f"127.0.0.1:{s.getsockname()[1]}"


def test_farm_join_offers_the_ready_phones_and_this_mac(tmp_path, capsys, listening):
    from snapbench.cli import main

    machine = fake_mac(tmp_path, devices=[devicectl_entry(), devicectl_entry(name="B", product="iPhone16,1", udid="2"),
                                          devicectl_entry(name="C", product="iPhone16,2", udid="3",
                                                          developer_mode="disabled")])
    assert main(["farm", "join", "--address", listening, "--json"], obj=machine) == 0
    assert json.loads(capsys.readouterr().out)["resources"] == {"iphone14pro": 1, "iphone15pro": 1, "mac-m2pro": 1}
    start = next(c for c in machine.shell.calls if c[1:2] == ["start"])  # type: ignore[attr-defined]
    assert start[2:] == ["--address", listening, "--resources",
                         '{"iphone14pro": 1, "iphone15pro": 1, "mac-m2pro": 1}']


def test_farm_join_refuses_a_node_whose_doctor_fails(tmp_path, capsys, listening):
    from snapbench.cli import main

    machine = fake_mac(tmp_path, platform="linux")
    assert main(["farm", "join", "--address", listening], obj=machine) == 2
    err = capsys.readouterr().err.strip()
    assert "this computer has nothing to measure with: macOS: this machine runs linux" in err and "\n" not in err
    assert not any(c[1:2] == ["start"] for c in machine.shell.calls)  # type: ignore[attr-defined]


@pytest.mark.parametrize("extra, says", [
    (["--device", "iphone15pro"], "several --device values are a device-farm run: add --ray-address"),
    (["--device", "iphone15pro", "--ray-address", "127.0.0.1:9"], "Ray at 127.0.0.1:9 does not answer"),
])
def test_profile_farm_bad_input_is_one_line_before_any_conversion(tmp_path, capsys, monkeypatch, extra, says):
    from snapbench.cli import main
    from snapbench.latency.model_latency import ProfileTools

    monkeypatch.chdir(tmp_path)
    pk = FakePackages(tmp_path / "pk")
    tools = ProfileTools(packages=pk, estimator=toy_estimator(), machine=fake_mac(tmp_path / "m"))
    rc = main(["profile", "--device", "iphone14pro", "--model", "sd15-tiny", "--latent", "16", *extra], obj=tools)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and says in err and len(err.splitlines()) == 1 and pk.calls == []


@pytest.mark.slow
def test_two_fake_phones_on_a_ray_cluster_one_node_killed_mid_run(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    log = tmp_path / "measured.log"
    log.touch()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(LOG_ENV, str(log))
    monkeypatch.setenv(DELAY_ENV, "0.4")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        node_a = cluster.add_node(num_cpus=1, resources={"iphone14pro": 1})
        cluster.add_node(num_cpus=1, resources={"iphone14pro": 1, "iphone15pro": 1})
        cluster.wait_for_nodes()
        killed: list[float] = []

        def kill_a_when_it_has_measured_two():
            while not killed:
                lines = log.read_text().splitlines()
                if sum(ln.startswith(node_a.node_id) for ln in lines) >= 2:
                    cluster.remove_node(node_a, allow_graceful=False)
                    killed.append(time.monotonic())
                time.sleep(0.05)

        threading.Thread(target=kill_a_when_it_has_measured_two, daemon=True).start()
        said: list[str] = []
        saved: dict[str, int] = collections.Counter()
        runs = profile_on_farm(
            resolve_model("sd15-tiny"), [resolve_device("iphone14pro"), resolve_device("iphone15pro")],
            Settings(latent=16), address=cluster.address,
            estimator=toy_estimator(), components=("unet",), packages=FakePackages(tmp_path / "pk"),
            factory=fake_node_backend, node_settings=NodeSettings(repeats=2, warmup=0), say=said.append,
            on_table=lambda did, table: saved.update([did]))
    finally:
        cluster.shutdown()
    assert killed, "node A was never killed: the run ended first"
    measured = collections.Counter(tuple(ln.split()[1:]) for ln in log.read_text().splitlines())
    by_node = collections.Counter(ln.split()[0] for ln in log.read_text().splitlines())
    for run in runs:
        keys = {b.signature for b in run.blocks if b.signature}
        assert {r.backend for r in run.new_rows} == {"iphone"}  # nothing left to the estimator: no row lost
        assert {r.signature for r in run.new_rows} == keys and len(run.new_rows) == len(keys)
        assert saved[run.device.id] == len(keys)  # every row handed on as it arrived
        assert run.failures == []
    # A package is measured twice only when A finished it but died before its row came back: then it was
    # retried (never a row kept twice), and one of its two measurements is A's.
    twice = {k for k, n in measured.items() if n > 1}
    assert set(measured.values()) <= {1, 2} and len(twice) <= sum(r.retried for r in runs)
    lines = [ln.split() for ln in log.read_text().splitlines()]
    assert all(sum(ln[0] == node_a.node_id for ln in lines if tuple(ln[1:]) == k) == 1 for k in twice)
    assert len(measured) == sum(len(r.new_rows) for r in runs)
    assert by_node[node_a.node_id] >= 2 and len(by_node) == 2
    print(f"\nfarm: {dict(by_node)} packages per node; {runs[0].retried} retried after node A was killed; "
          f"lines: {[s for s in said if 'went away' in s]}")
