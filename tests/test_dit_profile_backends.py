"""`profile` of a DiT on the measuring backends, as a UNet is: on an attached iPhone, on this Mac, from an
imported file, and on a device farm.

The blocks are the tiny PixArt-Sigma twin's, converted for real by coremltools (one package per signature);
the phone, the Mac and coremltools' device API are `profile_fakes` (built from coremltools' real classes and
signatures), which here read each real package's interface with coremltools' own `load_spec` and check that
every prediction feeds exactly its inputs (a DiT block takes hidden, context and temb, not a UNet's).
"""

from __future__ import annotations

import json
import os

import pytest
from profile_fakes import FakeCoreML, FakePackages, fake_mac, toy_estimator

from snapbench.cli import main
from snapbench.converters.entry import ConvertRequest, convert
from snapbench.converters.options import ConvertOptions
from snapbench.dit.source import resolve_dit
from snapbench.latency.model_latency import ProfileTools
from snapbench.latency.table import LatencyTable
from snapbench.profilers.coreml_api import CoreMLTools

DIT = "pixart-sigma-tiny"
SHAPES = ["--latent", "8", "--tokens", "8"]
TESTS = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The twin's blocks, converted once for the module (profile mode: one package per signature)."""
    folder = tmp_path_factory.mktemp("dit-blocks") / "pkgs"
    assert convert(ConvertRequest(resolve_dit(DIT), folder, ConvertOptions(latent=8, tokens=8), progress=False)).ok
    return folder


def on_a_mac(tmp_path, *, chip="Apple M2 Pro"):
    fake = FakeCoreML(real_packages=True)
    tools = ProfileTools(estimator=toy_estimator(), coreml=CoreMLTools(fake.ct),
                         machine=fake_mac(tmp_path / "machine", team_id=None, chip=chip), sleep=lambda s: None)
    return fake, tools


def run(tools, capsys, *args):
    assert main(["profile", "--model", DIT, *SHAPES, "--repeats", "3", "--warmup", "0", "--json", *args],
                obj=tools) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_a_dit_measured_on_the_attached_iphone(tmp_path, monkeypatch, capsys, converted):
    monkeypatch.chdir(tmp_path)
    fake, tools = on_a_mac(tmp_path)
    doc = run(tools, capsys, "--device", "auto", "--backend", "iphone", "--team-id", "ABCDE12345",
              "--packages", str(converted))
    assert doc["backbone"] == "dit" and doc["device"] == "iphone14pro" and doc["backend"] == "iphone"
    assert doc["measured_on"] == {"name": "Test iPhone", "os_version": "18.1", "os_build": "22B83"}
    running = [b for b in doc["blocks"] if b["signature"]]
    # the median of 5, 4 and 6 ms; every block measured, none estimated
    assert all(b["backend"] == "iphone" and b["latency_ms"] == 5.0 and b["samples"] == 3 for b in running)
    assert doc["model_ms"] == pytest.approx(5.0 * len(running))
    # one package per signature on the phone, each loaded twice (first, warm) and its compute plan read
    loads = [c for c in fake.calls if c[0] == "load"]
    assert len(loads) == 2 * doc["packages"] and {c[3] for c in loads} == {"Test iPhone"}
    assert sum(c[0] == "retrieve_compute_plan" for c in fake.calls) == doc["packages"]
    assert doc["load_ms"]["transformer"] == {"first": 60_000.0 * doc["packages"], "warm": 900.0 * doc["packages"]}
    table = LatencyTable.load(tmp_path / "latency_tables" / "iphone14pro" / f"{DIT}.csv")
    assert {r.backend for r in table.rows()} == {"iphone"} and len(table) == doc["packages"]
    assert {r.block for r in table.rows()} >= {"PatchEmbed", "TB[DiT-1, 1]"}  # filed under the DiT's block ids
    fake.calls.clear()
    again = run(tools, capsys, "--device", "iphone14pro", "--backend", "iphone", "--team-id", "ABCDE12345",
                "--packages", str(converted))
    assert fake.calls == [] and again["model_ms"] == doc["model_ms"]  # same phone and build: nothing measured


