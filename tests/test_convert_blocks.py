"""snapbench convert, per block: real coremltools conversions of the test-sized sd15-tiny UNet.

One profile-mode conversion (27 packages, about 10 s) is shared by the session (conftest's
`sd15_tiny_blocks`; the tests using it are marked slow there); the tests that change a folder work on a
copy of it, so each of them converts only the few packages it is about.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from snapbench.backbones import resolve_model
from snapbench.converters import workers
from snapbench.converters.checks import PackageCheckError, check_prediction, require_prediction
from snapbench.converters.convert_package import convert_module
from snapbench.converters.entry import ConvertRequest, convert
from snapbench.converters.manifest import MANIFEST_FILE, load_manifest
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.errors import SnapbenchError

TINY = dict(latent=8, tokens=4, jobs=1)


@pytest.fixture
def profile_dir(sd15_tiny_blocks):
    """The session's profile-mode conversion of sd15-tiny (conftest; it makes every test using it slow)."""
    return sd15_tiny_blocks


@pytest.fixture
def copy_dir(profile_dir, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(profile_dir, dst)
    return dst


def _spec(path: Path):
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def test_profile_mode_one_package_per_signature(profile_dir):
    m = load_manifest(profile_dir)
    assert m.complete and m.content == "blocks" and len(m.blocks) == 47
    sigs = {b.signature for b in m.blocks if b.signature}
    packages = {b.package for b in m.blocks if b.package}
    assert len(packages) == len(sigs) == 27
    for b in m.blocks:
        assert b.state == "done" and (profile_dir / b.package / "Manifest.json").is_file()
    by_package: dict[str, set[str]] = {}
    for b in m.blocks:
        by_package.setdefault(b.package, set()).add(b.signature)
    assert all(len(s) == 1 for s in by_package.values())  # a package serves one signature only
    # a shared package's conversion seconds and size count once, on the block that owns it
    for package in packages:
        sharing = [b for b in m.blocks if b.package == package]
        timed = [b for b in sharing if b.seconds is not None]
        assert len(timed) == 1 and timed[0].package_owner == timed[0].file_id, package
        assert [b.bytes is not None for b in sharing] == [b is timed[0] for b in sharing]
    # the manifest is plain JSON with the documented fields
    raw = json.loads((profile_dir / MANIFEST_FILE).read_text())
    assert raw["format"] == "snapbench.manifest/1" and raw["versions"]["coremltools"]
    entry = raw["blocks"][3]
    for key in ("id", "file_id", "stage", "kind", "status", "signature", "signature_digest", "package", "inputs",
                "outputs", "params", "macs", "macs_no_attention", "cache_key", "seconds"):
        assert key in entry


def test_packages_reload_with_the_blocks_interface_and_metadata(profile_dir):
    m = load_manifest(profile_dir)
    for file_id, names in (("up3_rb1", ["hidden", "skip", "temb"]), ("down1_ca1", ["hidden", "context"]),
                           ("time_embedding", ["timestep"]), ("conv_in", ["sample"])):
        b = m.block(file_id)
        spec = _spec(m.package_path(file_id))
        assert [i.name for i in spec.description.input] == names
        assert [list(i.type.multiArrayType.shape) for i in spec.description.input] == [i["shape"] for i in b.inputs]
        assert [o.name for o in spec.description.output] == ["out"]
        meta = dict(spec.description.metadata.userDefined)
        assert meta["snapbench.signature"] == b.signature
        assert meta["snapbench.cache_key"] == b.cache_key
        assert meta["snapbench.version"] and meta["snapbench.source_hash"].startswith("random weights")
        assert spec.WhichOneof("Type") == "mlProgram"


def test_second_run_converts_nothing(copy_dir, monkeypatch):
    conversions: list[str] = []
    real_run_task = workers.run_task

    def counting(task):
        conversions.append(task.block_id)
        return real_run_task(task)

    monkeypatch.setattr(workers, "run_task", counting)
    result = convert(ConvertRequest(resolve_model("sd15-tiny"), copy_dir, ConvertOptions(**TINY), progress=False))
    assert conversions == [] and result.converted == [] and result.ok
    assert len(result.reused) == 47
    # the counter counts: a removed package is converted again, and only that one
    shutil.rmtree(copy_dir / "conv_out.mlpackage")
    again = convert(ConvertRequest(resolve_model("sd15-tiny"), copy_dir, ConvertOptions(**TINY), progress=False))
    assert conversions == ["ConvOut"] and again.converted == ["ConvOut"]


def test_resume_after_a_kill(copy_dir):
    # what a kill leaves: a manifest that misses the last blocks, a half-written package, a package that
    # landed after the last manifest write (complete, its cache key stamped inside)
    raw = json.loads((copy_dir / MANIFEST_FILE).read_text())
    lost = {"up3_rb1", "conv_out"}
    landed = "time_embedding"
    for b in raw["blocks"]:
        if b["file_id"] in lost | {landed}:
            b.update(state="pending", package=None, cache_key=None)
    raw["complete"] = False
    (copy_dir / MANIFEST_FILE).write_text(json.dumps(raw))
    for f in lost:
        shutil.rmtree(copy_dir / f"{f}.mlpackage")
    (copy_dir / ".up3_rb1.mlpackage.999999999.partial").mkdir()
    result = convert(ConvertRequest(resolve_model("sd15-tiny"), copy_dir, ConvertOptions(**TINY), progress=False))
    assert sorted(result.converted) == ["ConvOut", "RB[Up-3, 1]"]
    assert "TimeEmbedding" in result.reused  # recognised by the key stamped in the package
    m = load_manifest(copy_dir)
    assert m.complete and all(b.state == "done" for b in m.blocks)
    assert not list(copy_dir.glob(".*.partial"))


def test_a_failing_block_is_reported_and_the_rest_go_on(copy_dir, monkeypatch):
    raw = json.loads((copy_dir / MANIFEST_FILE).read_text())
    for b in raw["blocks"]:
        if b["file_id"] in ("conv_in", "conv_out"):
            b.update(state="pending", package=None, cache_key=None)
    raw["complete"] = False
    (copy_dir / MANIFEST_FILE).write_text(json.dumps(raw))
    for name in ("conv_in", "conv_out"):
        shutil.rmtree(copy_dir / f"{name}.mlpackage")
    real = workers.convert_module

    def flaky(module, io, opts, dest, **kw):
        if Path(dest).name == "conv_in.mlpackage":
            raise RuntimeError("simulated converter crash")
        return real(module, io, opts, dest, **kw)

    monkeypatch.setattr(workers, "convert_module", flaky)
    result = convert(ConvertRequest(resolve_model("sd15-tiny"), copy_dir, ConvertOptions(**TINY), progress=False))
    assert [b for b, _ in result.failed] == ["ConvIn"]
    assert "simulated converter crash" in result.failed[0][1]
    assert result.converted == ["ConvOut"]
    m = load_manifest(copy_dir)
    assert not m.complete
    assert m.block("conv_in").state == "failed" and "simulated" in m.block("conv_in").error
    assert m.block("conv_out").state == "done"
    # the next run retries only the failed block
    monkeypatch.setattr(workers, "convert_module", real)
    again = convert(ConvertRequest(resolve_model("sd15-tiny"), copy_dir, ConvertOptions(**TINY), progress=False))
    assert again.converted == ["ConvIn"] and load_manifest(copy_dir).complete


def test_changing_attention_reconverts_only_attention_blocks(copy_dir):
    before = load_manifest(copy_dir)
    result = convert(ConvertRequest(resolve_model("sd15-tiny"), copy_dir, ConvertOptions(attention="split_einsum_v2", **TINY), progress=False))
    assert result.ok and result.converted
    assert all(b.startswith("CA[") for b in result.converted)
    m = load_manifest(copy_dir)
    assert m.options["attention"] == "split_einsum_v2"
    assert m.block("down1_rb1").cache_key == before.block("down1_rb1").cache_key
    assert m.block("down1_ca1").signature.endswith("attn=split_einsum_v2")
    meta = dict(_spec(m.package_path("down1_ca1")).description.metadata.userDefined)
    assert meta["snapbench.attention"] == "split_einsum_v2"


def test_foreign_folder_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(SnapbenchError, match="foreign content"):
        convert(ConvertRequest(resolve_model("sd15-tiny"), folder, ConvertOptions(**TINY), progress=False))
    assert [p.name for p in folder.iterdir()] == ["cat.jpg"]


@pytest.mark.parametrize("impl", ["split_einsum", "split_einsum_v2"])
def test_attention_rewrite_of_a_block_meets_the_psnr_bar(impl):
    from snapbench.backbones import resolve_model
    from snapbench.blocks.cut import InputShapes, cut_blocks
    from snapbench.converters.ane_attention import psnr
    from snapbench.model.loading import build_unet

    model = build_unet(resolve_model("sd15-tiny"), device="meta")
    block = next(b for b in cut_blocks(model, InputShapes(latent=8, tokens=4)) if b.unit.file_id == "up3_ca1")
    unit = workers.materialize(block.unit, None, seed=0)
    inputs = tuple(torch.randn(s) for _, s in block.inputs)
    with torch.no_grad():
        assert psnr(unit(*inputs), workers.block_module(unit, impl, tokens=64)(*inputs)) >= 35


def _mid_rb(seed: int = 0):
    from snapbench.backbones import resolve_model
    from snapbench.blocks.cut import InputShapes, cut_blocks
    from snapbench.model.loading import build_unet

    model = build_unet(resolve_model("sd15-tiny"), device="meta")
    block = next(b for b in cut_blocks(model, InputShapes(latent=8, tokens=4)) if b.unit.file_id == "mid_rb1")
    return workers.materialize(block.unit, None, seed), PackageIO(block.inputs, (("out", block.output),))


@pytest.mark.parametrize("bits,op", [(8, "constexpr_affine_dequantize"), (6, "constexpr_lut_to_dense"),
                                     (4, "constexpr_lut_to_dense"), (16, None)])
def test_weight_bits_compress_the_package(tmp_path, bits, op):
    unit, io = _mid_rb()
    dest = tmp_path / "mid_rb1.mlpackage"
    r = convert_module(unit, io, ConvertOptions(weight_bits=bits, mode="deploy"), dest, metadata={}, description="t")
    text = (dest / "Data" / "com.apple.CoreML" / "model.mlmodel").read_bytes()
    if op:
        assert op.encode() in text
    else:
        assert b"constexpr_" not in text
    assert r.bytes > 0


def test_weight_bits_are_recorded_in_options():
    from snapbench.converters.compression import compression_info

    assert compression_info(ConvertOptions(weight_bits=6))["mode"] == "uniform"  # profile: cheap tables
    assert compression_info(ConvertOptions(weight_bits=6, mode="deploy"))["mode"] == "kmeans_histogram"
    assert compression_info(ConvertOptions(weight_bits=8))["method"] == "linear_quantization"
    with pytest.raises(SnapbenchError, match="weight-bits"):
        ConvertOptions(weight_bits=5)


def test_check_is_refused_on_linux_and_compares_with_pytorch_on_a_fake_mac(tmp_path, monkeypatch):
    import sys

    if sys.platform != "darwin":
        with pytest.raises(SnapbenchError, match="needs macOS"):
            require_prediction()
    unit, io = _mid_rb()
    inputs = tuple(torch.randn(s) for _, s in io.inputs)
    with torch.no_grad():
        expected = unit(*inputs).numpy()

    class FakeMLModel:  # coremltools' MLModel.predict: dict of numpy in, dict of numpy out
        def __init__(self, path, noise=0.0):
            self.noise = noise

        def predict(self, feed):
            assert set(feed) == {"hidden", "temb"}
            return {"out": expected + self.noise * torch.randn(expected.shape).numpy()}

    assert check_prediction(tmp_path / "x.mlpackage", unit, inputs, io, load=FakeMLModel) >= 35
    with pytest.raises(PackageCheckError, match="PSNR"):
        check_prediction(tmp_path / "x.mlpackage", unit, inputs, io, load=lambda p: FakeMLModel(p, noise=1.0))


def test_options_refuse_bad_values():
    for kw, msg in ((dict(attention="flash"), "attention"), (dict(target="iOS15"), "target"),
                    (dict(mode="fast"), "mode"), (dict(jobs=0), "jobs"), (dict(chunks=3), "chunks")):
        with pytest.raises(SnapbenchError, match=msg):
            ConvertOptions(**kw)


@pytest.mark.slow
def test_deploy_mode_one_package_per_block_with_weights_hash(tmp_path, tiny_checkpoint):
    folder, _ = tiny_checkpoint
    out = tmp_path / "deploy"
    opts = ConvertOptions(mode="deploy", **TINY)
    result = convert(ConvertRequest(resolve_model("sd15-tiny", weights=folder), out, opts, progress=False))
    assert result.ok
    m = load_manifest(out)
    with_compute = [b for b in m.blocks if b.signature]
    assert len({b.package for b in with_compute}) == len(with_compute)  # no sharing in deploy mode
    assert all(b.package == f"{b.file_id}.mlpackage" and b.weights_hash for b in with_compute)
    assert len({b.weights_hash for b in with_compute}) == len(with_compute)
    meta = dict(_spec(m.package_path("down1_rb1")).description.metadata.userDefined)
    assert meta["snapbench.source_hash"] == m.block("down1_rb1").weights_hash
    again = convert(ConvertRequest(resolve_model("sd15-tiny", weights=folder), out, opts, progress=False))
    assert again.converted == []


@pytest.mark.slow
def test_parallel_workers_give_the_same_packages(tmp_path, profile_dir):
    out = tmp_path / "par"
    result = convert(ConvertRequest(resolve_model("sd15-tiny"), out, ConvertOptions(latent=8, tokens=4, jobs=2), progress=False))
    assert result.ok
    a, b = load_manifest(out), load_manifest(profile_dir)
    assert [x.cache_key for x in a.blocks] == [x.cache_key for x in b.blocks]
