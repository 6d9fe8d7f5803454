"""snapbench report: the data behind the page, the page itself, and bad input (no browser here).

Latencies come from the real latency package run with the profile tests' fakes (packages that are not
converted, a toy estimator keyed by package name): the numbers are fixture-only, but the documents are the
real `snapbench profile --json` documents, so the report is tested against the contract it reads.
"""

from __future__ import annotations

import functools
import json
import math

import pytest
from profile_fakes import FakePackages, toy_estimator

from snapbench.backbones import resolve_model
from snapbench.cli import main
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.report import gather_data as report_data
from snapbench.report.gather_data import default_out_path, gather, parse_steps
from snapbench.report.latency_source import ProfileOutcome, backend_label, profile_with_snapbench
from snapbench.report.render import render_html
from snapbench.report.write import write_report
from snapbench.specs.presets import load_preset
from snapbench.specs.stages import STAGES

BASE, CAND, DEVICE = "sd15-tiny", "snapfusion-tiny", "iphone14pro"


def fake_profiler(tmp_path, **extra):
    """The real profiling path with fakes for conversion and estimation (fixture-only latencies)."""
    return functools.partial(profile_with_snapbench, packages=FakePackages(tmp_path / "pkgs"),
                             estimator=toy_estimator(), progress=False, **extra)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    return gather(baseline=BASE, candidates=[CAND], devices=[resolve_device(DEVICE)], profiler=fake_profiler(tmp),
                  table=None), tmp


def result(doc, model, device=DEVICE):
    return next(r for r in doc["results"] if r["model"] == model and r["device"] == device)


def test_summary_figures_follow_the_formula(report):
    data, _ = report
    doc = data.to_dict()  # the JSON document `report --json` writes
    base, cand = result(doc, BASE), result(doc, CAND)
    models = {m["key"]: m for m in doc["models"]}
    assert models[BASE]["steps"] == 50 and models[CAND]["steps"] == 8  # SnapFusion is step-distilled to 8
    for r in (base, cand):
        assert r["available"] and r["labels"] == ["estimated"]
        c = {k: v["ms"] for k, v in r["components"].items()}
        expected = 2 * c["text_encoder"] + r["steps"] * c["unet"] + c["vae_decoder"]
        assert math.isclose(r["budget"]["total_ms"], expected)
        assert math.isclose(r["budget"]["total_s"], expected / 1000)
        # the UNet per step is the sum of its blocks, and the stages partition the blocks
        assert math.isclose(sum(s["ms"] for s in r["stages"]), r["block_latency_sum_ms"], rel_tol=1e-3)
        shares = [b["latency_share"] for b in r["blocks"] if b["latency_share"] is not None]
        assert math.isclose(sum(shares), 1.0, rel_tol=1e-9)
        peak = doc["devices"][0]["fp16_peak_tflops"]
        for b in r["blocks"]:
            if b["latency_ms"]:
                assert math.isclose(b["tflops"], 2 * b["macs"] / (b["latency_ms"] / 1e3) / 1e12)
                assert math.isclose(b["peak_share"], b["tflops"] / peak)
    assert math.isclose(cand["speedup_e2e"], base["budget"]["total_ms"] / cand["budget"]["total_ms"])
    assert math.isclose(cand["speedup_unet_step"], base["components"]["unet"]["ms"] / cand["components"]["unet"]["ms"])
    assert base["speedup_e2e"] is None


def test_architecture_marks_removed_and_added_blocks(report):
    data, _ = report
    doc = data.to_dict()  # the JSON document `report --json` writes
    cand = next(m for m in doc["models"] if m["key"] == CAND)
    counts = load_preset(CAND).counts()
    assert [(a["stage"], a["CA"], a["RB"]) for a in cand["architecture"]] == [
        (s, counts[s]["CA"], counts[s]["RB"]) for s in STAGES]
    changes = {b["id"]: b["change"] for b in result(doc, CAND)["blocks"]}
    assert changes["CA[Down-1, 1]"] == "removed"
    assert changes["CA[Up-1, 1] (copy 1)"] == "added"
    assert changes["RB[Down-1, 1]"] is None
    # a block that runs nothing has no latency, and is not pretended to cost 0 ms in the table
    removed = next(b for b in result(doc, CAND)["blocks"] if b["id"] == "CA[Down-1, 1]")
    assert removed["latency_ms"] is None and not removed["runs"]


