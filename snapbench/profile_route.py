"""Which path `snapbench profile` takes, decided once from its inputs before any work: a whole network (a
timm:/torchvision:/open_clip:/hf:/synthetic: spec or a Core ML package: one program, estimated), a DiT's
blocks, or a UNet's blocks; the devices it runs on (each --device resolved once; `auto` is left to the
backend, which asks the attached device); and, for a DiT, whether it is measured or estimated. The refusals
that go with those choices live here too, so the command only parses, calls and renders.

It sits above the families it chooses between (`zoo`, `dit`, `latency`, `profilers`), below the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from snapbench.devices.catalog import Device, resolve_device
from snapbench.errors import SnapbenchError

if TYPE_CHECKING:
    from snapbench.profilers.readiness import Machine

Route = Literal["network", "dit", "unet"]


def profile_devices(devices: Sequence[str], ray_address: str | None) -> list[Device | None]:
    """Each --device resolved once (None: `auto`); several only on a device farm."""
    if len(devices) > 1 and ray_address is None:
        raise SnapbenchError("several --device values are a device-farm run: add --ray-address ADDR (nodes join "
                             "with `snapbench farm join`), or profile one device at a time")
    return [None if d == "auto" else resolve_device(d) for d in devices]


def profile_route(model: str, *, input_shape: str | None, components: Sequence[str] | None, attention: str,
                  compute_units: str) -> Route:
    """The family path that prices `model`: a network spec is one whole program (a UNet-only setting given
    for it is refused); a DiT without --input or --component is priced by its blocks; else a UNet (which
    takes its shapes from --latent, --batch and --tokens, not --input)."""
    from snapbench.zoo.specs import is_network_spec

    if is_network_spec(model):
        from snapbench.zoo.specs import refuse_unet_only

        refuse_unet_only(model, attention=attention, compute_units=compute_units)
        return "network"
    from snapbench.dit.source import is_dit_ref

    if is_dit_ref(model) and input_shape is None and not components:
        return "dit"
    if input_shape is not None:
        raise SnapbenchError("--input is for timm:/torchvision:/open_clip:/hf:/synthetic: networks and packages; "
                             f"{model!r} is a UNet model (its shapes come from --latent, --batch, --tokens)")
    return "unet"


def named_device(device: Device | None, model: str) -> Device:
    """The device a network is priced on: `--device auto` picks among connected devices, which only a UNet's
    or a DiT's blocks can be measured on."""
    if device is None:
        raise SnapbenchError(f"--device auto: {model} is priced by the estimator, on a device you name; pass "
                             "--device (see `snapbench devices`)")
    return device


def dit_backend(backend: str, device: Device | None, *, import_file: Path | None, ray_address: str | None,
                machine: Machine | None) -> str | None:
    """The backend a DiT profile takes profiling's one seam with (measuring on a phone, a Mac or a farm, or
    importing), or None: estimated by the DiT's own path. `auto` measures when a phone (or this Mac) is
    ready for `device`."""
    from snapbench.profilers.backends import MEASURING, choose_backend

    if import_file is not None or ray_address is not None or device is None or backend in (*MEASURING, "import"):
        return backend
    if backend == "auto":
        chosen = choose_backend("auto", device, machine=machine)
        return chosen if chosen in MEASURING else None
    return None
