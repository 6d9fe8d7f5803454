"""`convert --pipeline` for SDXL-class UNets: TextEncoder + TextEncoder2 + Unet (or two chunks) + VAEDecoder
under the names and shapes Apple's Swift package uses for SDXL (swift_interface.json, family `sdxl`), on a
tiny StableDiffusionXLPipeline folder and a spec with no checkpoint (both sdxl-tiny's shallow twin,
tests/model_refs.py). Real conversions; diffusers' own SDXL pipeline is the reference for what the parts compute."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from model_refs import SDXL_SHALLOW

from snapbench.cli import main
from snapbench.converters.manifest import load_manifest
from snapbench.converters.options import ConvertOptions
from snapbench.converters.swift_interface import (
    XL_FAMILY,
    check_package,
    family_rules,
    folder_family,
    interface_markdown,
    read_interface,
)

TOKENS, LATENT = 4, 8
ROOT = Path(__file__).resolve().parents[1]
README_START, README_END = "<!-- interface-table-sdxl: start -->", "<!-- interface-table-sdxl: end -->"
OPTS = ConvertOptions(attention="split_einsum_v2", latent=LATENT, tokens=TOKENS)


@pytest.fixture(scope="module")
def xl_folder(tmp_path_factory) -> Path:
    from snapbench.fixtures import write_tiny_sdxl_pipeline

    return write_tiny_sdxl_pipeline(tmp_path_factory.mktemp("xl") / "pipe", unet=SDXL_SHALLOW)


# -- what the parts compute, against diffusers' StableDiffusionXLPipeline ------------------------------


def test_text_encoder_parts_give_what_diffusers_sdxl_pipeline_feeds_its_unet(xl_folder):
    from diffusers import StableDiffusionXLPipeline

    from snapbench.backbones import resolve_model
    from snapbench.converters.app_parts import model_folder, xl_text_encoder_parts

    source = resolve_model(xl_folder)
    parts = xl_text_encoder_parts(source, replace(OPTS, tokens=77), model_folder(str(xl_folder), None, xl=True))
    assert [p.name for p in parts] == ["TextEncoder", "TextEncoder2"]
    assert [p.io.outputs for p in parts] == [(("hidden_embeds", (1, 77, 16)), ("pooled_outputs", (1, 16))),
                                             (("hidden_embeds", (1, 77, 16)), ("pooled_outputs", (1, 16)))]
    assert all("text_encoder" in p.identity["read"] for p in parts)
    pipe = StableDiffusionXLPipeline.from_pretrained(xl_folder, local_files_only=True)
    prompt = "a red cube on a blue table"
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        context, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
        (h1, _), (h2, p2) = (p.build()[0](ids.float()) for p in parts)
    # what StableDiffusionXLPipeline.swift does with the packages' outputs: side by side, and the pooled one
    torch.testing.assert_close(torch.cat([h1, h2], dim=-1), context)
    torch.testing.assert_close(p2, pooled)


def test_sdxl_unet_chunks_compose_to_diffusers_unet(xl_folder):
    from diffusers import UNet2DConditionModel

    from snapbench.backbones import resolve_model
    from snapbench.converters.convert_blocks import cut
    from snapbench.converters.unet_chunks import build_chunk, plan_chunks
    from snapbench.converters.whole_unet import added_inputs

    source = resolve_model(xl_folder)
    opts = replace(OPTS, chunks=2)
    meta, blocks = cut(source, opts)
    plans = plan_chunks(blocks, meta.closes_skip, 2, batch=2, sample=(2, 4, LATENT, LATENT), context_dim=32,
                        tokens=TOKENS, added=added_inputs(meta.config, 2))
    assert [n for n, _ in plans[0].io.inputs] == ["sample", "timestep", "encoder_hidden_states", "text_embeds",
                                                   "time_ids"]
    assert "text_embeds" not in dict(plans[1].io.inputs)  # already in the time embedding chunk 1 hands on
    one, two = (build_chunk(meta, blocks, meta.closes_skip, p, source, "original", 0).module for p in plans)
    g = torch.Generator().manual_seed(0)
    sample, ctx = torch.randn(2, 4, LATENT, LATENT, generator=g), torch.randn(2, 32, 1, TOKENS, generator=g)
    t = torch.tensor([999.0, 999.0])
    text_embeds = torch.randn(2, 16, generator=g)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0]] * 2)
    ref = UNet2DConditionModel.from_pretrained(xl_folder / "unet").eval()
    with torch.no_grad():
        want = ref(sample, t, ctx.squeeze(2).transpose(1, 2),
                   added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}).sample
        boundary = one(sample, t, ctx, text_embeds, time_ids)
        got = two(*boundary, ctx)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# -- converted packages against the table -----------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(xl_folder, tmp_path_factory):
    """The tiny SDXL folder converted with two UNet chunks, then (a copy) with one Unet: the text encoders
    and the VAE decoder come from the cache the second time."""
    from snapbench.backbones import resolve_model
    from snapbench.converters.entry import ConvertRequest, convert

    root = tmp_path_factory.mktemp("xl-app")
    chunked = root / "chunks"
    r2 = convert(ConvertRequest(resolve_model(xl_folder), chunked, replace(OPTS, chunks=2), "pipeline", progress=False))
    whole = root / "whole"
    shutil.copytree(chunked, whole)
    r1 = convert(ConvertRequest(resolve_model(xl_folder), whole, OPTS, "pipeline", progress=False))
    assert not r2.failed and not r1.failed and r1.converted == ["Unet"], (r2.failed, r1.failed, r1.converted)
    return whole, chunked, r2


@pytest.mark.slow
def test_every_sdxl_package_matches_what_swift_feeds_and_reads(converted):
    whole, chunked, result = converted
    assert sorted(p.name for p in chunked.iterdir()) == [
        "TextEncoder.mlpackage", "TextEncoder2.mlpackage", "UnetChunk1.mlpackage", "UnetChunk2.mlpackage",
        "VAEDecoder.mlpackage", "manifest.json", "merges.txt", "vocab.json"]
    assert not result.missing and load_manifest(chunked).complete
    assert any("text_encoder_2/model.safetensors" in n for n in result.notes)  # the files read are named
    sizes: dict[str, int] = {}
    for folder in (whole, chunked):
        assert folder_family(folder) == XL_FAMILY
        for path in sorted(folder.glob("*.mlpackage")):
            assert check_package(path, path.stem, sizes, XL_FAMILY) == [], path.stem
    assert sizes == {"S": TOKENS, "D1": 16, "D2": 16, "D": 32, "B": 2, "C": 4, "H": LATENT, "W": LATENT}
    assert sizes["D"] == sizes["D1"] + sizes["D2"]  # the Unet's context is both encoders side by side
    unet = {t.name: t.shape for t in read_interface(whole / "Unet.mlpackage").inputs}
    assert unet == {"sample": (2, 4, LATENT, LATENT), "timestep": (2,), "encoder_hidden_states": (2, 32, 1, TOKENS),
                    "text_embeds": (2, 16), "time_ids": (2, 6)}
    outs = {t.name: t for t in read_interface(chunked / "UnetChunk1.mlpackage").outputs}
    ins = {t.name: t for t in read_interface(chunked / "UnetChunk2.mlpackage").inputs}
    assert {n: ins[n] for n in outs} == outs  # chunk 2 takes chunk 1's outputs by name, same shape and dtype
    assert {t.dtype for f in (whole, chunked) for p in f.glob("*.mlpackage")
            for t in (*read_interface(p).inputs, *read_interface(p).outputs)} == {"float32"}
    table = interface_markdown(whole, chunked)
    assert "`TextEncoder2.mlpackage`" in table and "`time_ids` float32 (B, 6)" in table
    text = (ROOT / "README.md").read_text()  # the README's SDXL table is this one
    m = re.search(re.escape(README_START) + r"\n(.*?)" + re.escape(README_END), text, re.S)
    assert m, f"README.md lacks the {README_START} ... {README_END} block"
    assert m.group(1) == table


def test_sdxl_rows_are_the_sd_rows_plus_apples_xl_additions():
    sd, xl = family_rules("sd"), family_rules(XL_FAMILY)
    assert set(xl) == set(sd) | {"TextEncoder2"}
    for name in ("Unet", "UnetChunk1"):
        assert [r.name for r in xl[name].inputs] == [r.name for r in sd[name].inputs] + ["text_embeds", "time_ids"]
    for name in ("TextEncoder", "TextEncoder2"):
        assert [r.name for r in xl[name].outputs] == ["hidden_embeds", "pooled_outputs"]
        assert all(r.sure != "high" for r in xl[name].outputs)  # remembered, not read: the table says so


@pytest.mark.slow
def test_sdxl_class_spec_pipeline_from_the_cli(tmp_path, capsys):
    """A model with no checkpoint (a spec: a preset's or a file's, here the shallow twin of sdxl-tiny: the
    preset's ten-layer blocks are converted one by one in `selftest`'s profile stage) as an SDXL app."""
    out = tmp_path / "app"
    args = ["convert", "--model", SDXL_SHALLOW, "--pipeline", "--latent", str(LATENT), "--tokens", str(TOKENS),
            "--out", str(out), "--json"]
    assert main(args) == 0, capsys.readouterr().err
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc["converted"]) == ["TextEncoder", "TextEncoder2", "Unet", "VAEDecoder"]
    assert doc["failed"] == [] and doc["missing"] == []


# -- bad input ----------------------------------------------------------------------------------------------


def test_text_encoders_of_another_width_are_refused_in_one_line(xl_folder, tmp_path, capsys):
    folder = tmp_path / "pipe"
    shutil.copytree(xl_folder, folder)
    cfg_path = folder / "text_encoder_2" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(hidden_size=8, intermediate_size=32)
    cfg_path.write_text(json.dumps(cfg))
    out = tmp_path / "app"
    assert main(["convert", "--model", str(folder), "--pipeline", "--latent", "8", "--tokens", "4",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "16 + 8 wide" in err and "32-wide context" in err
    assert not out.exists()  # refused before anything is written
