"""`convert --pipeline` against what Apple's Swift StableDiffusion package feeds and reads (swift_interface.json):
names, shapes and dtypes of every package, token ids through the text encoder's program, fp16 checkpoints
and fp16 weight variants. Tiny models throughout."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from snapbench.converters.options import ConvertOptions
from snapbench.converters.swift_interface import (
    check_package,
    family_rules,
    interface_markdown,
    load_table,
    read_interface,
)

ROOT = Path(__file__).resolve().parents[1]
TOKENS, LATENT = 4, 8
README_START, README_END = "<!-- interface-table: start -->", "<!-- interface-table: end -->"


# -- the table itself -------------------------------------------------------------------------------------


def test_table_says_where_it_comes_from_and_what_swift_feeds_is_what_packages_take():
    table = load_table()
    assert "NOT FETCHED" in table["provenance"] and "TextEncoder.swift" in table["sources"]
    for family in table["models"]:
        for package, rules in family_rules(family).items():
            for rule in rules.inputs:
                assert rule.dtype in table["dtypes"] and rule.sure in ("high", "medium", "low")
                assert rule.swift_source in table["sources"] and rule.apple_source in table["sources"]
                if rule.swift_dtype == "float32":  # fed as Float32: declared float32 (cast inside if need be)
                    assert rule.dtype == "float32", (package, rule.name)
            for rule in rules.outputs:
                assert rule.dtype in table["dtypes"]
        # what chunk 1 hands on, chunk 2 takes in the same dtype (Swift passes it unconverted)
        packages = family_rules(family)
        if "UnetChunk1" in packages:
            for out in packages["UnetChunk1"].outputs:
                took = packages["UnetChunk2"].rule(out.name, output=False)
                assert took is not None and took.dtype == out.dtype, out.name


# -- converted packages against the table -----------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny fixture pipeline converted twice: two UNet chunks + VAE encoder, then one UNet (same folder
    copied: the text encoder and VAE packages are reused from the cache)."""
    from snapbench.backbones import resolve_model
    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.fixtures import write_tiny_pipeline

    root = tmp_path_factory.mktemp("app")
    pipe = write_tiny_pipeline(root / "pipe")
    opts = ConvertOptions(attention="split_einsum_v2", latent=LATENT, tokens=TOKENS)
    chunked = root / "chunks"
    r2 = convert(ConvertRequest(resolve_model(pipe), chunked, replace(opts, chunks=2), "pipeline", vae_encoder=True,
                                progress=False))
    whole = root / "whole"
    shutil.copytree(chunked, whole)
    r1 = convert(ConvertRequest(resolve_model(pipe), whole, opts, "pipeline", vae_encoder=True, progress=False))
    assert not r2.failed and not r1.failed and r1.converted == ["Unet"]
    return whole, chunked, r2


@pytest.mark.slow
def test_every_package_matches_what_swift_feeds_and_reads(converted):
    whole, chunked, _ = converted
    sizes: dict[str, int] = {}
    names = []
    for folder in (whole, chunked):
        for path in sorted(folder.glob("*.mlpackage")):
            names.append(path.stem)
            assert check_package(path, path.stem, sizes) == []
    assert sorted(set(names)) == ["TextEncoder", "Unet", "UnetChunk1", "UnetChunk2", "VAEDecoder", "VAEEncoder"]
    # one binding of every symbol across all packages: the parts fit each other
    assert sizes == {"S": TOKENS, "D": 16, "B": 2, "C": 4, "H": LATENT, "W": LATENT}
    # chunk 2 takes chunk 1's outputs by name, in the same shape and dtype
    outs = {t.name: t for t in read_interface(chunked / "UnetChunk1.mlpackage").outputs}
    ins = {t.name: t for t in read_interface(chunked / "UnetChunk2.mlpackage").inputs}
    assert {n: ins[n] for n in outs} == outs
    # every dtype is pinned, none left to coremltools' fp16 default
    assert {t.dtype for f in (whole, chunked) for p in f.glob("*.mlpackage")
            for t in (*read_interface(p).inputs, *read_interface(p).outputs)} == {"float32"}


