"""The wheel, installed into a fresh environment, holds every data file snapbench opens, and `validate` runs
from it offline on the shipped op bundle (no conversion).

Offline: the wheel is built with this environment's setuptools (no build isolation, no index) and installed
with --no-index --no-deps into a new venv that sees this environment's packages (torch, coremltools, ...)
through a .pth line, not its snapbench: the editable install's hook is a .pth file of its own, which a
path added this way does not run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import snapbench

REPO = Path(snapbench.__file__).parent.parent
PACKAGE = REPO / "snapbench"


def data_files() -> list[str]:
    """Every file of the package that is not Python source: what the code opens through the package."""
    return sorted(str(p.relative_to(REPO)) for p in PACKAGE.rglob("*")
                  if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts)


def test_the_package_data_globs_cover_every_data_file():
    """Fast twin of the wheel test: each data file matches one of pyproject's package-data globs."""
    import fnmatch

    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["snapbench"]
    files = data_files()
    assert "snapbench/validation/corpus_ops.json.gz" in files
    uncovered = [f for f in files
                 if not any(fnmatch.fnmatch(f[len("snapbench/"):], g) or fnmatch.fnmatch(Path(f).name, g.split("/")[-1])
                            for g in globs)]
    assert uncovered == []


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(PACKAGE, src / "snapbench", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    "-w", str(root / "dist"), str(src)], check=True, capture_output=True, timeout=600)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "host-packages.pth").write_text(sysconfig.get_path("purelib") + "\n")
    wheel = next((root / "dist").glob("snapbench-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-index",
                    "--no-deps", "-q", str(wheel)], check=True, capture_output=True, timeout=600)
    return root


@pytest.mark.slow
def test_the_wheel_holds_every_data_file(wheel_env):
    wheel = next((wheel_env / "dist").glob("snapbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [f for f in data_files() if f not in names] == []


@pytest.mark.slow
def test_validate_runs_offline_from_the_installed_wheel(wheel_env, tmp_path):
    venv = wheel_env / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(SNAPBENCH_CACHE=str(tmp_path / "cache"), HOME=str(tmp_path), HF_HUB_OFFLINE="1",
               PYTHONWARNINGS="ignore", COLUMNS="200")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import snapbench; print(snapbench.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(venv)), where  # the wheel's copy, not this checkout
    r = subprocess.run([str(venv / "bin" / "snapbench"), "validate", "--json"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    doc = json.loads(r.stdout)
    # every row scored from the shipped op bundle (a wheel without it re-converted 58 networks and scored 20)
    # (rows graded low are shown, never scored)
    assert doc["overall"]["n"] == len([row for row in doc["rows"] if row["trust"] != "low"]) > 100
    assert "conversion failed" not in r.stdout
    zoo = tmp_path / "cache" / "zoo"
    assert not zoo.exists() or not any(zoo.iterdir())  # nothing converted
