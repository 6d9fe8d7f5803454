"""The pricers behind profiling's one seam: `pricer(package, device) -> Measurement | Estimate`.

- `EstimatePricer`: the Neural Engine cost model (`snapbench.profilers.estimate`), labelled `estimate`.
- `DeviceBackend("iphone" | "mac")`: checks this machine (`readiness`), finds the attached phone and
  its catalog id (`phones`), and `open()`s a session (the runner app built, installed and launched once)
  whose pricer times each package through coremltools (`coreml_api`): first and warm load, warm-up runs,
  repeats (median, p90, sample count) and the compute plan's op placement.
- `import` prices nothing: its figures come from a file (`snapbench.latency.importer`).

`choose_backend` resolves `auto`: an iPhone if one is ready (and the target is a phone), this Mac if the
target is a Mac and we run on one, else the estimator; it says which and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from snapbench import __version__
from snapbench.devices.catalog import Device, resolve_device
from snapbench.errors import SnapbenchError
from snapbench.profilers.coreml_api import DEFAULT_REQUEST_TIMEOUT_S, CoreMLTools, Signing, describe
from snapbench.profilers.coreml_types import RemoteDevice
from snapbench.profilers.measurement import Measurement, PackageJob, placement_text
from snapbench.profilers.phones import list_attached, mac_catalog_id, pick_phone
from snapbench.profilers.readiness import Machine, blocker, blocking_check, put_devicectl_on_path
from snapbench.settings import BACKEND_CHOICES, MEASURING, check_choice  # noqa: F401 re-exported

if TYPE_CHECKING:
    from snapbench.profilers.estimate.cost_model import Estimate
    from snapbench.profilers.runner_build import RunnerStamp

TRUST = "Settings > General > VPN & Device Management"
STARTUP_S = 5.0  # a launch that fails (developer not trusted) ends within this; a running app stays up
DEFAULT_TRUST_WAIT_S = 300.0
RELAUNCH_EVERY_S = 10.0


class PackageFailed(SnapbenchError):
    """One package could not be measured; the run goes on with the next and reports it at the end."""


class Pricer(Protocol):
    """The seam every backend fits: one package on one catalog device -> a measurement or an estimate."""

    @property
    def name(self) -> str: ...  # read-only: a plain attribute or a property both fit

    def __call__(self, package: PackageJob, device: Device) -> Measurement | Estimate: ...


def as_measurement(result: Measurement | Estimate) -> Measurement:
    return result if isinstance(result, Measurement) else Measurement.from_estimate(result)


def is_mac(device: Device) -> bool:
    return device.id.startswith("mac")


def _suggest(reason: str) -> str:
    if "--backend estimate" in reason:
        return reason
    return f"{reason} (or use --backend estimate, which runs anywhere, or --backend import --from FILE)"


# the estimator -------------------------------------------------------------------------------------------
EstimateFn = Callable[[Path, Device], "Estimate"]


def _estimate_package(path: Path, device: Device) -> Estimate:
    from snapbench.profilers.estimate import estimate_package

    return estimate_package(path, device)


def estimator_version() -> int:
    """The shipped cost-model parameters' version (rows made with another are re-estimated)."""
    from snapbench.profilers.estimate import load_params

    return load_params().version


@dataclass
class EstimatePricer:
    """The calibrated Neural Engine cost model over each package's Core ML program."""

    estimate_fn: EstimateFn = _estimate_package
    version: Callable[[], int] = estimator_version
    name: str = "estimate"

    def __call__(self, package: PackageJob, device: Device) -> Estimate:
        return self.estimate_fn(package.path, device)


# measuring on a device -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """The device a measuring backend will time on, as its own tools describe it."""

    device_id: str  # catalog id it is filed under
    name: str  # "Ana's iPhone", "this Mac"
    os_version: str
    os_build: str
    udid: str = ""

    def label(self) -> str:
        system = "iOS" if not self.device_id.startswith("mac") else "macOS"
        return f"{self.name} ({system} {self.os_version}, build {self.os_build})"