@pytest.mark.slow
def test_a_dit_measured_on_this_mac(tmp_path, monkeypatch, capsys, converted):
    monkeypatch.chdir(tmp_path)
    fake, tools = on_a_mac(tmp_path, chip="Apple M2")
    doc = run(tools, capsys, "--device", "mac-m2", "--backend", "mac", "--packages", str(converted))
    assert doc["device"] == "mac-m2" and doc["backend"] == "mac"
    assert all(b["backend"] == "mac" for b in doc["blocks"] if b["signature"])
    assert {c[3] for c in fake.calls if c[0] == "load"} == {None}  # this Mac's engine, no phone
    assert doc["measured_on"]["os_build"] == "24B83"
    assert any("off the Neural Engine" in n for n in doc["notes"])  # the compute plan put a gather on the CPU


def test_a_dit_from_an_imported_file_the_rest_estimated(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "harness.csv"
    src.write_text('block,latency_ms,samples\n"TB[DiT-1, 1]",2.5,10\n"TB[DiT-2, 2]",2.5,10\n"TB[DiT-3, 3]",2.5,10\n')
    tools = ProfileTools(packages=FakePackages(tmp_path / "pk"), estimator=toy_estimator(),
                         machine=fake_mac(tmp_path / "m", platform="linux"))
    doc = run(tools, capsys, "--device", "iphone15pro", "--backend", "import", "--from", str(src))
    tb = [b for b in doc["blocks"] if b["kind"] == "TB"]
    assert [(b["backend"], b["latency_ms"], b["samples"]) for b in tb] == [("import", 2.5, 30)] * 3
    assert {b["backend"] for b in doc["blocks"] if b["kind"] == "aux"} == {"estimate"}
    assert doc["backend"] == "estimate+import" and doc["measured_on"] is None
    bad = tmp_path / "bad.csv"
    bad.write_text('block,latency_ms\n"CA[Up-1, 2]",1.0\n')
    assert main(["profile", "--model", DIT, *SHAPES, "--device", "iphone15pro", "--backend", "import",
                 "--from", str(bad)], obj=tools) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'CA[Up-1, 2]' is not in this model" in err


def test_measuring_a_dit_here_is_refused_in_one_line_before_converting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    pk = FakePackages(tmp_path / "pk")
    tools = ProfileTools(packages=pk, estimator=toy_estimator(), machine=fake_mac(tmp_path / "m", platform="linux"))
    assert main(["profile", "--model", DIT, *SHAPES, "--device", "iphone15pro", "--backend", "iphone"], obj=tools) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--backend estimate" in err and pk.calls == []
    # auto on a machine with nothing to measure with: the DiT's estimate, as before
    doc = run(tools, capsys, "--device", "iphone15pro")
    assert doc["backend"] == "estimate" and doc["measured_on"] is None


@pytest.mark.slow
def test_a_dit_on_a_device_farm(tmp_path, monkeypatch, capsys):
    from farm_fakes import LOG_ENV, fake_node_backend
    from ray.cluster_utils import Cluster

    monkeypatch.chdir(tmp_path)
    log = tmp_path / "measured.log"
    log.touch()
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(LOG_ENV, str(log))
    tools = ProfileTools(packages=FakePackages(tmp_path / "pk"), estimator=toy_estimator(),
                         machine=fake_mac(tmp_path / "m"), farm_backend=fake_node_backend)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        cluster.add_node(num_cpus=1, resources={"iphone15pro": 1})
        cluster.wait_for_nodes()
        docs = run(tools, capsys, "--device", "iphone15pro", "--ray-address", cluster.address)
    finally:
        cluster.shutdown()
    (doc,) = docs
    assert doc["backbone"] == "dit" and doc["backend"] == "iphone" and doc["device"] == "iphone15pro"
    assert all(b["backend"] == "iphone" for b in doc["blocks"] if b["signature"])
    assert len(log.read_text().splitlines()) == doc["packages"]  # each signature measured once, on the node
    table = LatencyTable.load(tmp_path / "latency_tables" / "iphone15pro" / f"{DIT}.csv")
    assert len(table) == doc["packages"] and {r.backend for r in table.rows()} == {"iphone"}
