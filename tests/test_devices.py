"""Device catalog: resolution by id and name, derived fp16 peak, unknown names suggest the closest ids."""

from __future__ import annotations

import json

import pytest

from snapbench.devices import list_devices, resolve_device
from snapbench.devices.catalog import marketed_is_int8
from snapbench.errors import SnapbenchError


@pytest.mark.parametrize("text", ["iphone14pro", "iPhone 14 Pro", "IPHONE 14 PRO", "iphone-14-pro", " iphone 14pro "])
def test_resolves_ids_and_names(text):
    d = resolve_device(text)
    assert d.id == "iphone14pro" and d.chip == "A16"


def test_every_row_resolves_by_id_and_name():
    devices = list_devices()
    assert len(devices) >= 20
    for d in devices:
        assert resolve_device(d.id) == d
        assert resolve_device(d.name) == d


def test_fp16_peak_follows_chip_generation_rule():
    # marketed TOPS are int8 from A17 / M4 on, so fp16 is half; before that marketed = fp16
    assert resolve_device("iphone14pro").ane_fp16_tflops == 17
    assert resolve_device("iphone15pro").ane_fp16_tflops == 17.5
    assert resolve_device("mac-m4").ane_fp16_tflops == 19
    assert resolve_device("mac-m3").ane_fp16_tflops == 18
    assert marketed_is_int8("A18 Pro") and not marketed_is_int8("M2")


def test_unknown_device_suggests_closest():
    with pytest.raises(SnapbenchError) as e:
        resolve_device("iphone14prp")
    msg = str(e.value)
    assert "\n" not in msg and "iphone14pro" in msg


def test_devices_command_json(capsys):
    from snapbench.cli import main

    assert main(["devices", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["id"] for d in data} >= {"iphone14", "iphone14pro", "mac-m2"}


def test_recent_devices_are_in_the_catalog_with_confidence_notes():
    from snapbench.devices import resolve_device

    for name, chip in (("iPhone 16e", "A18"), ("iPhone 17", "A19"), ("iPhone Air", "A19 Pro"),
                       ("iPhone 17 Pro", "A19 Pro"), ("iPhone 17 Pro Max", "A19 Pro"), ("Mac (M5)", "M5"),
                       ("iPad Pro (M5)", "M5")):
        d = resolve_device(name)
        assert d.chip == chip and d.confidence == "low" and d.notes
        assert d.marketed_tops_are_int8
    assert resolve_device("mac-m5").ane_bandwidth_gbps == pytest.approx(70.21)
    assert resolve_device("iphone17pro").ane_bandwidth_gbps is None  # no published engine bandwidth