@dataclass
class DeviceBackend:
    """Times packages with coremltools on an iPhone (remote device API) or on this Mac."""

    name: str  # "iphone" | "mac"
    api: CoreMLTools = field(default_factory=CoreMLTools)
    machine: Machine | None = None  # None: this computer
    signing: Signing | None = None
    compute_units: str = "cpu_and_ne"
    warmup: int = 3
    repeats: int = 20
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    runner_dir: Path | None = None  # where the runner app is built once and kept; None: the cache
    rebuild_runner: bool = False  # --rebuild-runner: a clean build even if nothing changed
    trust_wait_s: float = DEFAULT_TRUST_WAIT_S  # how long to wait for the user to trust the developer
    say: Callable[[str], None] | None = None  # progress lines (stderr in the CLI)
    sleep: Callable[[float], None] = time.sleep  # tests pass a clock that does not wait

    def __post_init__(self) -> None:
        if self.name not in MEASURING:
            raise ValueError(self.name)
        if self.repeats < 1 or self.warmup < 0:
            raise SnapbenchError(f"--repeats must be >= 1 and --warmup >= 0 (got {self.repeats}, {self.warmup})")
        if self.request_timeout_s <= 0:
            raise SnapbenchError(f"--request-timeout must be > 0 seconds (got {self.request_timeout_s})")

    @property
    def here(self) -> Machine:
        if self.machine is None:
            self.machine = Machine.this(team_id=self.signing.team_id if self.signing else None)
        return self.machine

    def check(self, device: Device | None = None) -> None:
        """Raise the one-line reason this backend cannot run here (before anything is converted)."""
        reason = blocker(self.here, self.name)
        if reason:
            raise SnapbenchError(_suggest(f"the {self.name} backend cannot run here: {reason}"))
        if device is None:
            return
        # A Mac's engine is not a phone's: never file Mac timings under an iPhone id, or the reverse.
        if self.name == "mac" and not is_mac(device):
            raise SnapbenchError(_suggest(f"the mac backend measures this Mac, not an {device.name}; "
                                          "pass --device auto to file its figures under this Mac's id"))
        if self.name == "iphone" and is_mac(device):
            raise SnapbenchError(f"--device {device.id} is a Mac; use --backend mac to measure it")
        if self.name == "iphone" and not device.id.startswith("iphone"):
            # coremltools lists iPhones here; an iPad's figures must not come from a phone
            raise SnapbenchError(_suggest(f"the iphone backend measures iPhones, not an {device.name}"))

    def identify(self, wanted: Device | None) -> Target:
        """The attached phone (or this Mac) and its catalog id; `wanted` None is `--device auto`. A
        phone of another model than `wanted` is refused."""
        shell = self.here.shell
        if self.name == "mac":
            mac_id = mac_catalog_id(shell, resolve_device)
            if wanted is not None and wanted.id != mac_id:
                raise SnapbenchError(f"this Mac is {mac_id}, not --device {wanted.id}; pass --device auto")
            code, build, _ = shell.run(["sw_vers", "-buildVersion"])
            return Target(mac_id, "this Mac", self.here.macos_version, build.strip() if code == 0 else "")
        put_devicectl_on_path(self.here)
        phone, cid = pick_phone(list_attached(shell), wanted.id if wanted else None, resolve_device)
        return Target(cid, phone.name, phone.os_version, phone.os_build, phone.udid)

    @contextlib.contextmanager
    def open(self, target: Target) -> Iterator[DevicePricer]:
        """A pricer for `target`: for a phone, the runner app is built (once, kept under the cache),
        installed and launched here; every failure is one line naming what to fix."""
        loop = asyncio.new_event_loop()
        try:
            handle = None
            if self.name == "iphone":
                handle = loop.run_until_complete(self._prepare(target))
            yield DevicePricer(self, target, handle, loop)
        finally:
            loop.close()

    def _say(self, line: str) -> None:
        if self.say is not None:
            self.say(line)

    def runner_folder(self) -> Path:
        from snapbench.paths import cache_root

        assert self.signing is not None
        return self.runner_dir or cache_root() / "modelrunner" / self.signing.bundle_id

    def _runner_stamp(self) -> RunnerStamp:
        from snapbench.profilers.runner_build import RunnerStamp

        assert self.signing is not None
        code, text, _ = self.here.shell.run(["xcodebuild", "-version"])
        xcode = (text.strip().splitlines() or ["?"])[0] if code == 0 else "?"
        return RunnerStamp(self.signing.team_id, self.signing.bundle_id, xcode, self.api.version())

    async def _prepare(self, target: Target) -> RemoteDevice:
        from snapbench.profilers.runner_build import rebuild_reason, write_stamp

        if self.signing is None and self.here.team_id:  # SNAPBENCH_TEAM_ID, when no --team-id was given
            self.signing = Signing.for_team(self.here.team_id)
        if self.signing is None:
            raise SnapbenchError("the iphone backend signs coremltools' runner app: pass --team-id "
                                 "(or set SNAPBENCH_TEAM_ID); see `snapbench doctor`")
        folder = self.runner_folder()
        stamp = self._runner_stamp()
        why = "--rebuild-runner" if self.rebuild_runner else rebuild_reason(folder, stamp)
        if why:
            self._say(f"building the runner app again: {why}")
        try:
            matches = [p for p in self.api.connected_iphones() if getattr(p, "udid", None) == target.udid]
            if not matches:
                raise SnapbenchError(f"coremltools does not see {target.name} as connected: unlock it and "
                                     "run `snapbench doctor`")
            prepared = await self.api.prepare(matches[0], self.signing, folder, clean=bool(why))
            write_stamp(folder, stamp)
        except SnapbenchError:
            raise
        except Exception as e:  # coremltools raises ValueError / its own errors with devicectl's stderr
            why = describe(e)
            hint = ("on the phone, trust the app's developer: Settings > General > VPN & Device Management, "
                    "then run again" if "trust" in why.lower() or "profile" in why.lower() else
                    "run `snapbench doctor`")
            raise SnapbenchError(f"preparing {target.name} for profiling failed: {why}; {hint}") from None
        return self.running(prepared, target)

    def _started(self, device: RemoteDevice) -> bool:
        """Alive for STARTUP_S after a launch: a failed launch (untrusted developer, a crash) has ended by then."""
        for _ in range(math.ceil(STARTUP_S / 0.5)):
            if not self.api.app_alive(device):
                return False
            self.sleep(0.5)
        return self.api.app_alive(device)

    def running(self, device: RemoteDevice, target: Target) -> RemoteDevice:
        """`device` with its runner app running: coremltools launches it and never checks. A free team's
        first launch fails until the developer is trusted on the phone: say so, wait (relaunching every
        RELAUNCH_EVERY_S, counting down) and go on once it runs."""
        if self._started(device):
            return device
        why = self.api.launch_failure(device)
        team = self.signing.team_id if self.signing else "your team"
        self._say(f"the runner app did not start on {target.name}{f' ({why})' if why else ''}: on the phone, "
                  f"trust the developer ({team}) in {TRUST}; waiting up to {self.trust_wait_s:.0f} s")
        left = self.trust_wait_s
        while left > 0:
            step = min(RELAUNCH_EVERY_S, left)
            self.sleep(step)
            left -= step
            device = self._relaunch(device, target)
            if self._started(device):
                self._say(f"the runner app runs on {target.name}; going on")
                return device
            self._say(f"  still not started: {left:.0f} s left to trust the developer in {TRUST}")
        why = self.api.launch_failure(device) or why
        raise SnapbenchError(f"the runner app does not start on {target.name}{f' ({why})' if why else ''}: "
                             f"trust the developer ({team}) on the phone in {TRUST}, then run again")

    def _relaunch(self, device: RemoteDevice, target: Target) -> RemoteDevice:
        try:
            return self.api.relaunch(device)
        except Exception as e:  # coremltools' _DeviceCtlError with devicectl's stderr (bytes)
            raise SnapbenchError(f"relaunching the runner app on {target.name} failed: {describe(e)}; run "
                                 "`snapbench doctor`") from None

    def restart(self, device: RemoteDevice, target: Target) -> RemoteDevice:
        """Relaunch a runner app that stopped during a run (and check that it runs)."""
        return self.running(self._relaunch(device, target), target)


