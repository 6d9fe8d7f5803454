"""A table or report that cannot be written where the user asked is refused in one line before the work
(`atomic.check_writable`, one check shared by `profile`, `report`, `compress analyze`, `calibrate --write`),
never after converting a whole model."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from snapbench.atomic import check_writable
from snapbench.cli import main
from snapbench.errors import SnapbenchError

TINY = ["--latent", "8", "--tokens", "4"]
READ_ONLY = Path("/sys")  # sysfs takes no new files, from root either (and os.access says it would)


def _a_file(tmp_path: Path) -> Path:
    """A plain file where a folder of tables is asked for: unwritable for every user, root included."""
    p = tmp_path / "a-file"
    p.write_text("")
    return p


def _converted(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.suffix in (".mlpackage", ".mlmodel")] if cache.exists() else []


def test_check_writable_names_the_folder_and_the_fix(tmp_path):
    fix = "choose another --out"
    with pytest.raises(SnapbenchError, match=r"a-file is a file, not a folder; choose another --out"):
        check_writable(_a_file(tmp_path) / "x" / "t.csv", fix)
    with pytest.raises(SnapbenchError, match="is a folder, not a file"):
        check_writable(tmp_path, fix)
    deep = tmp_path / "new" / "deeper" / "t.csv"
    before = sorted(tmp_path.iterdir())
    assert check_writable(deep, fix) == deep and sorted(tmp_path.iterdir()) == before  # nothing left by a check


def _takes_files(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@pytest.mark.skipif(_takes_files(READ_ONLY), reason="/sys takes new files here")
def test_a_folder_that_refuses_files_is_refused_for_root_too():
    with pytest.raises(SnapbenchError, match="/sys is not writable"):
        check_writable(READ_ONLY / "snapbench-tables" / "t.csv", "fix")
    assert not list(READ_ONLY.glob(".snapbench-probe.*"))


@pytest.mark.parametrize("model", ["sd15-tiny", "pixart-sigma-tiny"])
def test_profile_refuses_unwritable_tables_before_converting(tmp_path, capsys, monkeypatch, model):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SNAPBENCH_CACHE", str(cache))
    tables = _a_file(tmp_path)
    assert main(["profile", "--model", model, *TINY, "--device", "iphone14pro", "--tables", str(tables)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # the backend's choice may be said first; the refusal is the one error line, and the last
    assert [line for line in err if line.startswith("error:")] == err[-1:]
    assert "cannot write there" in err[-1] and "--tables" in err[-1]
    assert _converted(cache) == []  # refused before the first conversion
    assert main(["profile", "--model", model, *TINY, "--device", "iphone14pro",
                 "--table", str(tables / "t.csv")]) == 2
    assert "choose a writable --table" in capsys.readouterr().err


def test_profile_that_writes_nothing_reads_through_an_unwritable_folder(tmp_path, capsys):
    """The shipped table covers sd15 on the iPhone 14 Pro: nothing to write, so nothing to refuse."""
    assert main(["profile", "--model", "sd15", "--device", "iphone14pro", "--tables", str(_a_file(tmp_path)),
                 "--json"]) == 0
    assert "nothing to write" in capsys.readouterr().err


def test_report_out_uses_the_same_check(tmp_path):
    from snapbench.report.write import check_out_path

    with pytest.raises(SnapbenchError, match="a-file is a file, not a folder; choose another --out"):
        check_out_path(_a_file(tmp_path) / "r.html")


def test_compress_analyze_refuses_before_measuring(tmp_path, monkeypatch):
    from snapbench.backbones import resolve_model
    from snapbench.converters import sensitivity

    def measured(*args, **kw):
        raise AssertionError("measured before the output folder was checked")

    monkeypatch.setattr(sensitivity, "analyze_sensitivity", measured)
    with pytest.raises(SnapbenchError, match="cannot write there.*choose another --out"):
        sensitivity.write_analysis(resolve_model("sd15-tiny"), _a_file(tmp_path) / "recipes")


def test_calibrate_write_refuses_before_fitting(tmp_path, capsys, monkeypatch):
    from snapbench.validation import run

    def fitted(*args, **kw):
        raise AssertionError("fitted before the parameter file was checked")

    monkeypatch.setattr(run, "corpus_points", fitted)
    assert main(["calibrate", "--write", "--params", str(_a_file(tmp_path) / "p.json")]) == 2
    assert "choose another --params" in capsys.readouterr().err