@pytest.mark.slow
def test_manifest_records_the_dtypes(converted):
    from snapbench.converters.manifest import load_manifest

    _, chunked, _ = converted
    block = load_manifest(chunked).block("TextEncoder")
    assert block.inputs == [{"name": "input_ids", "shape": [1, TOKENS], "dtype": "float32"}]


@pytest.mark.slow
def test_readme_interface_table_is_generated_from_the_packages(converted):
    whole, chunked, _ = converted
    text = (ROOT / "README.md").read_text()
    m = re.search(re.escape(README_START) + r"\n(.*?)" + re.escape(README_END), text, re.S)
    assert m, f"README.md lacks the {README_START} ... {README_END} block"
    assert m.group(1) == interface_markdown(whole, chunked)


# -- token ids through the text encoder's program ---------------------------------------------------------

CLIP_IDS = [49406, 0, 2048, 2049, 49407, 49407, 49407, 49407]  # start, 0, the last exact fp16 integer and
# the first that is not, end of text (CLIP's last id) as the padding


def _clip_folder(folder: Path, *, dtype: torch.dtype = torch.float32, variant: str | None = None,
                 seed: int = 3) -> torch.nn.Module:
    """A CLIP-sized vocabulary (49,408 ids) on a 16-wide, 2-layer text encoder, saved with save_pretrained."""
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=16, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         projection_dim=16, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    torch.manual_seed(seed)
    model = CLIPTextModel(cfg).eval()
    with torch.no_grad():  # rows far apart, so that a wrong row cannot pass for the right one
        model.get_input_embeddings().weight.normal_(0, 1)
    model.to(dtype).save_pretrained(folder, safe_serialization=True, variant=variant)
    return model


def _text_encoder_package(root: Path, opts: ConvertOptions) -> tuple[Path, torch.nn.Module]:
    """The pipeline's TextEncoder part of root/text_encoder, converted as convert --pipeline converts it."""
    from snapbench.backbones import resolve_model
    from snapbench.converters.app_parts import model_folder, text_encoder_part
    from snapbench.converters.convert_package import convert_module

    part = text_encoder_part(resolve_model("sd15-tiny"), opts, model_folder(root, None))
    module, _ = part.build()
    dest = root / "TextEncoder.mlpackage"
    convert_module(module, part.io, opts, dest, metadata={}, description=part.title, inputs=part.inputs())
    return dest, module


def test_token_ids_survive_the_text_encoder_program(tmp_path):
    """The converted program, run by coremltools' op-level evaluation, gives PyTorch's embeddings for ids
    that fp16 cannot hold (2049, 49406, 49407): the ids reach the embedding table as they were fed."""
    from snapbench.converters.mil_eval import evaluate_package

    _clip_folder(tmp_path / "text_encoder")
    opts = ConvertOptions(tokens=len(CLIP_IDS), mode="deploy")
    dest, module = _text_encoder_package(tmp_path, opts)
    ids = torch.tensor([CLIP_IDS], dtype=torch.float32)  # what the Swift package feeds: Float32 ids
    got = evaluate_package(dest, {"input_ids": ids.numpy()})
    with torch.no_grad():
        want_hidden, want_pooled = (t.numpy() for t in module(ids))
    # fp16 arithmetic inside: a few 1e-3 here; a wrong embedding row moves a token's state by O(1)
    np.testing.assert_allclose(got["last_hidden_state"], want_hidden, atol=0.05)
    np.testing.assert_allclose(got["pooled_outputs"], want_pooled, atol=0.05)
    # the check can tell: ids as fp16 holds them (2049 -> 2048) give other embeddings, far outside the bar
    with torch.no_grad():
        rounded = ids.half().float().clamp(max=49407)
        wrong = module(rounded)[0].numpy()
    assert np.abs(wrong[0, 3] - want_hidden[0, 3]).max() > 0.5


# -- fp16 checkpoints and variants ------------------------------------------------------------------------


