"""`convert --pipeline`: the app-ready folder for Apple's Swift StableDiffusion package, on tiny models."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.converters.convert_blocks import cut
from snapbench.converters.manifest import load_manifest
from snapbench.converters.options import ConvertOptions
from snapbench.converters.unet_chunks import UNetChunk, build_chunk, plan_chunks, split_after
from snapbench.model.loading import build_unet

TINY = ["--latent", "8", "--tokens", "4"]


def _pipeline_folder(root: Path, *, vae: bool = False, vocab: int = 1000) -> Path:
    """A diffusers-layout folder: unet/, text_encoder/, tokenizer/ (and vae/ when asked), real weights."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from snapbench.converters.components import text_encoder_config

    unet = build_unet(resolve_model("sd15-tiny"), device="cpu", seed=1)
    unet.base.save_pretrained(root / "unet", safe_serialization=True)
    _, cfg = text_encoder_config(16)
    torch.manual_seed(1)
    CLIPTextModel(CLIPTextConfig(**cfg)).save_pretrained(root / "text_encoder", safe_serialization=True)
    tok = root / "tokenizer"
    tok.mkdir()
    (tok / "vocab.json").write_text(json.dumps({f"t{i}</w>": i for i in range(vocab)}))
    (tok / "merges.txt").write_text("#version: 0.2\n")
    if vae:
        from diffusers import AutoencoderKL

        from snapbench.converters.components import vae_config

        AutoencoderKL(**vae_config(resolve_model("sd15-tiny"))[1]).save_pretrained(root / "vae", safe_serialization=True)
    return root


def _spec(path):
    import coremltools as ct

    return ct.utils.load_spec(str(path))


def _io(path):
    s = _spec(path).description
    return ([(i.name, list(i.type.multiArrayType.shape), i.type.multiArrayType.dataType) for i in s.input],
            [o.name for o in s.output])


# -- the chunk boundary ---------------------------------------------------------------------------------


def test_split_after_is_where_the_running_weight_reaches_half():
    assert split_after([1, 1, 1, 1]) == 1  # 2 of 4: exactly half ends chunk 1
    assert split_after([1, 1, 1, 1, 1]) == 2  # 3 of 5 is the first >= half
    assert split_after([10, 0, 0, 1]) == 0
    assert split_after([0, 0, 0, 10]) == 2  # chunk 2 never empty
    assert split_after([0, 5, 5, 0]) == 1


def _chunk_modules(source, opts):
    meta, blocks = cut(source, opts)
    cfg = meta.config
    sample = (opts.batch, cfg.in_channels, opts.latent, opts.latent)
    plans = plan_chunks(blocks, meta.closes_skip, opts.chunks, batch=opts.batch, sample=sample,
                        context_dim=cfg.cross_attention_dim, tokens=opts.tokens)
    return plans, [build_chunk(meta, blocks, meta.closes_skip, p, source, opts.attention, opts.seed) for p in plans]


@pytest.mark.parametrize("attention", ["original", "split_einsum_v2"])
def test_two_chunks_compose_to_the_checkpoints_unet(tmp_path, attention):
    """Chunk 1 then chunk 2, weights read lazily from the checkpoint, equal the elastic UNet on all of it."""
    folder = _pipeline_folder(tmp_path / "sd")
    source = resolve_model(folder)
    opts = ConvertOptions(latent=8, tokens=4, chunks=2, attention=attention)
    plans, built = _chunk_modules(source, opts)
    assert [p.name for p in plans] == ["UnetChunk1", "UnetChunk2"]
    g = torch.Generator().manual_seed(3)
    sample, ehs = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 1, 4, generator=g)
    t = torch.full((2,), 981.0)
    with torch.no_grad():
        boundary = built[0].module(sample, t, ehs)
        got = built[1].module(*boundary, ehs)
        want = build_unet(source, device="cpu")(sample, t, ehs.squeeze(2).transpose(1, 2))
    assert [n for n, _ in plans[0].io.outputs] == [n for n, _ in plans[1].io.inputs][:-1]
    assert [tuple(x.shape) for x in boundary] == [s for _, s in plans[0].io.outputs]
    if attention == "original":
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        assert built[0].psnr_db == {}
    else:
        from snapbench.converters.ane_attention import psnr

        assert psnr(want, got) > 60
        assert built[0].psnr_db and min(built[0].psnr_db.values()) >= 35


