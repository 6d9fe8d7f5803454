"""`convert --recipe` for the whole UNet (`--whole`) and the app pipeline (`--pipeline`, two UNet chunks): each
recipe layer palettized at its own width in the UNet's packages, on sdxl-tiny's shallow twin (tests/model_refs.py)
with real conversions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from model_refs import SDXL_SHALLOW, SDXL_SHALLOW_NAME
from package_ops import lut_ops

from snapbench.backbones import backbone_for, resolve_model
from snapbench.cli import main
from snapbench.converters.mixed_bit import RECIPE_FORMAT, compressible_layers, layers_digest

SHAPES = ["--latent", "8", "--tokens", "4"]


def _recipe(tmp_path: Path, **change) -> Path:
    """Every compressible layer at 2, 4 or 16 bits in turn (no analysis needed to test applying)."""
    source = resolve_model(SDXL_SHALLOW)
    with torch.device("meta"):
        layers = compressible_layers(backbone_for(source).build(source, device="meta"))
    doc = {"format": RECIPE_FORMAT, "spec": SDXL_SHALLOW_NAME, "layers_digest": layers_digest(layers),
           "layers": {name: (2, 4, 16)[i % 3] for i, name in enumerate(sorted(layers))}}
    doc.update(change)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(doc))
    return path


def _palettized(recipe: Path) -> int:
    return sum(1 for b in json.loads(recipe.read_text())["layers"].values() if b != 16)


@pytest.mark.slow  # a whole (tiny) UNet through coremltools
def test_whole_unet_with_a_recipe_palettizes_every_named_layer_once(tmp_path):
    recipe = _recipe(tmp_path)
    out = tmp_path / "whole"
    assert main(["convert", "--model", SDXL_SHALLOW, "--whole", "--recipe", str(recipe), *SHAPES, "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["compression"]["weight_bits"] == "mixed"
    assert lut_ops(out / "unet.mlpackage") == _palettized(recipe) > 0


@pytest.mark.slow  # five packages
def test_pipeline_with_a_recipe_palettizes_the_unet_chunks_only(tmp_path, capsys):
    recipe = _recipe(tmp_path)
    out = tmp_path / "app"
    assert main(["convert", "--model", SDXL_SHALLOW, "--pipeline", "--chunks", "2", "--attention", "split_einsum_v2",
                 "--recipe", str(recipe), *SHAPES, "--out", str(out)]) == 0
    assert "TextEncoder, TextEncoder2, VAEDecoder: fp16" in " ".join(capsys.readouterr().err.split())  # (wrapped)
    # every recipe layer in one of the two chunks, once; the text encoders and the decoder are not palettized
    assert lut_ops(out / "UnetChunk1.mlpackage", out / "UnetChunk2.mlpackage") == _palettized(recipe) > 0
    assert lut_ops(*(out / f"{n}.mlpackage" for n in ("TextEncoder", "TextEncoder2", "VAEDecoder"))) == 0


@pytest.mark.parametrize("kind", [["--whole"], ["--pipeline", "--chunks", "2"]])
@pytest.mark.parametrize("change, message", [
    ({"layers": {"down_blocks.9.nothing": 4}}, "'down_blocks.9.nothing' does not exist"),
    ({"spec": "sd15-tiny"}, "a recipe for 'sd15-tiny'"),
])
def test_a_recipe_that_does_not_match_is_refused_in_one_line(tmp_path, capsys, kind, change, message):
    out = tmp_path / "pkgs"
    assert main(["convert", "--model", SDXL_SHALLOW, *kind, "--recipe", str(_recipe(tmp_path, **change)), *SHAPES,
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_recipe_is_refused_for_other_components(tmp_path, capsys):
    assert main(["convert", "--model", SDXL_SHALLOW, "--component", "vae_decoder", "--recipe", str(_recipe(tmp_path)),
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--recipe palettizes a UNet's layers" in err