def test_page_is_self_contained_and_shows_both_models(report):
    data, _ = report
    html = render_html(data)
    for needle in (BASE, CAND, *STAGES, "Provenance", "How these numbers were made", "estimated"):
        assert needle in html
    assert "<script" not in html.lower()
    lowered = html.lower()
    for external in ('src="http', "src='http", 'href="http', "@import", "url(http", "@font-face"):
        assert external not in lowered


def test_json_beside_html_is_the_data(report, tmp_path):
    data, _ = report
    doc = data.to_dict()  # the JSON document `report --json` writes
    html_path, json_path = write_report(data, tmp_path / "r.html", with_json=True)
    assert json_path == tmp_path / "r.json"
    assert json.loads(json_path.read_text()) == json.loads(json.dumps(doc, default=str))
    assert html_path.read_text().startswith("<!DOCTYPE html>")
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_no_latency_means_no_figure(tmp_path):
    """When the profiler cannot answer, the report says why and shows no latency at all."""
    def unavailable(*_a, **_k):
        return ProfileOutcome(None, "no profiler here (test)")

    data = gather(baseline=BASE, candidates=[CAND], devices=[resolve_device(DEVICE)], profiler=unavailable)
    doc = data.to_dict()  # the JSON document `report --json` writes
    for r in doc["results"]:
        assert not r["available"] and r["budget"] is None and r["components"] == {} and r["blocks"] == []
    assert doc["latency_labels"] == []
    html = render_html(data)
    assert "no profiler here (test)" in html
    assert "not available" in html


def test_each_model_is_cut_once_and_its_inspected_blocks_are_the_ones_priced(tmp_path, monkeypatch):
    """Cutting is most of a report of tiny models: the inspection is cut at the priced settings (fp32 here,
    so its signatures say fp32) and the profiler prices those blocks, on every device, without cutting again."""
    from snapbench.backbones.unet import UNetBackbone

    cut_models: list[str] = []
    real_cut = UNetBackbone.cut

    def counting_cut(self, model, shapes, **kw):
        cut_models.append(model.spec.name)
        return real_cut(self, model, shapes, **kw)

    monkeypatch.setattr(UNetBackbone, "cut", counting_cut)
    devices = [resolve_device(DEVICE), resolve_device("iphone15pro")]
    data = gather(baseline=BASE, candidates=[CAND], devices=devices, profiler=fake_profiler(tmp_path),
                  settings={"precision": "fp32"})
    assert sorted(cut_models) == sorted([BASE, CAND])  # once per model, not once more per device
    doc = data.to_dict()
    assert len(doc["results"]) == 4
    for r in doc["results"]:
        runs = [b for b in r["blocks"] if b["runs"]]
        assert runs and all(b["latency_ms"] is not None for b in runs)  # every inspected block was priced
        assert all(b["signature"].split("|")[-2] == "fp32" for b in runs)

class DecoderlessPackages(FakePackages):
    """Fake packages whose VAE decoder cannot be converted (a gap in the tools, not bad input)."""

    def component_package(self, component, source, settings, *, progress):
        if component == "vae_decoder":
            raise SnapbenchError("converters returned no package for vae_decoder (test)")
        return super().component_package(component, source, settings, progress=progress)


def test_a_part_that_cannot_be_profiled_is_missing_not_invented(tmp_path):
    profiler = functools.partial(profile_with_snapbench, packages=DecoderlessPackages(tmp_path / "p"),
                                 estimator=toy_estimator(), progress=False)
    data = gather(baseline=BASE, candidates=[CAND], devices=[resolve_device(DEVICE)], profiler=profiler)
    doc = data.to_dict()  # the JSON document `report --json` writes
    r = result(doc, BASE)
    assert r["available"] and r["components"]["unet"]["ms"] and r["components"]["text_encoder"]["ms"]
    assert r["components"]["vae_decoder"]["ms"] is None
    assert r["components"]["vae_decoder"]["label"] == "not available"
    assert r["budget"] is None and result(doc, CAND)["speedup_e2e"] is None
    assert result(doc, CAND)["speedup_unet_step"]  # the UNet figures still compare
    assert any("vae decoder" in n and "(test)" in n for n in r["notes"])
    assert "converters returned no package for vae_decoder (test)" in render_html(data)