@pytest.mark.slow  # builds, saves and runs two elastic UNets through both chunks
def test_chunks_of_an_evolved_model_read_its_copies(tmp_path):
    """An `evolve` output (arch.json, unet/, copies.safetensors): removed blocks and weight copies."""
    from snapbench.model.loading import save_elastic

    save_elastic(build_unet(resolve_model("snapfusion-tiny"), device="cpu", seed=2), tmp_path / "evo")
    g = torch.Generator().manual_seed(4)
    sample, ehs = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 1, 4, generator=g)
    t = torch.full((2,), 981.0)
    # --model runs/evo: copies from copies.safetensors; --model snapfusion-tiny --weights runs/evo: the UNet
    # checkpoint only, copies made from their originals as build_unet makes them
    for source in (resolve_model(tmp_path / "evo"), resolve_model("snapfusion-tiny", weights=tmp_path / "evo")):
        plans, built = _chunk_modules(source, ConvertOptions(latent=8, tokens=4, chunks=2))
        with torch.no_grad():
            got = built[1].module(*built[0].module(sample, t, ehs), ehs)
            want = build_unet(source, device="cpu").eval()(sample, t, ehs.squeeze(2).transpose(1, 2))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert resolve_model(tmp_path / "evo").copies_file is not None


def test_chunk_takes_only_its_blocks():
    source = resolve_model("sd15-tiny")
    plans, built = _chunk_modules(source, ConvertOptions(latent=8, tokens=4, chunks=2))
    n1, n2 = (sum(p.numel() for p in b.module.parameters()) for b in built)
    meta, blocks = cut(source, ConvertOptions(latent=8, tokens=4))
    total = sum(b.params for b in blocks)
    assert n1 + n2 == total and n1 * 2 >= total > (n1 - max(b.params for b in blocks)) * 2
    assert isinstance(built[0].module, UNetChunk)


@pytest.fixture
def small_query_chunks(monkeypatch):
    """split_einsum_v2 chunks of 64 queries: the tiny UNet's 16 x 16 blocks then run 4 chunks, as SD's do."""
    from snapbench.converters import ane_attention

    monkeypatch.setattr(ane_attention, "DEFAULT_QUERY_CHUNK_SIZE", 64)


V2_CHUNKS = ConvertOptions(mode="deploy", latent=16, tokens=4, chunks=2, attention="split_einsum_v2")


