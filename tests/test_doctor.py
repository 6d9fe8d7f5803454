"""`snapbench doctor`: every prerequisite of the iphone / mac backends as a checklist with the fix per line."""

from __future__ import annotations

import json
import sys

import pytest
from profile_fakes import devicectl_entry, fake_mac

from snapbench.cli import main


def doctor(capsys, machine, *args):
    rc = main(["doctor", *args], obj=machine)
    return rc, capsys.readouterr().out


def test_a_ready_mac_with_a_phone_passes(tmp_path, capsys):
    rc, out = doctor(capsys, fake_mac(tmp_path))
    assert rc == 0
    assert "FIX" not in out and "Xcode 16.1" in out and "Test iPhone" in out and "22B83" in out
    assert "iphone    runs here" in out and "mac       runs here" in out


@pytest.mark.parametrize("setup, line", [
    (dict(xcode_path="/Library/Developer/CommandLineTools"), "sudo xcode-select -s /Applications/Xcode.app"),
    (dict(team_id=None), "--team-id"),
    (dict(devices=[devicectl_entry(developer_mode="disabled")]), "Developer Mode"),
    (dict(devices=[]), "plug the iPhone in"),
    (dict(runner=False), "macOS wheel"),
])
def test_each_missing_piece_is_named_with_its_fix(tmp_path, capsys, setup, line):
    rc, out = doctor(capsys, fake_mac(tmp_path, **setup))
    assert rc == 1 and "FIX" in out and line in " ".join(out.split())


def test_the_mac_backend_needs_no_phone_or_team(tmp_path, capsys):
    rc, out = doctor(capsys, fake_mac(tmp_path, team_id=None, devices=[]), "--backend", "mac")
    assert rc == 0 and "mac       runs here" in out and "iphone    cannot run here" in out


def test_json(tmp_path, capsys):
    rc, out = doctor(capsys, fake_mac(tmp_path, platform="linux"), "--json")
    doc = json.loads(out)
    assert rc == 1 and doc["ready"] is False
    assert doc["backends"]["estimate"] == {"runs_here": True, "why_not": None}
    assert "runs linux" in doc["backends"]["iphone"]["why_not"]


@pytest.mark.skipif(sys.platform == "darwin", reason="checks what a non-Mac says about itself")
def test_on_this_linux_machine_it_says_what_runs_here(capsys):
    rc = main(["doctor"])
    out = " ".join(capsys.readouterr().out.split())
    assert rc == 1
    assert f"this machine runs {sys.platform}" in out
    assert "estimate runs here" in out and "import runs here" in out and "iphone cannot run here" in out


def test_a_phone_whose_tunnel_is_down_is_told_how_to_bring_it_up(tmp_path, capsys):
    rc, out = doctor(capsys, fake_mac(tmp_path, devices=[devicectl_entry(tunnel="disconnected")]))
    text = " ".join(out.split())
    assert rc == 1 and "tunnel state disconnected" in text
    assert "Devices and Simulators" in text and "devicectl device info details --device 00008120-0001" in text


def test_a_python_without_a_coremltools_wheel_is_named(tmp_path, capsys):
    rc, out = doctor(capsys, fake_mac(tmp_path, python=(3, 14), native=False))
    text = " ".join(out.split())
    assert rc == 1 and "Python 3.14: coremltools 9.0 ships macOS wheels for CPython 3.10-3.13 only" in text
    assert "python3.13 -m venv" in text
    assert "--force-reinstall" not in text  # reinstalling builds the same sdist again
    rc, out = doctor(capsys, fake_mac(tmp_path, python=(3, 13)))
    assert rc == 0 and "Python 3.13 (coremltools 9.0 has a macOS wheel for it)" in " ".join(out.split())
