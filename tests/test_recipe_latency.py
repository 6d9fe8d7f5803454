"""Mixed-bit recipes under a latency budget (`compress analyze --latency-budget-ms`): each layer's op priced by
the estimator at every width (latency/recipe_price.py), on sdxl-tiny's shallow twin (tests/model_refs.py) with real profile-mode packages."""

from __future__ import annotations

import pandas as pd
import pytest
from model_refs import SDXL_SHALLOW, SDXL_SHALLOW_NAME

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.converters.sensitivity import LayerPrices, choose_bits
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.settings import RunSettings

PRICED = RunSettings(latent=8, tokens=4)  # what conftest's sdxl_shallow_prices priced at
ANALYZE = ["--model", SDXL_SHALLOW, "--latent", "8", "--samples", "1", "--tokens", "4", "--widths", "2,4",
           "--device", "iphone15pro", "--price-latent", "8"]


def _prices(layer_ms: dict[str, dict[int, float]], fp16_ms: float) -> LayerPrices:
    return LayerPrices(device="iphone15pro", device_name="iPhone 15 Pro", estimator_version=9, settings={},
                       fp16_ms=fp16_ms, layer_ms=layer_ms)


def test_a_latency_budget_leaves_compute_bound_layers_wide():
    table = pd.DataFrame([
        {"layer": "compute", "elements": 10_000, "psnr_2": 60.0, "psnr_4": 70.0, "psnr_16": 90.0},
        {"layer": "memory", "elements": 10_000, "psnr_2": 5.0, "psnr_4": 20.0, "psnr_16": 90.0},
    ])
    # the compute-bound op costs the same at any width; the memory-bound one saves 0.5 ms at 4 bits
    prices = _prices({"compute": {2: 1.0, 4: 1.0, 16: 1.0}, "memory": {2: 0.2, 4: 0.3, 16: 0.8}}, 2.0)
    bits = choose_bits(table, budget_ms=1.6, prices=prices)
    assert bits == {"compute": 16, "memory": 4}  # robust as it is, compressing "compute" buys nothing
    assert prices.total_ms(bits) == pytest.approx(1.5)
    # by size, the robust layer goes first: the same table, another answer
    assert choose_bits(table, budget_bytes=10_000 * 2 + 10_000 * 4 / 8 + 32)["compute"] == 4
    with pytest.raises(SnapbenchError, match="under the 1.400 ms per step that the smallest recipe"):
        choose_bits(table, budget_ms=1.1, prices=prices)


def test_a_step_that_saves_nothing_is_skipped_for_the_next_width_that_does():
    table = pd.DataFrame([{"layer": "a", "elements": 4096, "psnr_2": 30.0, "psnr_4": 40.0, "psnr_8": 50.0,
                           "psnr_16": 90.0}])
    prices = _prices({"a": {2: 0.5, 4: 1.0, 8: 1.0, 16: 1.0}}, 1.0)  # 8 and 4 bits save nothing, 2 bits does
    assert choose_bits(table, budget_ms=0.9, prices=prices) == {"a": 2}


def test_latency_budget_needs_a_device(tmp_path, capsys):
    out = tmp_path / "recipes"
    assert main(["compress", "analyze", "--model", "sdxl-tiny", "--out", str(out), "--latency-budget-ms", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--latency-budget-ms needs --device" in err, err
    assert not out.exists()


@pytest.fixture
def prices(sdxl_shallow_prices):
    return sdxl_shallow_prices  # latent 8, 4 tokens, iPhone 15 Pro: PRICED


@pytest.mark.slow
def test_layer_prices_add_up_to_the_profile_figure(prices):
    from snapbench.converters.mixed_bit import compressible_layers
    from snapbench.latency.model_latency import profile_model
    from snapbench.latency.table import LatencyTable

    source = resolve_model(SDXL_SHALLOW)
    run = profile_model(source, resolve_device("iphone15pro"), PRICED, table=LatencyTable.empty(),
                        backend="estimate", components=("unet",))
    assert prices.fp16_ms == pytest.approx(run.components["unet"].latency_ms, abs=1e-3 * len(run.blocks))
    import torch

    from snapbench.backbones import backbone_for

    with torch.device("meta"):
        layers = compressible_layers(backbone_for(source).build(source, device="meta"))
    assert set(prices.layer_ms) == set(layers)  # every layer found among its package's ops
    # v9 prices a palette's table as one DRAM fetch at latency: it outlasts the fp16 bytes of the smallest
    # layers (slower palettized) but not those of the large ones (faster)
    gain = {la: ms[2] - ms[16] for la, ms in prices.layer_ms.items()}
    assert min(gain.values()) < 0 < max(gain.values())
    fastest = prices.fastest(layers)
    assert {fastest[la] for la in layers} >= {16, 2}
    assert prices.total_ms(fastest) < min(prices.fp16_ms, prices.total_ms({la: 2 for la in layers}))


@pytest.mark.slow
def test_a_budget_no_recipe_can_meet_names_the_fastest(prices, tmp_path, capsys):
    fastest = prices.total_ms(prices.fastest(prices.layer_ms))
    out = tmp_path / "recipes"
    assert main(["compress", "analyze", *ANALYZE, "--out", str(out),
                 "--latency-budget-ms", f"{fastest * 0.9:.4f}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"the fastest (each layer at its quickest of 2, 4, 16 bits) takes {fastest:.3f} ms per UNet step" in err
    assert "estimator v" in err and "give --latency-budget-ms" in err
    assert not out.exists()  # refused before anything was measured or written


@pytest.mark.slow  # the shallow twin's split_einsum packages: profile mode to price them, deploy mode with a recipe
def test_split_einsum_recipes_are_priced_on_the_layers_convert_palettizes(tmp_path):
    """Under split_einsum the query projections are stored scaled (mixed_bit.stored_fingerprints): the pricer
    finds every layer in its package, `convert --recipe` palettizes each at its width, and the estimator
    prices those packages at the figure the recipe would state."""
    import json

    import torch
    from package_ops import lut_widths

    from snapbench.backbones import backbone_for
    from snapbench.converters.mixed_bit import RECIPE_FORMAT, compressible_layers, layers_digest
    from snapbench.latency.recipe_price import layer_prices
    from snapbench.profilers.estimate.cost_model import estimate_package

    source = resolve_model(SDXL_SHALLOW)
    dev = resolve_device("iphone15pro")
    prices = layer_prices(source, dev, RunSettings(latent=8, tokens=4, attention="split_einsum"), (2, 4))
    with torch.device("meta"):
        layers = compressible_layers(backbone_for(source).build(source, device="meta"))
    assert set(prices.layer_ms) == set(layers)  # the query projections too
    recipe = {name: (2, 4, 16)[i % 3] for i, name in enumerate(sorted(layers))}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps({"format": RECIPE_FORMAT, "spec": SDXL_SHALLOW_NAME, "layers_digest": layers_digest(layers),
                                "layers": recipe}))
    out = tmp_path / "pkgs"
    assert main(["convert", "--model", SDXL_SHALLOW, "--attention", "split_einsum", "--recipe", str(path),
                 "--latent", "8", "--tokens", "4", "--out", str(out)]) == 0
    packages = sorted(out.glob("*.mlpackage"))
    assert lut_widths(*packages) == {b: sum(v == b for v in recipe.values()) for b in (2, 4)}
    priced = sum(estimate_package(p, dev).total_ms for p in packages)
    assert priced == pytest.approx(prices.total_ms(recipe), rel=0.01)  # see README: the gap, measured