@dataclass
class DevicePricer:
    """An open session on one device: call it with each package."""

    backend: DeviceBackend
    target: Target
    handle: RemoteDevice | None  # coremltools' prepared remote Device, or None for this Mac
    loop: asyncio.AbstractEventLoop

    @property
    def name(self) -> str:
        return self.backend.name

    def __call__(self, package: PackageJob, device: Device) -> Measurement:
        if device.id != self.target.device_id:
            raise SnapbenchError(f"{self.target.name} is {self.target.device_id}, not {device.id}")
        be = self.backend
        try:
            with be.api.request_time_limit(be.request_timeout_s):
                timing = self.loop.run_until_complete(be.api.time_package(
                    package.path, device=self.handle, compute_units=be.compute_units, warmup=be.warmup,
                    repeats=be.repeats))
        except (PackageFailed, KeyboardInterrupt):
            raise
        except Exception as e:  # coremltools raises ValueError / RuntimeError / its own with multi-line text
            why = describe(e) if not isinstance(e, SnapbenchError) else str(e)
            if self.handle is not None and not be.api.app_alive(self.handle):
                # iOS ends an app that runs out of memory (a large VAE or UNet load can): relaunch, go on
                why = f"the runner app stopped on {self.target.name} (out of memory?): {why}"
                be._say(f"{package.label}: {why}; relaunching it")
                self.handle = be.restart(self.handle, self.target)
            raise PackageFailed(f"{package.label} ({package.path.name}): {why}") from None
        finally:
            be.api.clean_requests(self.handle)
        if timing.plan_error:
            be._say(f"{package.label}: the compute plan failed ({timing.plan_error}); timings kept, "
                    "op placement unknown")
        return Measurement.from_samples(
            be.name, timing.predict_ms, placement=placement_text(timing.placement), source=self.target.label(),
            versions=f"snapbench={__version__};coremltools={be.api.version()}",
            first_load_ms=timing.first_load_ms, warm_load_ms=timing.warm_load_ms, os_build=self.target.os_build)


