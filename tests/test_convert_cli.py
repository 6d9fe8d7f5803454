"""snapbench convert on the command line: bad input is one line and exit 2, with nothing left behind."""

from __future__ import annotations

import json
import os
import sys

import pytest

from snapbench.cli import main

TINY = ["--model", "sd15-tiny", "--latent", "8", "--tokens", "4"]


def _bad_spec(tmp_path):
    from importlib import resources

    d = json.loads((resources.files("snapbench.specs") / "presets" / "sd15-tiny.json").read_text())
    d["name"] = "broken"
    d["base_config"]["norm_num_groups"] = 3  # 8 channels are not divisible into 3 groups
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(d))
    return path


@pytest.mark.parametrize("args, words", [
    (["--attention", "flash"], "attention"),
    (["--target", "iOS15"], "target"),
    (["--mode", "fast"], "mode"),
    (["--weight-bits", "5"], "weight-bits"),
    (["--chunks", "2"], "--whole"),
    (["--component", "safety_checker"], "component"),
    (["--whole", "--component", "vae_decoder"], "--whole"),
])
def test_bad_options(tmp_path, capsys, args, words):
    out = tmp_path / "out"
    assert main(["convert", *TINY, "--out", str(out), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and lines[0].startswith("error:")
    assert not out.exists()


@pytest.mark.skipif(sys.platform == "darwin", reason="--check runs on macOS")
def test_check_on_linux_says_it_needs_macos(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", *TINY, "--out", str(out), "--check"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs macOS" in err[0] and "prediction" in err[0]
    assert not out.exists()


def test_foreign_folder(tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("buy milk")
    assert main(["convert", *TINY, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "foreign content" in err[0]
    assert sorted(p.name for p in out.iterdir()) == ["todo.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_folder(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert main(["convert", *TINY, "--out", str(parent / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write" in err[0]
    finally:
        parent.chmod(0o700)


def test_unwritable_file_as_folder(tmp_path, capsys):
    path = tmp_path / "a-file"
    path.write_text("")
    assert main(["convert", *TINY, "--out", str(path / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write" in err[0]


def test_spec_that_does_not_build(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", "--model", str(_bad_spec(tmp_path)), "--latent", "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # refused by the config's field check, before diffusers is asked to build it
    assert len(err) == 1 and "not divisible by norm_num_groups" in err[0]
    assert not out.exists()


def test_unknown_model(tmp_path, capsys):
    assert main(["convert", "--model", "sd99", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sd99" in err[0]


def test_json_result_and_warm_rerun(tmp_path, capsys):
    out = tmp_path / "te"
    args = ["convert", *TINY, "--component", "text_encoder", "--out", str(out), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["converted"] == ["text_encoder"]
    assert first["manifest"]["blocks"][0]["package"] == "text_encoder.mlpackage"
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["converted"] == [] and second["reused"] == ["text_encoder"]
