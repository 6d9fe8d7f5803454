"""Where files live: shipped latency tables found from any folder, the user's tables read first and written
by `profile`, the cache folder (platform default, overridable) and `snapbench cache info|clean`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from profile_fakes import FakePackages, fake_mac, toy_estimator

from snapbench import paths
from snapbench.cli import main
from snapbench.latency.table import LatencyTable

TINY = ["--device", "iphone14pro", "--model", "sd15-tiny", "--latent", "16", "--backend", "estimate"]


def test_shipped_tables_travel_inside_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(paths.TABLES_ENV, raising=False)
    shipped = paths.shipped_tables_dir()
    assert shipped.parent.name == "snapbench" and (shipped / "iphone14pro" / "sd15.csv").is_file()
    assert paths.table_to_read("iphone14pro", "sd15") == shipped / "iphone14pro" / "sd15.csv"
    assert len(LatencyTable.load(paths.table_to_read("iphone14pro", "sd15"))) > 0
    assert paths.display_path(shipped / "iphone14pro" / "sd15.csv") == "snapbench/latency_tables/iphone14pro/sd15.csv"
    assert paths.table_to_read("iphone14pro", "no-such-model") is None


def test_the_users_tables_are_read_first(tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    (mine / "iphone14pro").mkdir(parents=True)
    shutil.copy(paths.shipped_table_path("iphone14pro", "sd15"), mine / "iphone14pro" / "sd15.csv")
    monkeypatch.setenv(paths.TABLES_ENV, str(mine))
    assert paths.table_to_read("iphone14pro", "sd15") == mine / "iphone14pro" / "sd15.csv"
    assert paths.table_to_read("iphone14pro", "sd15", tables=tmp_path / "other") == (
        paths.shipped_table_path("iphone14pro", "sd15"))  # --tables DIR wins over the variable
    assert paths.table_name("runs/evo/arch.json") == "arch" and paths.table_name("runs/evo/") == "evo"


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Conversion, estimator and machine handed to the command (see test_profile)."""
    from snapbench.latency.model_latency import ProfileTools

    pk = FakePackages(tmp_path / "packages")
    pk.tools = ProfileTools(packages=pk, estimator=toy_estimator(),
                            machine=fake_mac(tmp_path / "machine", platform="linux"))
    monkeypatch.chdir(tmp_path)
    return pk