@pytest.fixture(scope="module")
def v2_chunks(tmp_path_factory):
    """sd15-tiny's two UNet chunks at V2_CHUNKS, built once for the module, and their packages converted on
    first use and kept: `package(index, scale, skip_passes)` -> the package's files (but its Manifest.json,
    whose item ids are random). Chunk 1 traced at half size with every pass is in two tests. Callers ask for
    `small_query_chunks` too: the chunks are built and traced under it."""
    from snapbench.converters.convert_package import convert_module, example_inputs
    from snapbench.converters.unet_chunks import at_batch_one

    root = tmp_path_factory.mktemp("v2-chunks")
    built: list = []
    made: dict[tuple, dict[str, bytes]] = {}

    class Chunks:
        @property
        def built(self):
            if not built:
                built.append(_chunk_modules(resolve_model("sd15-tiny"), V2_CHUNKS))
            return built[0]

        def package(self, index: int, scale: int, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
            if (index, scale, skip) not in made:
                plans, chunks = self.built
                plan = plans[index]
                dest = root / f"{plan.name}-x{scale}-skip{len(skip)}" / f"{plan.name}.mlpackage"
                convert_module(chunks[index].module, plan.io, V2_CHUNKS, dest, metadata={}, description="chunk",
                               inputs=example_inputs(at_batch_one(plan.io, scale)), skip_passes=skip)
                made[(index, scale, skip)] = {f.relative_to(dest).as_posix(): f.read_bytes()
                                              for f in sorted(dest.rglob("*"))
                                              if f.is_file() and f.name != "Manifest.json"}
            return made[(index, scale, skip)]

    return Chunks()


@pytest.mark.parametrize("attention", ["original",  # the v2 case traces the chunked attention: slow
                                       pytest.param("split_einsum_v2", marks=pytest.mark.slow)])
def test_chunks_traced_small_run_at_full_size(attention, small_query_chunks):
    """What lets the pipeline trace at batch 1 and 8 x 8: the traced graph keeps batch and size symbolic."""
    from snapbench.converters.convert_package import example_inputs, trace
    from snapbench.converters.unet_chunks import at_batch_one, trace_scale

    source = resolve_model("sd15-tiny")
    opts = ConvertOptions(latent=16, tokens=4, chunks=2, attention=attention)
    plans, built = _chunk_modules(source, opts)
    _, blocks = cut(source, opts)
    for plan, b in zip(plans, built):
        scale = trace_scale(blocks, plan, opts.latent, attention)
        assert scale == 2  # traced at 8 x 8
        small = example_inputs(at_batch_one(plan.io, scale))
        assert small[0].shape[0] == 1 and small[0].shape[-1] * 2 == plan.io.inputs[0][1][-1]
        traced = trace(b.module, small)
        full = example_inputs(plan.io, seed=5)
        with torch.no_grad():
            want, got = b.module(*full), traced(*full)
        for w, g in zip(want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)):
            assert g.shape == w.shape and g.shape[0] == 2
            torch.testing.assert_close(g, w)


def test_chunks_are_traced_at_full_size_when_a_small_trace_would_differ(monkeypatch):
    """Query chunks that do not divide a block's positions are decided at run time: no small trace then."""
    from snapbench.converters import ane_attention
    from snapbench.converters.unet_chunks import trace_scale

    source = resolve_model("sd15-tiny")
    opts = ConvertOptions(latent=16, tokens=4, chunks=2, attention="split_einsum_v2")
    meta, blocks = cut(source, opts)
    plans = plan_chunks(blocks, meta.closes_skip, 2, batch=2, sample=(2, 4, 16, 16), context_dim=16, tokens=4)
    assert trace_scale(blocks, plans[0], 16, "split_einsum_v2") == 2
    monkeypatch.setattr(ane_attention, "DEFAULT_QUERY_CHUNK_SIZE", 96)  # 256 positions: 96 + 96 + 64
    assert trace_scale(blocks, plans[0], 16, "split_einsum_v2") == 1
    assert trace_scale(blocks, plans[0], 16, "original") == 2
    assert trace_scale(blocks, plans[0], 12, "original") == 1  # not a multiple of the 8 x 8 trace


@pytest.mark.slow  # converts whole UNet chunks (many blocks each), not one tiny package
def test_chunk_traced_small_is_the_same_package(v2_chunks, small_query_chunks):
    """Byte for byte: chunk 1 (v2 attention, 4 query chunks at 16 x 16) traced at 8 x 8 vs at 16 x 16."""
    plans, built = v2_chunks.built
    attention = [m for m in built[0].module.modules() if type(m).__name__ == "ANEAttention"]
    assert attention and max(m.query_chunks or 1 for m in attention) == 4  # the chunked path is in it
    assert v2_chunks.package(0, 1) == v2_chunks.package(0, 2)


def test_vae_traced_small_runs_at_full_size():
    from snapbench.converters.app_parts import ModelFolder, vae_decoder_part, vae_encoder_part
    from snapbench.converters.convert_package import example_inputs, trace

    opts = ConvertOptions(latent=16, tokens=4)
    for make in (vae_decoder_part, vae_encoder_part):
        part = make(resolve_model("sd15-tiny"), opts, ModelFolder(None, None, None, None))
        module, _ = part.build()
        small = part.inputs()
        assert small[0].shape[-1] * 2 == part.io.inputs[0][1][-1]  # traced at half the size (latent 8)
        traced = trace(module, small)
        full = example_inputs(part.io, seed=5)
        with torch.no_grad():
            want, got = module(*full), traced(*full)
        assert tuple(got.shape) == part.io.outputs[0][1]
        torch.testing.assert_close(got, want)