def test_table_lacking_rows_is_estimated_and_said(tmp_path):
    """A table with rows for another model: the candidate's missing signatures are estimated, and the page
    names the table and says so."""
    from snapbench.latency.model_latency import profile_model
    from snapbench.latency.table import Settings

    # sd15-tiny's own latent (its config's sample_size), which the report uses unless told otherwise
    run = profile_model(resolve_model(BASE), resolve_device(DEVICE), Settings(latent=8), backend="estimate", packages=FakePackages(tmp_path / "p"),
                        estimator=toy_estimator(), progress=False)
    table = tmp_path / "table.csv"
    run.table.save(table)
    data = gather(baseline=BASE, candidates=[CAND], devices=[resolve_device(DEVICE)], table=table, profiler=fake_profiler(tmp_path))
    doc = data.to_dict()  # the JSON document `report --json` writes
    base_notes = " ".join(result(doc, BASE)["notes"])
    cand_notes = " ".join(result(doc, CAND)["notes"])
    assert f"every figure read from {table}" in base_notes
    assert f"{table} lacked current rows" in cand_notes and "estimated" in cand_notes
    assert str(table) in render_html(data)


def test_parse_steps():
    assert parse_steps(["snapfusion=4", "sd15=25"]) == {"snapfusion": 4, "sd15": 25}
    for bad in ("snapfusion", "=3", "sd15=x", "sd15=0"):
        with pytest.raises(SnapbenchError):
            parse_steps([bad])


def test_steps_override_and_reference_points(tmp_path):
    """--steps changes the budget; a reference file's rows sit beside the report's own figures."""
    ref = tmp_path / "ref.csv"
    ref.write_text("source,device,model,component,latency_ms,per,runtime,attention,weight_bits,batch,notes\n"
                   f"my-bench,{DEVICE},{BASE},unet,2.5,denoising step,Core ML,split_einsum_v2,16,2,typed in\n"
                   "other,iphone12,sd15,unet,3000,denoising step,,,,,\n")
    data = gather(baseline=BASE, candidates=[CAND], devices=[resolve_device(DEVICE)], steps={CAND: 4}, reference=ref,
                  profiler=fake_profiler(tmp_path))
    doc = data.to_dict()  # the JSON document `report --json` writes
    m = next(m for m in doc["models"] if m["key"] == CAND)
    assert (m["steps"], m["steps_source"]) == (4, "--steps")
    r = result(doc, CAND)
    assert math.isclose(r["budget"]["unet_ms"], 4 * r["components"]["unet"]["ms"])

    rows = doc["reference"]["rows"]
    assert doc["reference"]["source"] == str(ref)
    mine = rows[0]
    ours = result(doc, BASE)["components"]["unet"]["ms"]
    assert mine["ours_ms"] == ours and math.isclose(mine["ratio"], ours / 2.5)
    assert mine["settings_differ"] == ["attention split_einsum_v2 there, original here"]
    assert mine["ours_status"] == "matched"
    assert rows[1]["ours_ms"] is None and rows[1]["ours_status"] == "absent"  # shown, not matched
    html = render_html(data)
    assert "my-bench" in html and "typed in" in html


def test_shipped_reference_is_the_calibration_file():
    source, rows = report_data.load_reference(None)
    assert {r["source"] for r in rows} >= {"snapfusion-table1"}
    assert any(r["model"] == "sd15" and r["component"] == "unet" and r["latency_ms"] == 1700 for r in rows)


