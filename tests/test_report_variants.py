"""The report's Table-3 view of swapped blocks: SDXL against SnapGen (tiny twins), stage by stage."""

from __future__ import annotations

import pytest
from profile_fakes import FakePackages, toy_estimator

from snapbench.devices.catalog import resolve_device
from snapbench.report.gather_data import gather
from snapbench.report.latency_source import profile_with_snapbench
from snapbench.report.render import render_html
from snapbench.specs.presets import load_preset
from snapbench.specs.variants import Variant

BASE, CAND, DEVICE = "sdxl-tiny", "snapgen-tiny", "iphone16promax"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The real profiling path with the profile tests' fakes for conversion and estimation."""
    import functools

    tmp = tmp_path_factory.mktemp("report")
    profiler = functools.partial(profile_with_snapbench, packages=FakePackages(tmp / "pkgs"),
                                 estimator=toy_estimator(), progress=False)
    return gather(baseline=BASE, candidates=[CAND], devices=[resolve_device(DEVICE)], profiler=profiler, table=None)


def test_variant_labels():
    assert Variant(separable=2).label() == "separable x2"
    assert Variant(kv_heads=1, ff_mult=3, self_attention=False).label() == "MQA, FFN x3, no self-attn"
    assert Variant(kv_heads=4).label() == "GQA 4" and Variant().label() == ""


@pytest.mark.slow
def test_table3_counts_swapped_blocks_per_stage(report):
    models = {m["key"]: m for m in report.to_dict()["models"]}  # the JSON document `report --json` writes
    base, cand = models[BASE], models[CAND]
    assert all(a["CA_swapped"] == a["RB_swapped"] == 0 for a in base["architecture"])
    spec = load_preset(CAND)
    counts = spec.counts()
    for a in cand["architecture"]:
        # every running block of snapgen-tiny is a variant
        assert (a["CA_swapped"], a["RB_swapped"]) == (counts[a["stage"]]["CA"], counts[a["stage"]]["RB"])
    down1 = next(a for a in cand["architecture"] if a["stage"] == "Down-1")
    labels = {b["id"]: b["variant"] for b in down1["blocks"]}
    assert labels["RB[Down-1, 1]"] == "separable x2"
    assert labels["CA[Down-1, 1]"] == "MQA, FFN x3, no self-attn"  # cross-attention from the first stage
    mid = next(a for a in cand["architecture"] if a["stage"] == "Mid")
    assert {b["id"]: b["variant"] for b in mid["blocks"]}["CA[Mid, 1]"] == "MQA, FFN x3"  # self-attention kept


@pytest.mark.slow
def test_page_shows_swapped_chips(report):
    html = render_html(report)
    assert 'class="chip CA kept swapped"' in html
    assert "CA[Down-1, 1] <em>(MQA, FFN x3, no self-attn)</em>" in html
    assert "swapped)</span>" in html