# -- whole runs -------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_from_a_folder_without_vae(tmp_path, capsys):
    folder = _pipeline_folder(tmp_path / "sd")
    capsys.readouterr()
    out = tmp_path / "app"
    args = ["convert", "--model", str(folder), "--pipeline", "--chunks", "2", "--attention", "split_einsum_v2",
            *TINY, "--out", str(out)]
    assert main(args) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "missing vae" in line and "converted the rest" in line
    names = sorted(p.name for p in out.iterdir())
    assert names == ["TextEncoder.mlpackage", "UnetChunk1.mlpackage", "UnetChunk2.mlpackage", "manifest.json",
                     "merges.txt", "vocab.json"]
    FP32 = 65568  # ArrayFeatureType.FLOAT32 (65552 is FLOAT16)
    assert _io(out / "TextEncoder.mlpackage") == ([("input_ids", [1, 4], FP32)], ["last_hidden_state", "pooled_outputs"])
    ins1, outs1 = _io(out / "UnetChunk1.mlpackage")
    assert ins1 == [("sample", [2, 4, 8, 8], FP32), ("timestep", [2], FP32),
                    ("encoder_hidden_states", [2, 16, 1, 4], FP32)]
    ins2, outs2 = _io(out / "UnetChunk2.mlpackage")
    assert outs2 == ["noise_pred"]
    assert {n for n, _, _ in ins2} <= set(outs1) | {n for n, _, _ in ins1}  # what Swift merges and feeds
    m = load_manifest(out)
    assert m.content == "pipeline" and not m.complete and m.missing and m.missing[0].startswith("vae")
    assert all(b.state == "done" for b in m.blocks)
    assert m.block("UnetChunk1").ane_psnr_db >= 35 and m.block("TextEncoder").ane_psnr_db is None
    stamps = {b.id: (out / b.package / "Manifest.json").stat().st_mtime_ns for b in m.blocks}

    # again: every part from the cache, nothing rewritten, same one line
    assert main(args) == 2
    m2 = load_manifest(out)
    assert {b.id: (out / b.package / "Manifest.json").stat().st_mtime_ns for b in m2.blocks} == stamps