def test_trajectory_of_an_evolve_output_is_charted(tmp_path):
    """An evolve output's trajectory.csv (written by evolve's own writer) is charted beside its arch.json."""
    from snapbench.evolution.trajectory import write_trajectory

    folder = tmp_path / "evo"
    folder.mkdir()
    spec = load_preset(CAND).to_dict()
    spec["name"] = "evolved"
    (folder / "arch.json").write_text(json.dumps(spec))
    write_trajectory([
        {"iteration": 0, "phase": "start", "action": "start", "latency_ms": 10.0, "latency_backend": "estimate",
         "quality": 0.90},
        {"iteration": 1, "phase": "remove", "action": "A-", "block": "CA[Up-3, 1]", "latency_ms": 8.0,
         "latency_backend": "estimate", "quality": 0.89, "quality_delta": -0.01, "latency_delta_ms": -2.0,
         "value": 0.005},
        {"iteration": 1, "phase": "train", "action": "train", "latency_ms": 8.0, "latency_backend": "estimate",
         "train_steps": 5},  # not evaluated: no quality, no point on the chart
        {"iteration": 2, "phase": "add", "action": "A+", "block": "CA[Up-1, 2]", "latency_ms": 8.5,
         "latency_backend": "estimate+iphone", "quality": 0.91},
    ], folder / "trajectory.csv")
    data = gather(baseline=BASE, candidates=[str(folder / "arch.json")], devices=[resolve_device(DEVICE)],
                  profiler=lambda *a, **k: ProfileOutcome(None, "not needed here"))
    doc = data.to_dict()  # the JSON document `report --json` writes
    traj = next(m for m in doc["models"] if m["key"] == "evolved")["trajectory"]
    assert traj["problem"] is None
    assert [r["latency_ms"] for r in traj["rows"]] == [10.0, 8.0, 8.0, 8.5]
    assert [r["label"] for r in traj["rows"]] == ["estimated", "estimated", "estimated", "mixed"]
    html = render_html(data)
    assert "Evolution trajectory" in html and "evolved: evolution trajectory (3 evaluated steps)" in html
    assert "CA[Up-1, 2]" in html


def test_a_broken_trajectory_is_reported_not_fatal(tmp_path):
    spec = load_preset(CAND).to_dict()
    (tmp_path / "arch.json").write_text(json.dumps(spec))
    (tmp_path / "trajectory.csv").write_text("iteration,latency_ms\n0,1.0\n")
    data = gather(baseline=BASE, candidates=[str(tmp_path / "arch.json")], devices=[resolve_device(DEVICE)],
                  profiler=lambda *a, **k: ProfileOutcome(None, "not needed here"))
    doc = data.to_dict()  # the JSON document `report --json` writes
    assert "missing column" in doc["models"][1]["trajectory"]["problem"]
    assert "Trajectory not shown" in render_html(data)


def test_default_out_path(report):
    data, _ = report
    assert str(default_out_path(data)) == f"reports/{BASE}-vs-{CAND}-{DEVICE}.html"


def test_backend_labels():
    assert [backend_label(b) for b in ("iphone", "mac", "import", "estimate", "mixed", None, "magic")] == [
        "measured", "measured", "imported", "estimated", "mixed", "unlabelled", "unlabelled"]


# -- the command ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_command_two_devices_html_and_json(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sub" / "r.html"
    argv = ["report", "-b", BASE, "-c", CAND, "-d", "iPhone 14 Pro", "-d", "iphone12promax",
            "--out", str(out), "--json"]
    assert main(argv, obj=fake_profiler(tmp_path)) == 0
    printed = capsys.readouterr()
    assert printed.out.split() == [str(out), str(out.with_suffix(".json"))]
    doc = json.loads(out.with_suffix(".json").read_text())
    # the headline numbers on stderr, the same as the report's
    sf = result(doc, CAND, "iphone12promax")
    line = next(x for x in printed.err.splitlines() if x.startswith(f"{CAND} on iphone12promax: "))
    assert f"{sf['components']['unet']['ms']:.1f} ms/step" in line and f"{sf['speedup_e2e']:.1f}x end to end" in line
    assert f"{sf['budget']['total_s']:.2f} s per image" in line
    assert doc["command"].startswith(f"snapbench report --baseline {BASE} --candidate {CAND} --device 'iPhone 14 Pro'")
    assert [d["id"] for d in doc["devices"]] == [DEVICE, "iphone12promax"]
    assert {(r["model"], r["device"]) for r in doc["results"]} == {
        (m, d) for m in (BASE, CAND) for d in (DEVICE, "iphone12promax")}
    assert all(result(doc, CAND, d)["speedup_e2e"] for d in (DEVICE, "iphone12promax"))
    html = out.read_text()
    assert 'data-device="iphone12promax"' in html and html.count('class="stage-table"') == 2


