"""DiT blocks converted to Core ML (real coremltools conversions of the tiny twins), shared packages,
resume, and the estimated profile."""

from __future__ import annotations

import json

import coremltools as ct
import pytest

from snapbench.cli import main
from snapbench.converters.entry import ConvertRequest, convert
from snapbench.converters.options import ConvertOptions
from snapbench.devices.catalog import resolve_device
from snapbench.dit.source import resolve_dit
from snapbench.latency.dit_profile import profile_dit


@pytest.mark.slow
def test_identical_blocks_share_one_package_and_a_rerun_converts_nothing(tmp_path):
    opts = ConvertOptions(latent=8, tokens=4)
    r = convert(ConvertRequest(resolve_dit("sd35-tiny"), tmp_path / "pkgs", opts))
    assert r.ok
    m = r.manifest
    # 4 aux + 4 blocks, but TB1 = TB2 (dual attention): 7 packages
    assert len(m.blocks) == 8 and r.packages == 7 and m.complete
    tb = {b.id: b for b in m.blocks if b.kind == "TB"}
    assert tb["TB[DiT-1, 1]"].package == tb["TB[DiT-2, 2]"].package != tb["TB[DiT-3, 3]"].package
    spec = ct.utils.load_spec(str(tmp_path / "pkgs" / tb["TB[DiT-1, 1]"].package))
    assert [i.name for i in spec.description.input] == ["hidden", "context", "temb"]
    assert [o.name for o in spec.description.output] == ["hidden_out", "context_out"]
    last = ct.utils.load_spec(str(tmp_path / "pkgs" / tb["TB[DiT-4, 4]"].package))
    assert [o.name for o in last.description.output] == ["hidden_out"]  # the image stream only
    again = convert(ConvertRequest(resolve_dit("sd35-tiny"), tmp_path / "pkgs", opts))
    assert again.converted == [] and len(again.reused) == 8


@pytest.mark.slow
def test_profile_estimates_every_block_and_stage(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    table = tmp_path / "sana.csv"
    argv = ["profile", "--model", "sana-tiny", "--device", "iphone16promax", "--latent", "8", "--table", str(table),
            "--json"]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["backbone"] == "dit" and doc["backend"] == "estimate" and doc["settings"]["tokens"] == 8
    assert doc["settings"]["image"] == 256  # Sana's f32 autoencoder
    assert [b["id"] for b in doc["blocks"]] == ["PatchEmbed", "TimeEmbed", "CaptionEmbed", "TB[DiT-1, 1]",
                                               "TB[DiT-2, 2]", "TB[DiT-3, 3]", "FinalLayer"]
    assert all(b["latency_ms"] > 0 and b["backend"] == "estimate" for b in doc["blocks"])
    assert doc["model_ms"] == pytest.approx(sum(s["ms"] for s in doc["stages"]))
    assert doc["packages"] == 5
    # one row per signature, filed under the DiT's own block ids and stages
    from snapbench.latency.table import LatencyTable

    rows = LatencyTable.load(table).rows()
    assert len(rows) == 5 and {r.backend for r in rows} == {"estimate"}
    assert {r.block for r in rows} == {"PatchEmbed", "TimeEmbed", "CaptionEmbed", "TB[DiT-1, 1]", "FinalLayer"}
    assert any(r.signature.startswith("TB|") and r.stage == "DiT-1" for r in rows)
    # a table row (here an imported figure) wins over the estimator, and nothing is converted for it
    tb = next(r for r in rows if r.signature.startswith("TB|"))
    from dataclasses import replace

    LatencyTable(rows + [replace(tb, backend="import", latency_ms=7.0, source="test")]).save(table)
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert [b["latency_ms"] for b in again["blocks"] if b["kind"] == "TB"] == [7.0, 7.0, 7.0]
    assert again["backend"] == "estimate+import"
    # a second device prices the same packages: nothing converts again
    run = profile_dit(resolve_dit("sana-tiny"), resolve_device("iphone15pro"), ConvertOptions(latent=8, tokens=8),
                      say=lambda msg: pytest.fail(f"converted again: {msg}"))
    assert run.step_ms > 0


@pytest.mark.slow
def test_deploy_mode_makes_one_package_per_block_with_the_checkpoints_weights(tmp_path):
    from snapbench.backbones.dit import DitBackbone
    from snapbench.converters.cache import weights_hash

    model = DitBackbone().build(resolve_dit("sd3-tiny"), seed=5)
    model.base.save_pretrained(tmp_path / "transformer", safe_serialization=True)
    source = resolve_dit(tmp_path)
    r = convert(ConvertRequest(source, tmp_path / "pkgs", ConvertOptions(mode="deploy", latent=8, tokens=4)))
    assert r.ok and r.packages == 7  # TB1 and TB2 share a signature but not their weights
    tb1 = next(b for b in r.manifest.blocks if b.id == "TB[DiT-1, 1]")
    meta = ct.utils.load_spec(str(tmp_path / "pkgs" / tb1.package)).description.metadata.userDefined
    assert meta["snapbench.source_hash"] == weights_hash(model.unit("TB[DiT-1, 1]"))
    assert meta["snapbench.mode"] == "deploy"


def test_deploy_mode_refuses_a_model_the_memory_cannot_hold():
    from snapbench.converters.convert_dit import check_memory
    from snapbench.errors import SnapbenchError

    with pytest.raises(SnapbenchError, match="--mode deploy builds the whole model"):
        check_memory("huge", 10**15)


def test_dit_profile_on_a_phone_is_refused_where_no_phone_can_be(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["profile", "--model", "sd3-tiny", "--device", "iphone15pro", "--backend", "iphone"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--backend estimate" in err  # this machine cannot measure: say why
    assert not (tmp_path / "latency_tables").exists()
