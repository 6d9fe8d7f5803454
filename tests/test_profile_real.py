"""The real chain on sd15-tiny: converters (profile mode, cache folder) -> estimator -> table -> document.
Slow (a conversion per unique signature); everything else in the profile tests uses fakes."""

from __future__ import annotations

import json

import pytest

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.devices.catalog import resolve_device
from snapbench.latency.model_latency import block_latencies
from snapbench.latency.table import LatencyTable, Settings

pytestmark = pytest.mark.slow


def test_profile_estimate_for_real(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "t.csv"
    argv = ["profile", "--device", "iphone14pro", "--model", "sd15-tiny", "--latent", "8", "--backend", "estimate",
            "--table", str(table), "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backend"] == "estimate" and len(doc["stages"]) == 7
    ms = [b["latency_ms"] for b in doc["blocks"] if b["signature"]]
    assert ms and all(v > 0 for v in ms)
    rows = LatencyTable.load(table).rows()
    assert {r.backend for r in rows} == {"estimate"} and all(r.bytes_moved for r in rows)
    assert set(doc["components"]) == {"text_encoder", "unet", "vae_decoder"}
    assert all(v > 0 for v in doc["components"].values())
    comps = {r.block: r for r in rows if r.stage == "-"}
    assert comps.keys() == {"text_encoder", "vae_decoder"} and all(r.params > 0 for r in comps.values())
    assert all("estimator=" in r.versions for r in rows)
    # the packages stay in the cache: a new table for another device converts nothing again
    packages = list((tmp_path / "cache" / "packages").glob("*/*.mlpackage"))
    assert packages
    before = {p: p.stat().st_mtime for p in packages}
    blocks = block_latencies(resolve_model("sd15-tiny"), resolve_device("iphone12promax"), Settings(latent=8), backend="estimate")
    assert {p: p.stat().st_mtime for p in packages} == before
    slower = {b.id: b.latency_ms for b in blocks}
    # an A14 (11 TOPS, 34 GB/s) is never faster than an A16 on the same block
    for b in doc["blocks"]:
        if b["signature"]:
            assert slower[b["id"]] >= b["latency_ms"] * 0.999
    # calibration prices a component on exactly these packages: its figure is profile's figure
    from snapbench.calibration.fit import CalibrationPoint, point_ms
    from snapbench.calibration.reference_programs import ReferenceProgram, cache_dir, reference_parts
    from snapbench.profilers.estimate.cost_model import prepare
    from snapbench.profilers.estimate.params import load_params

    for comp, batch in (("unet", 2), ("text_encoder", 1), ("vae_decoder", 1)):
        parts = reference_parts(ReferenceProgram(comp, "sd15-tiny", batch=batch, latent=8))
        pt = CalibrationPoint(comp, "test", "iphone14pro", comp, "sd15-tiny", "-", 1.0,
                              tuple((prepare(p.records), p.count) for p in parts))
        assert point_ms(pt, load_params()) == pytest.approx(doc["components"][comp], rel=1e-5, abs=1e-3)
    assert sum(p.count for p in reference_parts(ReferenceProgram("unet", "sd15-tiny", latent=8))) == \
        sum(1 for b in doc["blocks"] if b["signature"])
    assert {p: p.stat().st_mtime for p in packages} == before  # nothing converted again
    assert len(list(cache_dir().glob("*.json"))) == 3
