"""The report opened in headless Chromium: loads offline, not blank, shows what the data says, escapes input.

Latencies come from the real latency package with the profile tests' fakes (fixture-only numbers).
"""

from __future__ import annotations

import functools
import io
import json

import pytest
from profile_fakes import FakePackages, toy_estimator
from report_page import ARGS, BROWSER_MARKS, CELLS_JS, CHROMIUM, assert_cells_match

from snapbench.devices.catalog import resolve_device
from snapbench.report.gather_data import gather
from snapbench.report.latency_source import profile_with_snapbench
from snapbench.report.write import write_report
from snapbench.specs.presets import load_preset
from snapbench.specs.stages import STAGES

pytestmark = BROWSER_MARKS
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")

EVIL = '<script>alert("x")</script><img src="http://example.invalid/x.png">'


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    spec = load_preset("snapfusion-tiny").to_dict()
    spec["name"] = "evil" + EVIL
    spec["description"] = "desc " + EVIL
    (tmp / "evil.json").write_text(json.dumps(spec))
    profiler = functools.partial(profile_with_snapbench, packages=FakePackages(tmp / "pkgs"),
                                 estimator=toy_estimator(), progress=False)
    data = gather(baseline="sd15-tiny", candidates=["snapfusion-tiny", str(tmp / "evil.json")],
                  devices=[resolve_device("iphone14pro")], profiler=profiler)
    html, js = write_report(data, tmp / "report.html", with_json=True)
    return html, json.loads(js.read_text())


@pytest.fixture(scope="module")
def page(built):
    html, _ = built
    requests, failed, errors = [], [], []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1366, "height": 900})
        pg.on("request", lambda r: requests.append(r.url))
        pg.on("requestfailed", lambda r: failed.append(r.url))
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(html.resolve().as_uri(), wait_until="load")
        yield pg, requests, failed, errors
        browser.close()


def test_loads_offline_with_one_request(page, built):
    pg, requests, failed, errors = page
    assert requests == [built[0].resolve().as_uri()]
    assert failed == [] and errors == []


def _variance(png: bytes) -> float:
    from PIL import Image, ImageStat

    return ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).var[0]


def test_screenshot_is_not_blank(page, tmp_path):
    pg = page[0]
    assert _variance(pg.screenshot()) > 100
    assert _variance(pg.locator("#fig2 figure").first.screenshot()) > 100  # the chart drew something
    pg.emulate_media(media="print")
    try:
        assert _variance(pg.screenshot(full_page=False)) > 100
    finally:
        pg.emulate_media(media="screen")


def test_dom_shows_stages_and_models(page):
    text = page[0].inner_text("body")
    for name in (*STAGES, "sd15-tiny", "snapfusion-tiny"):
        assert name in text
    assert page[0].locator("svg").count() >= 2  # Fig. 2 and the budget chart, inline


def test_numbers_in_the_dom_are_the_json_numbers(page, built):
    data = built[1]
    cells = page[0].eval_on_selector_all("[data-json]", CELLS_JS)
    assert len(cells) > 200
    paths = {c[0] for c in cells}
    for wanted in ("results.0.components.unet.ms", "results.1.budget.total_s", "results.1.speedup_e2e",
                   "results.0.stages.0.ca_ms", "models.1.stage_params.6.rb_params", "results.1.blocks.3.tflops"):
        assert wanted in paths
    assert_cells_match(cells, data)


def test_user_strings_are_escaped(page):
    pg = page[0]
    assert pg.locator("script").count() == 0
    assert pg.locator("img").count() == 0
    assert EVIL in pg.inner_text("body")


def test_printable(page):
    pdf = page[0].pdf(format="A4", landscape=True, print_background=True)
    assert pdf.startswith(b"%PDF") and len(pdf) > 20_000