@pytest.mark.parametrize("args, words", [
    (["-b", "no-such-model"], "unknown model preset"),
    (["-c", "no/such/arch.json"], "no such"),
    (["-d", "iphone99"], "unknown device"),
    (["--steps", "sd15-tiny"], "MODEL=N"),
    (["--steps", "nobody=3"], "not a model of this report"),
    (["--table", "missing.csv"], "no such latency table"),
    (["--reference", "missing.csv"], "no such reference file"),
    (["--backend", "abacus"], "--backend"),
    (["--backend", "import"], "snapbench profile --backend import"),
    (["--weight-bits", "5"], "--weight-bits"),
    (["--out", "{tmp}"], "is a folder"),
    (["--out", "{tmp}/file.txt/r.html"], "is a file, not a folder"),
    (["--out", "{tmp}/r.json"], "--json writes"),
    (["--app-floor-ms", "-1"], "0 ms or more"),
])
def test_bad_input_one_line_exit_2(tmp_path, monkeypatch, capsys, args, words):
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    base = ["report", "-b", BASE, "-c", CAND]
    assert main(base + args, obj=lambda *a, **k: pytest.fail("bad input must fail before profiling")) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err
    assert not list(tmp_path.glob("reports/*"))


def test_backend_not_available_here_is_one_line(tmp_path, monkeypatch, capsys):
    """On Linux the iphone backend cannot run: the profiler's own one-line error, exit 2, no file."""
    import sys

    if sys.platform == "darwin":
        pytest.skip("a Mac may have the iphone backend")
    out = tmp_path / "r.html"
    assert main(["report", "-b", BASE, "-c", CAND, "--backend", "iphone", "--out", str(out)],
                obj=fake_profiler(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "iphone" in err, err
    assert not out.exists()


def test_measured_load_times_reach_the_report(tmp_path):
    """Rows measured on a (fake) phone carry first and warm load times: the report shows them per component."""
    from profile_fakes import fake_device_backend

    from snapbench.latency.model_latency import profile_model
    from snapbench.latency.table import Settings

    be, _ = fake_device_backend(tmp_path, warmup=0, repeats=2)

    def on_the_phone(source, device, settings, backend, table, say=None, cut=None):
        run = profile_model(source, device, Settings(**settings), backend=be, estimator=toy_estimator(),
                            packages=FakePackages(tmp_path / "pkgs"), progress=False, cut=cut)
        return ProfileOutcome.of(run)

    data = gather(baseline=BASE, candidates=[], devices=[resolve_device(DEVICE)], profiler=on_the_phone)
    doc = data.to_dict()  # the JSON document `report --json` writes
    r = result(doc, BASE)
    assert r["labels"] == ["measured"] and r["measured_on"]["os_build"] == "22B83"
    runs = sum(1 for b in r["blocks"] if b["runs"])
    assert r["load_ms"]["unet"] == {"first": 60_000.0 * runs, "warm": 900.0 * runs}
    assert r["load_ms"]["vae_decoder"] == {"first": 60_000.0, "warm": 900.0}
    html = render_html(data)
    assert "Loading before the first image (measured)" in html and "Test iPhone (18.1, build 22B83)" in html
    assert f"{60.0 * runs:.1f}" in html


def test_your_app_floor_is_beside_the_engine_budget_never_in_it(tmp_path, report):
    data, _ = report
    doc = data.to_dict()  # the JSON document `report --json` writes
    floored = gather(baseline=BASE, candidates=[CAND], devices=[resolve_device(DEVICE)], profiler=fake_profiler(tmp_path),
                     table=None, app_floor_ms=2.0)
    for model in (BASE, CAND):
        engine, mine = result(doc, model)["budget"], result(floored.to_dict(), model)["budget"]
        assert mine["total_s"] == engine["total_s"] and "in_app_s" not in engine
        calls = report_data.TEXT_ENCODER_RUNS + result(floored.to_dict(), model)["steps"] + 1
        assert mine["in_app_s"] == pytest.approx(engine["total_s"] + calls * 2.0 / 1000)
    assert 'data-in-app="' in render_html(floored) and 'data-in-app="' not in render_html(data)