def test_profile_starts_from_the_shipped_table_and_writes_to_the_users_folder(fakes, tmp_path, monkeypatch, capsys):
    # a "shipped" folder made by a first profile run, then moved where the package keeps its tables
    assert main(obj=fakes.tools, argv=["profile", *TINY, "--tables", str(tmp_path / "first"), "--json"]) == 0
    capsys.readouterr()
    shipped = tmp_path / "shipped"
    (tmp_path / "first").rename(shipped)
    monkeypatch.setattr(paths, "shipped_tables_dir", lambda: shipped)
    before = (shipped / "iphone14pro" / "sd15-tiny.csv").read_bytes()
    fakes.calls.clear()
    assert main(obj=fakes.tools, argv=["profile", *TINY, "--tables", str(tmp_path / "mine"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert fakes.calls == []  # every figure came from the shipped table
    assert doc["components"]["unet"] > 0
    assert not (tmp_path / "mine").exists()  # nothing new, nothing written
    assert (shipped / "iphone14pro" / "sd15-tiny.csv").read_bytes() == before  # shipped files never written
    # a new setting is estimated and goes to the user's folder, with the shipped rows it started from
    assert main(obj=fakes.tools, argv=["profile", *TINY, "--tables", str(tmp_path / "mine"), "--weight-bits", "8", "--json"]) == 0
    written = LatencyTable.load(tmp_path / "mine" / "iphone14pro" / "sd15-tiny.csv")
    assert len(written) > len(LatencyTable.load(shipped / "iphone14pro" / "sd15-tiny.csv"))
    assert (shipped / "iphone14pro" / "sd15-tiny.csv").read_bytes() == before


def test_a_clone_root_never_writes_into_the_shipped_tables_unasked(fakes, tmp_path, monkeypatch, capsys):
    """In a clone, ./latency_tables links to the shipped tables: a profile run from the clone's root keeps
    its figures out of them (they go to the user's data folder, said in one line, and are read from there)
    unless that folder is named with --tables (how the shipped tables are made)."""
    shipped = tmp_path / "snapbench-pkg" / "latency_tables"
    (shipped / "iphone14pro").mkdir(parents=True)
    monkeypatch.setattr(paths, "shipped_tables_dir", lambda: shipped)
    monkeypatch.delenv(paths.TABLES_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    (tmp_path / "latency_tables").symlink_to(shipped, target_is_directory=True)  # the clone's link
    assert paths.default_tables_are_shipped()
    assert main(obj=fakes.tools, argv=["profile", *TINY, "--json"]) == 0
    said = capsys.readouterr().err
    mine = tmp_path / "data" / "snapbench" / "latency_tables" / "iphone14pro" / "sd15-tiny.csv"
    assert len(LatencyTable.load(mine)) > 0 and not any(shipped.rglob("*.csv"))
    note = [line for line in said.splitlines() if "shipped with snapbench" in line]
    assert len(note) == 1 and str(mine.parents[1]) in note[0] and "--tables DIR" in note[0], said
    assert paths.table_to_read("iphone14pro", "sd15-tiny") == mine  # later commands read it from there
    # named on purpose, the shipped folder is written (that is how the shipped tables are made)
    assert main(obj=fakes.tools, argv=["profile", *TINY, "--tables", "latency_tables", "--json"]) == 0
    assert (shipped / "iphone14pro" / "sd15-tiny.csv").is_file()
    assert "shipped with snapbench" not in capsys.readouterr().err
    # anywhere else, ./latency_tables is the user's as before
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert not paths.default_tables_are_shipped()
    assert paths.user_table_path("iphone14pro", "sd15-tiny") == Path("latency_tables/iphone14pro/sd15-tiny.csv")


def test_cache_root_default_and_override(monkeypatch, tmp_path):
    from platformdirs import user_cache_dir

    monkeypatch.delenv(paths.CACHE_ENV, raising=False)
    assert paths.cache_root() == paths.Path(user_cache_dir("snapbench", appauthor=False))
    assert ".snapbench-cache" not in str(paths.cache_root())
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "c"))
    assert paths.cache_root() == tmp_path / "c"
    # every module that caches uses that one root
    from snapbench.calibration.reference_programs import cache_dir as ops_cache
    from snapbench.training.toy_digits import cache_dir as toy_cache

    assert toy_cache() == tmp_path / "c" and ops_cache() == tmp_path / "c" / "reference_ops"


def test_cache_info_and_clean_leave_what_is_not_ours(monkeypatch, tmp_path, capsys):
    root = tmp_path / "c"
    (root / "packages" / "sd15-abc").mkdir(parents=True)
    (root / "packages" / "sd15-abc" / "x.bin").write_bytes(b"0" * 5000)
    (root / "toy-digits-classifier-v1.npz").write_bytes(b"1" * 10)
    (root / "my-notes.txt").write_text("keep me")
    monkeypatch.setenv(paths.CACHE_ENV, str(root))
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["path"] == str(root)
    sizes = {e["name"]: e["bytes"] for e in info["entries"]}
    assert sizes["packages"] >= 5000 and sizes["toy-digits-classifier-v1.npz"] == 10
    assert {e["name"] for e in info["entries"] if not e["what"]} == {"my-notes.txt"}
    assert main(["cache", "info"]) == 0
    assert str(root) in capsys.readouterr().out
    assert main(["cache", "clean", "--json"]) == 0
    cleaned = json.loads(capsys.readouterr().out)
    assert sorted(cleaned["removed"]) == ["packages", "toy-digits-classifier-v1.npz"]
    assert cleaned["bytes_freed"] >= 5010
    assert sorted(p.name for p in root.iterdir()) == ["my-notes.txt"]
