"""Which phone (or Mac) is attached, read from Apple's own tools, and which catalog device it is.

coremltools' `Device` carries a name, an OS version and a build, but not the model of the phone, so the
figures of "the first connected phone" could be filed under any `--device`. `devicectl list devices`'
JSON has the hardware's product type ("iPhone15,2"), which maps to one catalog id; a Mac says its chip
through `sysctl`. These functions parse that output; running the tools is `Shell`'s job (tests hand in
canned output).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from snapbench.errors import SnapbenchError

if TYPE_CHECKING:
    from snapbench.devices.catalog import Device

# Apple's product types (Settings > General > About, `devicectl`, `ideviceinfo`) of the catalog's iPhones.
PRODUCT_TYPES: dict[str, str] = {
    "iPhone13,1": "iphone12mini", "iPhone13,2": "iphone12", "iPhone13,3": "iphone12pro",
    "iPhone13,4": "iphone12promax",
    "iPhone14,4": "iphone13mini", "iPhone14,5": "iphone13", "iPhone14,2": "iphone13pro",
    "iPhone14,3": "iphone13promax",
    "iPhone14,7": "iphone14", "iPhone14,8": "iphone14plus", "iPhone15,2": "iphone14pro",
    "iPhone15,3": "iphone14promax",
    "iPhone15,4": "iphone15", "iPhone16,1": "iphone15pro", "iPhone16,2": "iphone15promax",
    "iPhone17,3": "iphone16", "iPhone17,1": "iphone16pro", "iPhone17,2": "iphone16promax",
}

MIN_IOS = (17, 4)  # coremltools' remote device API: compute plans on the device need iOS 17.4
# coremltools and snapbench need devicectl's tunnelState "connected"; a paired, wired phone in Developer
# Mode may say "disconnected" until something asks CoreDevice for it (Xcode's device window, or any
# devicectl command aimed at that phone).
TUNNEL_FIX = ("unlock it, keep it on the cable, and open the tunnel: Xcode > Window > Devices and Simulators "
              "with the phone selected, or `xcrun devicectl device info details --device {udid}`; then run "
              "`snapbench doctor` again")


class Shell(Protocol):
    def run(self, argv: list[str], timeout_s: float = 60) -> tuple[int, str, str]:
        """(exit code, stdout, stderr); a missing program is exit code 127."""

    def which(self, name: str) -> str | None: ...


class SystemShell:
    """Runs Apple's command-line tools for real."""

    def run(self, argv: list[str], timeout_s: float = 60) -> tuple[int, str, str]:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            return 127, "", f"{argv[0]}: command not found"
        except subprocess.TimeoutExpired:
            return 124, "", f"{' '.join(argv)} did not answer within {timeout_s:.0f} s"
        return p.returncode, p.stdout, p.stderr

    def which(self, name: str) -> str | None:
        return shutil.which(name)


@dataclass(frozen=True)
class AttachedPhone:
    """One entry of `devicectl list devices`, with what profiling needs to know about it."""

    name: str  # the owner's name for it: "Ana's iPhone"
    udid: str
    device_type: str  # iPhone | iPad | ...
    product_type: str  # "iPhone15,2"
    marketing_name: str  # "iPhone 14 Pro" (newer Xcode only)
    os_version: str  # "18.1"
    os_build: str  # "22B83"
    developer_mode: str  # enabled | disabled | ""
    pairing: str  # paired | unpaired | ""
    tunnel: str  # connected | disconnected | unavailable | ""

    @property
    def connected(self) -> bool:
        return self.tunnel == "connected"

    def problem(self) -> str | None:
        """Why this phone cannot be profiled right now, with the fix; None when it can."""
        if self.pairing and self.pairing != "paired":
            return f"{self.name} does not trust this Mac: unlock it, tap Trust on the phone, and plug it in again"
        if self.developer_mode and self.developer_mode != "enabled":
            return (f"{self.name} has Developer Mode off: Settings > Privacy & Security > Developer Mode, "
                    "turn it on and restart the phone")
        if not self.connected:
            return (f"{self.name} is listed but not connected (devicectl tunnel state "
                    f"{self.tunnel or 'unknown'}): {TUNNEL_FIX.format(udid=self.udid)}")
        if os_tuple(self.os_version) < MIN_IOS:
            return (f"{self.name} runs iOS {self.os_version}; profiling needs iOS "
                    f"{'.'.join(map(str, MIN_IOS))} or later: update it in Settings > General")
        return None