# choosing -------------------------------------------------------------------------------------------------
def choose_backend(requested: str, device: Device, *, machine: Machine | None = None,
                   say: Callable[[str], None] | None = None) -> str:
    """Resolve `auto` to the best backend this machine has for `device`; check explicit choices."""
    check_choice("--backend", requested, BACKEND_CHOICES)
    if requested != "auto":
        if requested in MEASURING:
            DeviceBackend(requested, machine=machine).check(device)
        return requested
    here = machine or Machine.this()
    picked, why = "estimate", ""
    if is_mac(device):
        check = blocking_check(here, "mac")
        picked, why = ("mac", "this Mac's Neural Engine") if check is None else ("estimate", check.detail)
    elif not device.id.startswith("iphone"):
        why = f"no measuring backend for a {device.name}"
    else:
        check = blocking_check(here, "iphone")
        if check is None:
            try:
                put_devicectl_on_path(here)
                phone, cid = pick_phone(list_attached(here.shell), device.id, resolve_device)
                picked, why = "iphone", f"{phone.name} is attached and ready"
            except SnapbenchError as e:
                why = str(e)
        else:
            why = f"{check.name}: {check.detail}"
    if say:
        if picked == "estimate":
            say(f"backend auto -> estimate ({why}); figures are predictions, labelled estimate")
        else:
            say(f"backend auto -> {picked} ({why})")
    return picked
