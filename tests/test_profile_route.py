"""`profile`'s decisions as plain library calls (`snapbench.profile_route`): the family path a --model takes,
the devices, and whether a DiT is measured or estimated; the command only parses, calls and renders."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import snapbench.commands.profile as profile_cli
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.profile_route import dit_backend, named_device, profile_devices, profile_route

UNET_DEFAULTS = dict(input_shape=None, components=None, attention="original", compute_units="cpu_and_ne")


def test_each_model_takes_its_family_path():
    assert profile_route("sd15-tiny", **UNET_DEFAULTS) == "unet"
    assert profile_route("pixart-sigma-tiny", **UNET_DEFAULTS) == "dit"
    assert profile_route("timm:resnet18", **UNET_DEFAULTS) == "network"
    # a DiT asked for single components or an input shape is not priced by its blocks
    assert profile_route("pixart-sigma-tiny", **{**UNET_DEFAULTS, "components": ["unet"]}) == "unet"
    with pytest.raises(SnapbenchError, match="--input is for timm"):
        profile_route("sd15-tiny", **{**UNET_DEFAULTS, "input_shape": "1x3x8x8"})
    with pytest.raises(SnapbenchError, match="--attention split_einsum does not apply"):
        profile_route("timm:resnet18", **{**UNET_DEFAULTS, "attention": "split_einsum"})


def test_devices_are_resolved_once_and_several_need_a_farm():
    assert profile_devices(["iphone14pro", "auto"], "host:1") == [resolve_device("iphone14pro"), None]
    with pytest.raises(SnapbenchError, match="add --ray-address"):
        profile_devices(["iphone14pro", "iphone15pro"], None)
    with pytest.raises(SnapbenchError, match="unknown|not a catalog|no device"):
        profile_devices(["iphone-nope"], None)
    with pytest.raises(SnapbenchError, match="--device auto: timm:resnet18 is priced by the estimator"):
        named_device(None, "timm:resnet18")


def test_a_dit_is_estimated_unless_something_measures_it():
    dev = resolve_device("iphone14pro")
    assert dit_backend("estimate", dev, import_file=None, ray_address=None, machine=None) is None
    assert dit_backend("iphone", dev, import_file=None, ray_address=None, machine=None) == "iphone"
    assert dit_backend("auto", dev, import_file=Path("m.csv"), ray_address=None, machine=None) == "auto"
    assert dit_backend("auto", None, import_file=None, ray_address=None, machine=None) == "auto"  # --device auto
    assert dit_backend("auto", dev, import_file=None, ray_address="host:1", machine=None) == "auto"


def test_the_command_is_parse_request_run_render():
    """Issue 19: every command under about 40 lines of body (the decisions are the library's)."""
    tree = ast.parse(Path(profile_cli.__file__).read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "profile_command")
    assert fn.end_lineno - fn.body[0].lineno + 1 <= 40


def test_a_farm_run_refuses_before_any_work(tmp_path):
    """`--ray-address`'s refusals are the library's too (`latency.farm_profile.farm_devices`)."""
    from snapbench.backbones import resolve_model
    from snapbench.latency.farm_profile import farm_devices
    from snapbench.latency.profile_run import ProfileRequest
    from snapbench.settings import RunSettings

    def request(**kw) -> ProfileRequest:
        return ProfileRequest(resolve_model("sd15-tiny"), "sd15-tiny", None, RunSettings(latent=8, tokens=4),
                              tables=tmp_path / "tables", **kw)

    a, b = resolve_device("iphone14pro"), resolve_device("iphone15pro")
    assert farm_devices(request(), [a, b]) == [a, b]
    assert not (tmp_path / "tables").exists()  # checked, nothing made
    with pytest.raises(SnapbenchError, match="--backend estimate does not apply"):
        farm_devices(request(backend="estimate"), [a])
    with pytest.raises(SnapbenchError, match="not --device auto"):
        farm_devices(request(), [a, None])
    with pytest.raises(SnapbenchError, match="--table names one table"):
        farm_devices(request(table=tmp_path / "t.csv"), [a, b])
    (tmp_path / "file").write_text("")
    with pytest.raises(SnapbenchError, match="is a file, not a folder; choose a writable folder with --tables"):
        farm_devices(ProfileRequest(resolve_model("sd15-tiny"), "sd15-tiny", None, RunSettings(latent=8, tokens=4),
                                    tables=tmp_path / "file"), [a])