def os_tuple(version: str) -> tuple[int, ...]:
    """'17.4.1' -> (17, 4, 1); '' -> () (which compares below any real version)."""
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def parse_devicectl_devices(data: object) -> list[AttachedPhone]:
    """The devices in `devicectl list devices -j FILE`'s JSON (the fields coremltools reads, plus the
    product type and pairing state it does not)."""
    result = data.get("result") if isinstance(data, dict) else None
    devices = result.get("devices") if isinstance(result, dict) else None
    if not isinstance(devices, list):
        raise SnapbenchError("devicectl list devices: unexpected JSON (no result.devices); update Xcode")
    phones = []
    for d in devices:
        dev, hw, conn = (d.get(k) or {} for k in ("deviceProperties", "hardwareProperties", "connectionProperties"))
        phones.append(AttachedPhone(
            name=str(dev.get("name", "")), udid=str(hw.get("udid", "")),
            device_type=str(hw.get("deviceType", "")), product_type=str(hw.get("productType", "")),
            marketing_name=str(hw.get("marketingName", "")), os_version=str(dev.get("osVersionNumber", "")),
            os_build=str(dev.get("osBuildUpdate", "")), developer_mode=str(dev.get("developerModeStatus", "")),
            pairing=str(conn.get("pairingState", "")), tunnel=str(conn.get("tunnelState", "")).lower(),
        ))
    return phones


def list_attached(shell: Shell) -> list[AttachedPhone]:
    """Every device `xcrun devicectl list devices` knows (connected or not)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "devices.json"
        code, _, stderr = shell.run(["xcrun", "devicectl", "list", "devices", "-j", str(out)])
        if code != 0 or not out.is_file():
            first = (stderr.strip().splitlines() or [f"exit code {code}"])[-1]
            raise SnapbenchError(f"`xcrun devicectl list devices` failed ({first}); run `snapbench doctor`")
        try:
            return parse_devicectl_devices(json.loads(out.read_text()))
        except json.JSONDecodeError as e:
            raise SnapbenchError(f"devicectl wrote unreadable JSON ({e}); update Xcode") from None


def iphones(attached: list[AttachedPhone]) -> list[AttachedPhone]:
    return [p for p in attached if p.device_type.lower() == "iphone"]


def catalog_id(phone: AttachedPhone, resolve: Callable[[str], Device]) -> str:
    """The catalog id of this phone: its product type, else its marketing name; unknown -> SnapbenchError."""
    if phone.product_type in PRODUCT_TYPES:
        return PRODUCT_TYPES[phone.product_type]
    if phone.marketing_name:
        try:
            return str(resolve(phone.marketing_name).id)
        except SnapbenchError:
            pass
    raise SnapbenchError(f"{phone.name} is a {phone.marketing_name or phone.product_type or 'phone of unknown model'}, "
                         "which the device catalog does not have (see `snapbench devices`); its figures cannot "
                         "be filed under a catalog device")


def pick_phone(attached: list[AttachedPhone], wanted: str | None, resolve: Callable[[str], Device]) -> tuple[AttachedPhone, str]:
    """The phone to measure and its catalog id. `wanted` None (`--device auto`): the one ready iPhone
    (several: refuse, naming them); else the ready iPhone of that model, or a refusal saying what is attached."""
    phones = iphones(attached)
    if not phones:
        raise SnapbenchError("no iPhone is attached: plug it in with a cable, unlock it, tap Trust; "
                             "then check with `snapbench doctor`")
    ready = [p for p in phones if p.problem() is None]
    if not ready:
        raise SnapbenchError(phones[0].problem() or "no iPhone is ready")
    known = []
    for p in ready:
        try:
            known.append((p, catalog_id(p, resolve)))
        except SnapbenchError as e:
            if wanted is None and len(ready) == 1:
                raise
            known.append((p, f"? ({e})"))
    if wanted is None:
        if len(known) > 1:
            names = ", ".join(f"{p.name} ({cid})" for p, cid in known)
            raise SnapbenchError(f"several iPhones are ready ({names}); pass --device with the one to measure")
        return known[0]
    for p, cid in known:
        if cid == wanted:
            return p, cid
    have = ", ".join(f"{p.name} is {cid}" for p, cid in known)
    raise SnapbenchError(f"--device {wanted} is not attached ({have}); pass --device auto to measure the "
                         "attached phone under its own id")


def mac_catalog_id(shell: Shell, resolve: Callable[[str], Device] | None = None) -> str:
    """mac-m1 ... mac-m4, mac-m2pro, mac-m1max, mac-m2ultra ... from this Mac's chip (`sysctl -n
    machdep.cpu.brand_string`: "Apple M2 Pro"). A Pro, Max or Ultra has its own engine memory bandwidth
    and its own catalog entry: never file its figures under the base chip. `resolve` (the catalog)
    refuses a chip the catalog lacks."""
    code, out, _ = shell.run(["sysctl", "-n", "machdep.cpu.brand_string"])
    m = re.search(r"Apple M(\d+)(?:\s+(Pro|Max|Ultra))?\b", out) if code == 0 else None
    if not m:
        raise SnapbenchError(f"cannot tell this Mac's chip ({out.strip() or 'sysctl failed'}); "
                             "the mac backend needs an Apple-silicon Mac")
    cid = f"mac-m{m.group(1)}{(m.group(2) or '').lower()}"
    if resolve is not None:
        try:
            resolve(cid)
        except SnapbenchError:
            raise SnapbenchError(f"this Mac's chip ({m.group(0)}) is not in the device catalog (no {cid}; see "
                                 "`snapbench devices`): its figures cannot be filed under another chip") from None
    return cid
