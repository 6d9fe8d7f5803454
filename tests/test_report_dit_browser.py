"""A DiT report opened in headless Chromium: offline, drawn, TB stages and Table 3's kept / removed / copied /
swapped transformer blocks shown, and every number on the page the JSON's.

Models are the tiny twins cut by the real DiT backbone; latencies come from the real latency package with
the profile tests' fakes (fixture-only numbers).
"""

from __future__ import annotations

import functools
import io
import json

import pytest
from profile_fakes import FakePackages, toy_estimator
from report_page import ARGS, BROWSER_MARKS, CELLS_JS, CHROMIUM, assert_cells_match

from snapbench.devices.catalog import resolve_device
from snapbench.dit.spec import load_preset
from snapbench.report.gather_data import gather
from snapbench.report.latency_source import profile_with_snapbench
from snapbench.report.write import write_report

pytestmark = BROWSER_MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")

EVIL = '<script>alert("x")</script>'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dit-browser")
    spec = load_preset("pixart-sigma-tiny").to_dict()
    spec["name"] = "evolved" + EVIL
    spec["stages"] = {"DiT-1": [{"block": "TB1", "kv_heads": 1}], "DiT-2": [{"block": "TB2", "keep": False}],
                      "DiT-3": [{"block": "TB3", "copies": 1}]}
    (tmp / "dit.json").write_text(json.dumps(spec))
    profiler = functools.partial(profile_with_snapbench, packages=FakePackages(tmp / "pkgs"),
                                 estimator=toy_estimator(), progress=False)
    data = gather(baseline="pixart-sigma-tiny", candidates=[str(tmp / "dit.json")], devices=[resolve_device("iphone15pro")],
                  profiler=profiler)
    html, js = write_report(data, tmp / "report.html", with_json=True)
    return html, json.loads(js.read_text())


@pytest.fixture(scope="module")
def page(built):
    html, _ = built
    requests, errors = [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1366, "height": 900})
        pg.on("request", lambda r: requests.append(r.url))
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(html.resolve().as_uri(), wait_until="load")
        yield pg, requests, errors
        browser.close()


def test_offline_and_drawn(page, built):
    from PIL import Image, ImageStat

    pg, requests, errors = page
    assert requests == [built[0].resolve().as_uri()] and errors == []
    chart = pg.locator("#fig2 figure").first.screenshot()
    assert ImageStat.Stat(Image.open(io.BytesIO(chart)).convert("L")).var[0] > 100
    assert pg.locator("script").count() == 0 and EVIL in pg.inner_text("body")


def test_table3_shows_each_transformer_block_change(page):
    pg = page[0]
    chips = pg.eval_on_selector_all("#architecture .chip.TB", "els => els.map(e => [e.innerText.trim(), e.className])")
    by_id = {text.split(" ")[0] + " " + text.split(" ")[1]: cls for text, cls in chips}
    assert "removed" in by_id["TB[DiT-2, 2]"]
    assert "swapped" in by_id["TB[DiT-1, 1]"] and any("(MQA)" in t for t, _ in chips)
    assert sum("copy" in cls for _, cls in chips) == 1
    row = pg.locator("#architecture tr", has_text="DiT-3").first.inner_text()
    assert "1 \u2192 2" in row  # one block in the baseline's stage, two (a copy) in the candidate's
    headers = pg.locator("#fig2 .stage-table thead").first.inner_text()
    assert "TB params" in headers and "TB ms" in headers and "CA" not in headers
    blocks = pg.locator("#blocks .block-table").nth(1).inner_text()
    assert "SWAPPED: MQA" in blocks.upper() and "REMOVED" in blocks.upper()  # tags print in capitals


def test_numbers_on_the_page_are_the_json_numbers(page, built):
    data = built[1]
    cells = page[0].eval_on_selector_all("[data-json]", CELLS_JS)
    paths = {c[0] for c in cells}
    assert {"results.0.stages.1.tb_ms", "models.1.stage_params.3.tb_params", "results.1.components.unet.ms"} <= paths
    # the whole pipeline is priced: text encoders and decoder, and the end-to-end budget
    assert {"results.0.components.text_encoder.ms", "results.1.components.vae_decoder.ms",
            "results.0.budget.total_s", "results.1.budget.text_encoder_ms"} <= paths
    assert_cells_match(cells, data)