def test_text_encoder_saved_in_fp16_converts(tmp_path):
    """config.json says "dtype": "float16": the part is still built and traced in fp32."""
    import json

    _clip_folder(tmp_path / "text_encoder", dtype=torch.float16)
    assert json.loads((tmp_path / "text_encoder" / "config.json").read_text())["dtype"] == "float16"
    dest, module = _text_encoder_package(tmp_path, ConvertOptions(tokens=len(CLIP_IDS), mode="deploy"))
    assert {p.dtype for p in module.parameters()} == {torch.float32}
    assert dest.is_dir()


def _variant_pipeline(root: Path, *, plain: bool) -> Path:
    """The tiny fixture pipeline with fp16 variant files for every part (and its plain files when `plain`);
    the fp16 text encoder's weights differ from the plain one's, so the test can tell which was read."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from snapbench.fixtures import write_tiny_pipeline

    pipe = write_tiny_pipeline(root / "pipe")
    for sub, cls in (("unet", UNet2DConditionModel), ("vae", AutoencoderKL)):
        model = cls.from_pretrained(pipe / sub)
        model.half().save_pretrained(pipe / sub, variant="fp16")
        if not plain:
            (pipe / sub / "diffusion_pytorch_model.safetensors").unlink()
    from transformers import CLIPTextModel

    other = CLIPTextModel.from_pretrained(pipe / "text_encoder")
    if not plain:
        (pipe / "text_encoder" / "model.safetensors").unlink()
    torch.manual_seed(9)
    with torch.no_grad():
        for p in other.parameters():
            p.normal_(0, 0.02)
    other.half().save_pretrained(pipe / "text_encoder", variant="fp16")
    return pipe


def _parts(pipe: Path, variant: str | None = None):
    from snapbench.backbones import resolve_model
    from snapbench.converters.app_parts import model_folder
    from snapbench.converters.pipeline import plan_parts

    source = resolve_model(pipe, variant=variant)
    return plan_parts(source, ConvertOptions(latent=LATENT, tokens=TOKENS), model_folder(pipe, None),
                      vae_encoder=True)


def _fp16_token_embedding(pipe: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    state = load_file(str(pipe / "text_encoder" / "model.fp16.safetensors"))
    return next(t for k, t in state.items() if k.endswith("token_embedding.weight"))


def test_folder_with_only_fp16_variants_converts_and_says_so(tmp_path):
    pipe = _variant_pipeline(tmp_path, plain=False)
    parts = _parts(pipe)
    te = next(p for p in parts if p.name == "TextEncoder")
    module, _ = te.build()
    got = module.clip.get_input_embeddings().weight
    assert got.dtype == torch.float32 and torch.equal(got, _fp16_token_embedding(pipe).float())
    for p in parts:
        if p.kind in ("vae_decoder", "vae_encoder"):
            assert {t.dtype for t in p.build()[0].parameters()} == {torch.float32}

    from snapbench.converters.pipeline import weights_note

    note = weights_note(parts)
    assert note is not None
    for path in ("text_encoder/model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors",
                 "unet/diffusion_pytorch_model.fp16.safetensors"):
        assert path in note


def test_folder_with_both_variants_reads_plain_unless_fp16_is_asked(tmp_path):
    """diffusers' rule: the plain files by default; --variant fp16 reads fp16 where a part has it."""
    pipe = _variant_pipeline(tmp_path, plain=True)
    fp16 = _fp16_token_embedding(pipe).float()

    plain_parts = _parts(pipe)
    te = next(p for p in plain_parts if p.name == "TextEncoder").build()[0]
    assert not torch.equal(te.clip.get_input_embeddings().weight, fp16)
    fp16_parts = _parts(pipe, variant="fp16")
    te = next(p for p in fp16_parts if p.name == "TextEncoder").build()[0]
    assert torch.equal(te.clip.get_input_embeddings().weight, fp16)

    from snapbench.converters.pipeline import weights_note

    note = weights_note(plain_parts)
    assert note is not None and "fp16" not in note and "text_encoder/model.safetensors" in note
    note = weights_note(fp16_parts)
    assert note is not None and "text_encoder/model.fp16.safetensors (fp16 variant)" in note
    # another variant is another package: the cache keys differ
    assert ({p.name: p.identity["read"] for p in plain_parts} != {p.name: p.identity["read"] for p in fp16_parts})
