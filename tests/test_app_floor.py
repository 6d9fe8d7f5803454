"""The app floor is the user's: measured from their timing of the one-op package, passed as --app-floor-ms,
shown beside the engine figure and never mixed into it."""

from __future__ import annotations

import json

import pytest

from snapbench.cli import main
from snapbench.errors import SnapbenchError
from snapbench.latency.app_floor import FLOOR_MODEL, check_floor_ms, read_floor_file
from snapbench.zoo.profile import floor_from_file


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SNAPBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path


def _floor_file(path, rows, header="model,device,latency_ms"):
    path.write_text(header + "\n" + "".join(r + "\n" for r in rows))
    return path


def test_the_floor_package_is_one_engine_op(cache, capsys):
    from snapbench.zoo.programs import network_records

    recs = network_records(FLOOR_MODEL)
    assert [r.type for r in recs if r.type != "cast"] == ["relu"]
    assert main(["convert", "--model", FLOOR_MODEL, "--out", str(cache / "o"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["package"].endswith(".mlpackage")
    assert main(["convert", "--model", FLOOR_MODEL, "--input", "1x3x224x224", "--out", str(cache / "p")]) == 2
    assert "drop --input" in capsys.readouterr().err


def test_floor_from_a_timing_file_is_the_median_less_the_engine_time(cache, capsys):
    f = _floor_file(cache / "floor.csv", ["# my app, 5 warm runs"]
                    + [f"{FLOOR_MODEL},iPhone 14 Pro,{ms}" for ms in (0.41, 0.40, 0.90, 0.39, 0.42)])
    reading = floor_from_file(f)
    assert reading.device == "iphone14pro" and reading.runs == 5 and reading.median_ms == pytest.approx(0.41)
    assert 0 < reading.engine_ms < 0.2  # one tiny op: the engine's own time is a small part
    assert reading.floor_ms == pytest.approx(0.41 - reading.engine_ms)
    assert main(["calibrate", "--app-floor", str(f), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["app_floor_ms"] == pytest.approx(reading.floor_ms, abs=1e-4) and doc["runs"] == 5


def test_profile_shows_the_floor_beside_the_engine_figure(cache, capsys):
    args = ["profile", "--model", "synthetic:dense-u16-l2", "--input", "1x10x32", "--device", "iphone14", "--json"]
    assert main(args) == 0
    engine = json.loads(capsys.readouterr().out)
    assert main(args + ["--app-floor-ms", "2.5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["model_ms"] == engine["model_ms"]  # the engine figure never carries the floor
    assert doc["app_floor_ms"] == 2.5 and doc["end_to_end_ms"] == pytest.approx(engine["model_ms"] + 2.5, abs=1e-3)


@pytest.mark.parametrize("rows,header,needle", [
    (["timm:resnet50,iphone14,3.1"], "model,device,latency_ms", "is not synthetic:floor"),
    ([f"{FLOOR_MODEL},iphone14,-1"], "model,device,latency_ms", "positive time"),
    ([f"{FLOOR_MODEL},iphone14,abc"], "model,device,latency_ms", "is not a number"),
    ([f"{FLOOR_MODEL},iphone14,0.3", f"{FLOOR_MODEL},iphone15pro,0.3"], "model,device,latency_ms", "one device"),
    ([f"{FLOOR_MODEL},iphone14,0.3"], "model,device,latency", "missing columns"),
    ([], "model,device,latency_ms", "no timings"),
    ([f"{FLOOR_MODEL},iphone14,0.5"], "model,device,latency_s", "above 100 ms"),  # 500 ms: not a floor
])
def test_bad_floor_files_are_one_line(cache, capsys, rows, header, needle):
    f = _floor_file(cache / "bad.csv", rows, header)
    assert main(["calibrate", "--app-floor", str(f)]) == 2
    e = capsys.readouterr().err
    assert needle in e and "Traceback" not in e


@pytest.mark.parametrize("value,needle", [("-0.1", "0 ms or more"), ("nan", "0 ms or more"), ("5000", "above 100")])
def test_bad_floor_settings_are_one_line(cache, capsys, value, needle):
    assert main(["profile", "--model", "synthetic:dense-u16-l2", "--input", "1x10x32", "--device", "iphone14",
                 "--app-floor-ms", value]) == 2
    e = capsys.readouterr().err
    assert needle in e and "Traceback" not in e


def test_check_floor_ms():
    assert check_floor_ms(None) is None and check_floor_ms(0) == 0.0
    with pytest.raises(SnapbenchError):
        check_floor_ms(float("inf"))
    with pytest.raises(SnapbenchError, match="missing columns"):
        read_floor_file(__file__)  # a Python file is not a timing of the floor package
