"""snapbench report for diffusion transformers: transformer blocks (TB) per block and per stage, Table 3's
kept / removed / copied / swapped view, and a UNet against a DiT refused in one line.

Models are the DiT presets' tiny twins, cut by the real DiT backbone; latencies come from the real latency
package with the profile tests' fakes (packages not converted, a toy estimator keyed by package name), so
the figures are fixture-only but every one is labelled as the real path labels it.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
from profile_fakes import FakePackages, toy_estimator

from snapbench.cli import main
from snapbench.commands.report import headline
from snapbench.devices.catalog import resolve_device
from snapbench.dit.spec import load_preset
from snapbench.errors import SnapbenchError
from snapbench.report.gather_data import gather
from snapbench.report.latency_source import profile_with_snapbench
from snapbench.report.render import render_html

BASE, DEVICE = "pixart-sigma-tiny", "iphone16promax"
UNET_KEYS = {"CA", "RB", "CA_swapped", "RB_swapped", "ca_params", "rb_params", "ca_ms", "rb_ms"}


def evolved_twin(tmp_path):
    """pixart-sigma-tiny as an evolved run writes it (dit.json): TB1 swapped for MQA, TB2 removed, TB3 copied."""
    spec = load_preset(BASE).to_dict()
    spec["name"] = "pixart-evolved"
    spec["stages"] = {"DiT-1": [{"block": "TB1", "kv_heads": 1}], "DiT-2": [{"block": "TB2", "keep": False}],
                      "DiT-3": [{"block": "TB3", "copies": 1}]}
    path = tmp_path / "dit.json"
    path.write_text(json.dumps(spec))
    return str(path)


def profiler(tmp_path):
    return functools.partial(profile_with_snapbench, packages=FakePackages(tmp_path / "pkgs"),
                             estimator=toy_estimator(), progress=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dit-report")
    return gather(baseline=BASE, candidates=[evolved_twin(tmp), "sd35-tiny"], devices=[resolve_device(DEVICE)],
                  profiler=profiler(tmp))


def _model(doc, key):
    return next(m for m in doc["models"] if m["key"] == key)


def _result(doc, key):
    return next(r for r in doc["results"] if r["model"] == key)


def test_a_transformer_block_is_its_own_kind(report):
    doc = report.to_dict()
    assert doc["denoiser"]["family"] == "dit" and doc["denoiser"]["kinds"] == ["TB"]
    assert doc["stages"] == ["Embed", "DiT-1", "DiT-2", "DiT-3", "DiT-4", "Final"]
    for m in doc["models"]:
        for row in m["architecture"] + m["stage_params"]:
            assert not UNET_KEYS & set(row), row  # no CA/RB fields dressed up as zeros
    for r in doc["results"]:
        for s in r["stages"]:
            assert not UNET_KEYS & set(s)
            assert math.isclose(s["ms"], s["tb_ms"] + s["aux_ms"])
        assert {b["kind"] for b in r["blocks"]} == {"TB", "aux"}
    base = _model(doc, BASE)
    assert [a["TB"] for a in base["architecture"]] == [0, 1, 1, 1, 0, 0]  # 3 blocks over 4 near-equal runs
    # parameters per stage add up to the model, transformer blocks and auxiliary ones
    assert sum(p["params"] for p in base["stage_params"]) == base["totals"]["params"]
    assert all(p["params"] == p["tb_params"] + p["aux_params"] for p in base["stage_params"])


def test_table3_view_of_an_evolved_dit(report):
    doc = report.to_dict()
    cand = _model(doc, "pixart-evolved")
    arch = {a["stage"]: a for a in cand["architecture"]}
    assert (arch["DiT-1"]["TB"], arch["DiT-1"]["TB_swapped"]) == (1, 1)
    assert [(b["id"], b["status"], b["variant"]) for b in arch["DiT-1"]["blocks"]] == [("TB[DiT-1, 1]", "kept", "MQA")]
    assert (arch["DiT-2"]["TB"], [b["status"] for b in arch["DiT-2"]["blocks"]]) == (0, ["removed"])
    assert (arch["DiT-3"]["TB"], [b["status"] for b in arch["DiT-3"]["blocks"]]) == (2, ["kept", "copy"])
    assert cand["totals"]["TB"] == 3

    base, got = _result(doc, BASE), _result(doc, "pixart-evolved")
    blocks = {b["id"]: b for b in got["blocks"]}
    removed = next(b for b in got["blocks"] if b["status"] == "removed")
    copy = next(b for b in got["blocks"] if b["status"] == "copy")
    assert removed["change"] == "removed" and removed["latency_ms"] is None and not removed["runs"]
    assert copy["change"] == "added"
    # a copy has its original's signature, so its figure is the original's
    original = blocks["TB[DiT-3, 3]"]
    assert copy["signature"] == original["signature"] and copy["latency_ms"] == original["latency_ms"]
    swapped = blocks["TB[DiT-1, 1]"]
    assert swapped["variant"] == "MQA" and swapped["signature"] != _block(base, "TB[DiT-1, 1]")["signature"]
    assert swapped["params"] < _block(base, "TB[DiT-1, 1]")["params"]  # one key/value head instead of two
    # per step: the baseline's blocks, less the removed one, plus the copy, with the swapped block's own figure
    expected = (base["block_latency_sum_ms"] - _block(base, "TB[DiT-2, 2]")["latency_ms"] + copy["latency_ms"]
                - _block(base, "TB[DiT-1, 1]")["latency_ms"] + swapped["latency_ms"])
    assert math.isclose(got["block_latency_sum_ms"], expected)
    assert math.isclose(got["speedup_unet_step"], base["components"]["unet"]["ms"] / got["components"]["unet"]["ms"])


def _block(result, block_id):
    return next(b for b in result["blocks"] if b["id"] == block_id)


def test_every_dit_latency_is_labelled_and_the_whole_pipeline_priced(report):
    doc = report.to_dict()
    for r in doc["results"]:
        assert r["available"] and r["labels"] == ["estimated"]
        assert all(b["label"] == "estimated" for b in r["blocks"] if b["latency_ms"] is not None)
        for c in ("text_encoder", "unet", "vae_decoder"):
            assert r["components"][c]["label"] == "estimated" and r["components"][c]["ms"] > 0
        # end to end at the pipeline's own step count: 2 x text encoders + steps x step + decoder
        te, un, va = (r["components"][c]["ms"] for c in ("text_encoder", "unet", "vae_decoder"))
        assert math.isclose(r["budget"]["total_ms"], 2 * te + r["steps"] * un + va)
        parts = [n for n in r["notes"] if n.startswith("pipeline part ")]
        # each part said, with its size and how its figure was made
        assert all("parameters):" in n and "estimated from its converted package" in n for n in parts)
    models = {m["key"]: m for m in doc["models"]}
    assert (models[BASE]["steps"], models["sd35-tiny"]["steps"]) == (20, 28)  # diffusers' pipeline defaults
    assert "pipeline's default in diffusers" in models[BASE]["steps_source"]
    assert "VAE decoder" in models[BASE]["decoder_source"]
    sd35 = _result(doc, "sd35-tiny")
    names = [n.split(" ")[2] for n in sd35["notes"] if n.startswith("pipeline part ")]
    assert names == ["TextEncoder", "TextEncoder2", "TextEncoderT5", "VAEDecoder"]  # SD3's three encoders
    # the text encoder figure is the three encoders one after another (one prompt)
    per_part = {n.split(" ")[2]: float(n.split("): ")[1].split(" ms")[0]) for n in sd35["notes"]
                if n.startswith("pipeline part ")}
    assert math.isclose(sd35["components"]["text_encoder"]["ms"],
                        sum(v for k, v in per_part.items() if k != "VAEDecoder"), abs_tol=0.2)
    base, evolved = _result(doc, BASE), _result(doc, "pixart-evolved")
    assert math.isclose(evolved["speedup_e2e"], base["budget"]["total_ms"] / evolved["budget"]["total_ms"])
    lines = headline(report).splitlines()
    assert lines[0].startswith(f"{BASE} on {DEVICE}: transformer ") and "UNet" not in "\n".join(lines)


def test_a_part_too_large_to_convert_is_priced_from_two_slices(tmp_path):
    """Slices of 1 and 2 layers, extrapolated to the part's depth; the row says so, the estimate is
    labelled. (Fakes: the toy estimator prices a package by its name.)"""
    from profile_fakes import toy_estimate

    from snapbench.dit.source import resolve_dit
    from snapbench.latency.dit_pipeline import price_dit_pipeline
    from snapbench.latency.table import LatencyTable, Settings

    pk = FakePackages(tmp_path / "pkgs")
    dev = resolve_device(DEVICE)
    settings = Settings(latent=8, tokens=8)
    parts, rows = price_dit_pipeline(resolve_dit(BASE), dev, settings, estimator=toy_estimator(), packages=pk,
                                     slice_above=0)
    t5 = next(p for p in parts if p.name == "TextEncoderT5")
    assert [c[1] for c in pk.calls if c[0] == "part"] == ["TextEncoderT5Slice1", "TextEncoderT5Slice2", "VAEDecoder"]
    e1, e2 = (toy_estimate(pk.root / f"TextEncoderT5Slice{n}.mlpackage", dev).total_ms for n in (1, 2))
    layers = 2  # the tiny twin's T5
    assert math.isclose(t5.latency_ms, round(e1 + (layers - 1) * (e2 - e1), 4))
    assert "1- and 2-layer slices, extrapolated to its 2 layers" in t5.method
    row = next(r for r in rows if r.block == "TextEncoderT5")
    assert row.backend == "estimate" and "slices extrapolated to 2 layers" in row.source and row.batch == 1
    assert row.params == t5.params > 0
    # a table that has the part's row is read, not estimated again
    again, new = price_dit_pipeline(resolve_dit(BASE), dev, settings, table=LatencyTable(rows), estimator=toy_estimator(),
                                    packages=FakePackages(tmp_path / "other"))
    assert new == [] and [p.latency_ms for p in again] == [p.latency_ms for p in parts]
    assert all(p.method == "from the latency table (estimate)" for p in again)


def test_published_count_and_stage_definition_on_the_page(report):
    sd35 = _model(report.to_dict(), "sd35-tiny")
    assert sd35["claimed_params"] is None  # a twin carries no published count of its own
    assert sd35["tokens"] == 8  # priced at its own text length, as `snapbench profile` prices it
    html = render_html(report)
    assert "DiT-1 to DiT-4" in html and "near-equal runs of consecutive blocks" in html
    assert ">pixart-evolved TB</th>" in html
    for unet_word in ("UNet ms", "UNet step", "of UNet", "UNet batch", "UNet latency", "CA params"):
        assert unet_word not in html


def test_unet_against_dit_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SnapbenchError, match="a report compares models of one kind"):
        gather(baseline="sd15-tiny", candidates=[BASE], devices=[resolve_device(DEVICE)], profiler=profiler(tmp_path))
    out = tmp_path / "r.html"
    code = main(["report", "--baseline", BASE, "--candidate", "sd15-tiny", "--device", DEVICE, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "--candidate sd15-tiny is a UNet and --baseline pixart-sigma-tiny a diffusion transformer" in err
    assert not out.exists()
