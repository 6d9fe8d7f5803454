"""Shared fixtures: tiny SD-structured UNets that build and run in milliseconds."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

# Under xdist every core already runs a worker: a worker whose PyTorch (or a process it starts: the CLI, pool
# and accelerate workers) computes on more threads than its share of the cores only makes OpenMP threads
# spin-wait for each other. Set before torch is imported, so the worker and its children start that way (a
# value the caller set stays). Three test files twice side by side on 2 cores: 82.9 -> 75.0 CPU s each.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
_THREADS = None
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _THREADS = max(1, _CORES // _WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)

import torch  # noqa: E402  (after the thread count above)

if _THREADS is not None:  # (in case a plugin imported torch first)
    torch.set_num_threads(_THREADS)

# Tests keep their trained-once artefacts and converted packages in the checkout, not in the user's cache.
os.environ.setdefault("SNAPBENCH_CACHE", str(Path(__file__).resolve().parents[1] / ".snapbench-cache"))
import snapbench  # noqa: F401  (first: lets torchvision import beside the CPU torch; see torchvision_compat)

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)


@pytest.fixture
def tiny_inputs():
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, 16, 16, generator=g)
    context = torch.randn(2, 5, 16, generator=g)
    timestep = torch.tensor([10.0, 500.0])
    return sample, timestep, context


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A diffusers UNet folder (config.json + safetensors) written with save_pretrained."""
    from diffusers import UNet2DConditionModel

    from snapbench.specs.presets import load_preset

    cfg = {k: v for k, v in load_preset("sd15-tiny").base_config.items() if not k.startswith("_")}
    torch.manual_seed(123)
    unet = UNet2DConditionModel(**cfg)
    folder = tmp_path / "tiny-unet"
    unet.save_pretrained(folder, safe_serialization=True)
    return folder, unet


@pytest.fixture(scope="session", autouse=True)
def _temporary_files_in_the_session_folder(tmp_path_factory):
    """Whatever the code under test (or a library, or a CLI child) puts in tempfile's folder lands in this
    session's base folder, which pytest removes when the session passes (tmp_path_retention_policy)."""
    import shutil
    import tempfile

    # Ray puts its sockets under $RAY_TMPDIR, else $TMPDIR: under the session's folder their paths pass the
    # 107 bytes an AF_UNIX socket name may have, and `ray.init` fails. A short folder of its own instead.
    ray_folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
    folder = tmp_path_factory.mktemp("tempfile")
    saved = {name: os.environ.get(name) for name in ("TMPDIR", "RAY_TMPDIR")}
    saved_tempdir = tempfile.tempdir
    tempfile.tempdir = os.environ["TMPDIR"] = str(folder)
    os.environ["RAY_TMPDIR"] = ray_folder
    yield
    tempfile.tempdir = saved_tempdir
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(ray_folder, ignore_errors=True)


# -- converted packages shared by the session ------------------------------------------------------------

# The fixtures below make real conversions of more than one tiny package. Tests that ask for them (directly
# or through another fixture) are marked `slow` at collection, so `make test-fast` runs none of them and
# the full suite converts each once per session (per xdist worker) instead of once per module.
SESSION_CONVERSIONS = ("sd15_tiny_blocks", "sdxl_shallow_prices")


@pytest.fixture(scope="session")
def sdxl_shallow_prices():
    """The compressible layers of sdxl-tiny's shallow twin (tests/model_refs.py) priced at 2 and 4 bits and
    fp16 on the iPhone 15 Pro, at latent 8 and 4 tokens (latency/recipe_price.py; converts its profile-mode
    packages into the test cache once)."""
    from model_refs import SDXL_SHALLOW

    from snapbench.backbones import resolve_model
    from snapbench.devices.catalog import resolve_device
    from snapbench.latency.recipe_price import layer_prices
    from snapbench.settings import RunSettings

    return layer_prices(resolve_model(SDXL_SHALLOW), resolve_device("iphone15pro"), RunSettings(latent=8, tokens=4),
                        (2, 4))


@pytest.fixture(scope="session")
def sd15_tiny_blocks(tmp_path_factory):
    """sd15-tiny cut into blocks and converted in profile mode at latent 8, tokens 4 (47 blocks, 27
    packages). Read-only: a test that changes the folder works on a copy (shutil.copytree)."""
    from snapbench.backbones import resolve_model
    from snapbench.converters.entry import ConvertRequest, convert
    from snapbench.converters.options import ConvertOptions

    out = tmp_path_factory.mktemp("sd15-tiny-blocks") / "sd15-tiny"
    result = convert(ConvertRequest(resolve_model("sd15-tiny"), out, ConvertOptions(latent=8, tokens=4, jobs=1), progress=False))
    assert result.ok, result.failed
    return out


def _module_fixture(item) -> str | None:
    """The first module-scoped fixture the test uses, if any."""
    info = getattr(item, "_fixtureinfo", None)
    for name in getattr(item, "fixturenames", ()):
        defs = info.name2fixturedefs.get(name) if info is not None else None
        if defs and defs[-1].scope == "module":
            return name
    return None


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects, and before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in SESSION_CONVERSIONS:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.slow)
                # under `pytest -n N --dist loadgroup` (make test) every test of one conversion runs on one
                # worker, so the conversion is made once, not once per worker
                item.add_marker(pytest.mark.xdist_group(name))
                break
        else:
            # the same for a module's own shared fixture (a pipeline converted twice, a report gathered, a
            # wheel built): without a group, loadgroup deals a module's tests out to every worker in turn and
            # each worker builds the fixture again
            if _module_fixture(item) is not None:
                item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    if config.getoption("loadgroup", False):  # on an xdist worker of `--dist loadgroup`
        # `make test` passes --no-loadscope-reorder, so workers take the work in this order (a group where its
        # first test stands): the longest first, so the last minutes are short tests on every worker instead
        # of one long test keeping one worker busy while the others wait. Only under xdist: in one process the
        # order of the modules is kept, and with it their module fixtures.
        items.sort(key=_expected_length)


def _expected_length(item) -> int:
    """0: marked `long` (minutes alone); 1: slow; 2: in a group (several tests sharing a fixture); 3: the rest."""
    if item.get_closest_marker("long") is not None:
        return 0
    if item.get_closest_marker("slow") is not None:
        return 1
    return 2 if item.get_closest_marker("xdist_group") is not None else 3


# -- the CLI in child processes forked from one that imported it once ---------------------------------------


@pytest.fixture(scope="session")
def cli_server(tmp_path_factory):
    """A fork server for CLI runs in real child processes (tests/cli_server.py): the bad-input and hostile
    tests start dozens, and a fresh process spends seconds importing torch before it reads its arguments."""
    from cli_server import CliServer

    server = CliServer(tmp_path_factory.mktemp("cli-server"))
    yield server
    server.close()