@pytest.mark.slow
def test_pipeline_one_unet_vae_encoder_6_bit(tmp_path, capsys):
    out = tmp_path / "app"
    # latent 16: the VAE parts are traced at 8 and converted at 16; 64 tokens: the text encoder's causal
    # mask (64 x 64, -inf above the diagonal) is big enough that a careless palettizer would take it
    assert main(["convert", "--model", "sd15-tiny", "--pipeline", "--weight-bits", "6", "--vae-encoder",
                 "--latent", "16", "--tokens", "64", "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["TextEncoder.mlpackage", "Unet.mlpackage", "VAEDecoder.mlpackage", "VAEEncoder.mlpackage",
                     "manifest.json"]  # a preset has no tokenizer files
    ins, outs = _io(out / "Unet.mlpackage")
    # original attention too: the Swift package always passes the context as (B, C, 1, S)
    assert [(n, s) for n, s, _ in ins] == [("sample", [2, 4, 16, 16]), ("timestep", [2]),
                                          ("encoder_hidden_states", [2, 16, 1, 64])] and outs == ["noise_pred"]
    assert _io(out / "VAEDecoder.mlpackage")[1] == ["image"]
    assert [s for _, s, _ in _io(out / "VAEEncoder.mlpackage")[0]] == [[1, 3, 128, 128]]
    assert load_manifest(out).block("VAEDecoder").outputs == [
        {"name": "image", "shape": [1, 3, 128, 128], "dtype": "float32"}]
    m = load_manifest(out)
    assert m.complete and m.compression["weight_bits"] == 6 and m.compression["mode"] == "kmeans_histogram"
    block = next(iter(_spec(out / "Unet.mlpackage").mlProgram.functions["main"].block_specializations.values()))
    ops = {op.type for op in block.operations}
    assert "constexpr_lut_to_dense" in ops


@pytest.mark.slow
def test_chunk_boundary_against_coremltools_bisect_rule(tmp_path):
    """Apple's rule on the whole program's ops vs ours on blocks: the same half, within one block."""
    import coremltools as ct
    from coremltools.models.utils import _get_op_idx_split_location

    from snapbench.converters.convert_package import example_inputs, trace
    from snapbench.converters.runtime import conversion_context

    source = resolve_model("sd15-tiny")
    opts = ConvertOptions(latent=8, tokens=4, chunks=1, attention="split_einsum")
    plans, built = _chunk_modules(source, opts)
    io = plans[0].io
    traced = trace(built[0].module, example_inputs(io))
    with conversion_context():
        prog = ct.convert(traced, convert_to="milinternal", inputs=[ct.TensorType(name=n, shape=s) for n, s in io.inputs],
                          compute_precision=ct.precision.FLOAT16, minimum_deployment_target=ct.target.iOS16)
    main_block = prog.functions["main"]
    main_block.operations = list(main_block.operations)  # as bisect_model does before the same call
    _, apple_mb, total_mb = _get_op_idx_split_location(prog)
    meta, blocks = cut(source, opts)
    cut_at = split_after([b.params for b in blocks]) + 1
    ours = sum(b.params for b in blocks[:cut_at]) / sum(b.params for b in blocks)
    biggest = max(b.params for b in blocks) / sum(b.params for b in blocks)
    assert ours >= 0.5 and apple_mb / total_mb >= 0.5
    assert abs(ours - apple_mb / total_mb) <= biggest


# -- bad input: one line, exit 2 ------------------------------------------------------------------------


def test_chunks_other_than_1_or_2(tmp_path, capsys):
    assert main(["convert", "--model", "sd15-tiny", "--pipeline", "--chunks", "3", *TINY,
                 "--out", str(tmp_path / "a")]) == 2
    assert "--chunks must be 1 or 2" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="Linux refuses --compile")
def test_compile_needs_macos(tmp_path, capsys):
    assert main(["convert", "--model", "sd15-tiny", "--pipeline", "--compile", *TINY,
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--compile needs macOS" in err[0]


def test_tokenizer_of_another_model(tmp_path, capsys):
    folder = _pipeline_folder(tmp_path / "sd", vae=True, vocab=49408)
    capsys.readouterr()  # save_pretrained's own progress bars
    assert main(["convert", "--model", str(folder), "--pipeline", *TINY, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "49408 tokens" in err[0] and "vocabulary of 1000" in err[0]
    assert not (tmp_path / "a").exists()


def test_disk_too_full_is_refused_up_front(tmp_path, capsys, monkeypatch):
    import shutil

    from snapbench.converters import pipeline

    real = shutil.disk_usage
    monkeypatch.setattr(pipeline.shutil, "disk_usage", lambda p: real(p)._replace(free=10_000))
    assert main(["convert", "--model", "sd15-tiny", "--pipeline", *TINY, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "GB free" in err[0] and "need about" in err[0]
    assert not (tmp_path / "a").exists()


def test_pipeline_flag_combinations(tmp_path, capsys):
    assert main(["convert", "--pipeline", "--whole", "--out", str(tmp_path / "a")]) == 2
    assert main(["convert", "--compile", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "cannot be combined" in err and "go with --pipeline" in err


@pytest.mark.slow  # converts whole UNet chunks (many blocks each), not one tiny package
def test_skipped_passes_change_nothing_in_a_unet_chunk(v2_chunks, small_query_chunks):
    """UNET_SKIPPED_PASSES are left out only because the chunks' packages are the same without them."""
    from snapbench.converters.pipeline import UNET_SKIPPED_PASSES

    for index in (0, 1):
        assert v2_chunks.package(index, 2) == v2_chunks.package(index, 2, tuple(UNET_SKIPPED_PASSES))
