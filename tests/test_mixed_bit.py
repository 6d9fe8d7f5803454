"""Mixed-bit palettization: `compress analyze` (per-layer sensitivity -> recipes) and `convert --recipe`,
on sdxl-tiny and its shallow twin (tests/model_refs.py) with real k-means palettes and real coremltools
conversions."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from model_refs import SDXL_SHALLOW, SDXL_SHALLOW_NAME
from package_ops import lut_ops

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.converters.mixed_bit import RECIPE_FORMAT, compressible_layers, fingerprint, layers_digest
from snapbench.converters.sensitivity import SensitivityOptions, bytes_at, choose_bits

FAST = SensitivityOptions(latent=8, samples=1, tokens=4, widths=(2, 4))  # 8 bits: 256-entry k-means, slower


def _layers(ref: str) -> dict[str, int]:
    from snapbench.backbones import backbone_for

    source = resolve_model(ref)
    with torch.device("meta"):
        return compressible_layers(backbone_for(source).build(source, device="meta"))


@pytest.mark.slow
def test_every_compressible_layer_is_measured_on_its_block(recipes):
    sdxl_table = pd.read_csv(recipes / f"{SDXL_SHALLOW_NAME}-sensitivity.csv")  # analyze_sensitivity(..., FAST)
    layers = _layers(SDXL_SHALLOW)
    assert sorted(sdxl_table["layer"]) == sorted(layers)
    assert dict(zip(sdxl_table["layer"], sdxl_table["elements"])) == layers
    assert "add_embedding.linear_1" in layers and sdxl_table.set_index("layer").loc["add_embedding.linear_1", "block"] \
        == "TextTimeEmbedding"
    # fewer bits, less of the block's output: fp16 rounding beats a 4-bit table beats a 2-bit one
    t = sdxl_table
    assert (t["psnr_16"] >= t["psnr_4"]).mean() > 0.95 and (t["psnr_4"] > t["psnr_2"]).mean() > 0.95
    assert t["psnr_2"].median() < t["psnr_4"].median() <= t["psnr_16"].median()


def test_choose_bits_spends_the_budget_on_the_sensitive_layer():
    table = pd.DataFrame([
        {"layer": "touchy", "elements": 10_000, "psnr_2": 5.0, "psnr_4": 20.0, "psnr_8": 45.0, "psnr_16": 90.0},
        {"layer": "robust", "elements": 10_000, "psnr_2": 60.0, "psnr_4": 70.0, "psnr_8": 80.0, "psnr_16": 90.0},
    ])
    bits = choose_bits(table, target_bits=6)
    assert bits == {"touchy": 8, "robust": 2}
    assert sum(bytes_at(10_000, b) for b in bits.values()) <= 20_000 * 6 / 8
    assert choose_bits(table, target_bits=16) == {"touchy": 16, "robust": 16}
    from snapbench.errors import SnapbenchError

    with pytest.raises(SnapbenchError, match="under the"):
        choose_bits(table, budget_bytes=100)


def test_fingerprint_survives_reshape_and_transpose():
    w = torch.randn(64, 32)
    assert fingerprint(w) == fingerprint(w.t().contiguous()) == fingerprint(w.reshape(64, 32, 1, 1).numpy())
    assert fingerprint(w) != fingerprint(w * 1.01)


def _attention_unit(ref: str = "sdxl-tiny", depth: int = 10):
    """A materialised cross-attention block of `ref` (seeded random weights) with `depth` transformer layers."""
    from snapbench.converters.convert_blocks import cut
    from snapbench.converters.options import ConvertOptions
    from snapbench.converters.unet_chunks import materialize_unit
    from snapbench.model.units import AttentionUnit

    meta, blocks = cut(resolve_model(ref), ConvertOptions(latent=8, tokens=4))
    block = next(b for b in blocks if isinstance(b.unit, AttentionUnit)
                 and len(b.unit.transformer.transformer_blocks) == depth)
    return materialize_unit(meta, block.unit, None, 0)


@pytest.mark.parametrize("attention", ["original", "split_einsum", "split_einsum_v2"])
def test_stored_fingerprints_are_the_rewritten_modules_weights(attention):
    """What `convert --recipe` and the latency budget's pricer look for is what the attention rewrite
    stores: under split_einsum the query projections scaled by the softmax scale, found only that way."""
    from snapbench.converters.ane_attention import rewrite_transformer
    from snapbench.converters.mixed_bit import stored_fingerprints

    unit = _attention_unit(depth=10)  # 64 channels: its query projections are compressible (64 x 64)
    stored = stored_fingerprints(unit, attention)
    assert len(stored) == len(compressible_layers(unit)) > 0
    rewritten = {fingerprint(p) for p in rewrite_transformer(unit.transformer, attention).parameters()}
    assert set(stored.values()) <= rewritten
    queries = [n for n in stored if n.endswith("to_q.weight")]
    assert len(queries) == 20  # ten layers, self- and cross-attention
    unscaled = {fingerprint(unit.get_parameter(n)) for n in queries}
    assert unscaled.isdisjoint(rewritten) == (attention != "original")


@pytest.mark.slow  # analysed twice, the first time interrupted
def test_an_interrupted_replayed_analysis_resumes_to_the_whole_reruns_figures(tmp_path):
    """A layer inside a deep block reruns the block from its own transformer layer on; an interrupted
    analysis resumes from the blocks it finished: the same table as every block rerun whole. (The shallow
    twin: two layers per deep block, one replayed before the layer measured, as for any of SDXL's ten.)"""
    from snapbench.converters.sensitivity import analyze_sensitivity

    source = resolve_model(SDXL_SHALLOW)
    opts = SensitivityOptions(latent=4, samples=1, tokens=4, widths=(2,))
    partial = tmp_path / "partial.json"

    def interrupt(message: str) -> None:
        if message.startswith("CA[Down-3, 1]:"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        analyze_sensitivity(source, opts, interrupt, partial=partial)
    before = json.loads(partial.read_text())["blocks"]
    assert "CA[Down-2, 2]" in before and "CA[Down-3, 1]" not in before
    said: list[str] = []
    fast = analyze_sensitivity(source, opts, said.append, partial=partial)
    assert said[0].startswith(f"resuming from {partial}: {len(before)} block(s)")
    assert not [m for m in said[1:] if m.split(":")[0] in before]  # nothing measured twice
    pd.testing.assert_frame_equal(fast, analyze_sensitivity(source, opts, replay=False))
    # the last of a deep block's layers: measured, not skipped (its feed-forward; at latent 4 the deepest level
    # is one position, where self-attention's query and key change nothing)
    deep = fast[fast["layer"].str.contains(r"down_blocks\.2\.attentions\.0\.transformer_blocks\.1\.ff\.")]
    assert len(deep) > 0 and (deep["psnr_2"] < 200).all()


# -- the CLI: analyze, then convert with the recipe -------------------------------------------------------


def _midway(prices) -> float:
    """A latency budget halfway between the quickest recipe and fp16: only a mixed recipe meets it."""
    return round((prices.total_ms(prices.fastest(prices.layer_ms)) + prices.fp16_ms) / 2, 4)


@pytest.fixture(scope="module")
def recipes(tmp_path_factory, sdxl_shallow_prices):
    out = tmp_path_factory.mktemp("recipes")
    # --device prices every recipe at the settings sdxl_shallow_prices has (latent 8, 4 tokens, iPhone 15 Pro)
    assert main(["compress", "analyze", "--model", SDXL_SHALLOW, "--out", str(out), "--latent", str(FAST.latent),
                 "--samples", str(FAST.samples), "--tokens", str(FAST.tokens), "--widths", "2,4", "--bits", "4.5",
                 "--bits", "3", "--device", "iphone15pro", "--price-latent", str(FAST.latent),
                 "--latency-budget-ms", str(_midway(sdxl_shallow_prices)), "--json"]) == 0
    return out


@pytest.mark.slow
def test_analyze_writes_the_table_and_recipes_under_budget(recipes):
    table = pd.read_csv(recipes / f"{SDXL_SHALLOW_NAME}-sensitivity.csv")
    assert list(table.columns) == ["layer", "block", "stage", "elements", "psnr_2", "psnr_4", "psnr_16"]
    for target in (4.5, 3):
        doc = json.loads((recipes / f"{SDXL_SHALLOW_NAME}-{target:g}bit.json").read_text())
        assert doc["format"] == RECIPE_FORMAT and doc["layers_digest"] == layers_digest(_layers(SDXL_SHALLOW))
        assert doc["average_bits"] <= target and set(doc["layers"]) == set(table["layer"])
        assert set(doc["layers"].values()) <= {2, 4, 16} and len(set(doc["layers"].values())) > 1  # mixed
    assert not list(recipes.glob(".*"))  # no temporary files left


@pytest.mark.slow
def test_a_recipe_under_a_latency_budget_spends_it_where_time_is_saved(recipes, sdxl_shallow_prices):
    prices = sdxl_shallow_prices
    budget = _midway(prices)
    doc = json.loads((recipes / f"{SDXL_SHALLOW_NAME}-{budget:g}ms-iphone15pro.json").read_text())
    assert doc["budget"] == {"latency_ms": budget, "device": "iphone15pro"}
    latency = doc["latency"]
    assert latency["label"] == "estimated" and latency["estimator_version"] == prices.estimator_version
    assert latency["ms_per_step"] <= budget < latency["fp16_ms"]
    assert latency["ms_per_step"] == pytest.approx(prices.total_ms(doc["layers"]), abs=1e-4)
    assert len(set(doc["layers"].values())) > 1  # mixed
    # a layer that palettized would not be quicker is never narrowed for time (16 bits is its quickest)
    quickest = prices.fastest(doc["layers"])
    assert all(bits == 16 for layer, bits in doc["layers"].items() if quickest[layer] == 16)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["layers"].update({"down_blocks.9.nothing": 4}), "'down_blocks.9.nothing' does not exist"),
    (lambda d: d["layers"].update({next(iter(d["layers"])): 3}), "3 bits is not supported"),
    (lambda d: d.update({"spec": "sd15-tiny"}), "a recipe for 'sd15-tiny'"),
    (lambda d: d.update({"format": "other"}), "not a mixed-bit recipe"),
    (lambda d: d.update({"layers": {}}), "names no layer"),
])
def test_bad_recipes_are_refused_in_one_line_before_anything_is_written(tmp_path, capsys, change, message):
    layers = _layers("sdxl-tiny")
    doc = {"format": RECIPE_FORMAT, "spec": "sdxl-tiny", "layers_digest": layers_digest(layers),
           "layers": {name: 4 for name in layers}}
    change(doc)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(doc))
    out = tmp_path / "pkgs"
    assert main(["convert", "--model", "sdxl-tiny", "--recipe", str(path), "--latent", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_recipe_with_weight_bits_is_refused(tmp_path, capsys):
    layers = _layers("sdxl-tiny")
    path = Path(tmp_path / "r.json")
    path.write_text(json.dumps({"format": RECIPE_FORMAT, "spec": "sdxl-tiny", "layers_digest": layers_digest(layers),
                                "layers": {name: 4 for name in layers}}))
    assert main(["convert", "--model", "sdxl-tiny", "--recipe", str(path), "--weight-bits", "4",
                 "--out", str(tmp_path / "o")]) == 2
    assert "leave --weight-bits at 16" in capsys.readouterr().err


@pytest.mark.slow
def test_convert_with_a_recipe_palettizes_every_named_layer_once(recipes, tmp_path):
    recipe = recipes / f"{SDXL_SHALLOW_NAME}-3bit.json"
    layers = json.loads(recipe.read_text())["layers"]
    out = tmp_path / "pkgs"
    assert main(["convert", "--model", SDXL_SHALLOW, "--recipe", str(recipe), "--latent", "8", "--tokens", "4",
                 "--out", str(out)]) == 0
    compression = json.loads((out / "manifest.json").read_text())["compression"]
    widths: dict[str, int] = {}
    for bits in layers.values():
        widths[str(bits)] = widths.get(str(bits), 0) + 1
    assert compression["weight_bits"] == "mixed" and compression["layers_by_bits"] == widths
    # one palette per layer below 16 bits, none for the rest: every recipe layer found its constant
    assert lut_ops(*out.glob("*.mlpackage")) == sum(n for bits, n in widths.items() if bits != "16") > 0
    # the figure the recipe states is the estimator's for these packages (deploy mode: one per block); measured
    # 4.797 stated against 4.776 ms priced from the packages on sdxl-tiny (0.4% apart, cause not traced)
    from snapbench.devices.catalog import resolve_device
    from snapbench.profilers.estimate.cost_model import estimate_package

    dev = resolve_device("iphone15pro")
    priced = sum(estimate_package(p, dev).total_ms for p in out.glob("*.mlpackage"))
    assert priced == pytest.approx(json.loads(recipe.read_text())["latency"]["ms_per_step"], rel=0.01)


@pytest.mark.parametrize("budget, message", [
    (["--size-mb", "0.01"], "--size-mb 0.01 is under the"),
    (["--bits", "1.5"], "--bits 1.5 is under the lowest width measured (2 bits)"),
])
def test_a_budget_no_recipe_can_meet_is_refused_before_the_analysis(tmp_path, capsys, budget, message):
    out = tmp_path / "recipes"
    assert main(["compress", "analyze", "--model", "sdxl-tiny", "--out", str(out), "--latent", "8",
                 "--widths", "2,4", *budget]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()  # refused before anything was measured or written
