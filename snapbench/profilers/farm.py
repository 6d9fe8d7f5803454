"""A device farm on Ray: several phones and Macs measured at once, each package converted once.

    snapbench farm join --address ADDR      on each Mac with phones attached: `doctor`'s checks, then a Ray
                                             node whose resources are the catalog ids it holds
                                             ({"iphone14pro": 1, "mac-m2pro": 1})
    snapbench profile --ray-address ADDR --device iphone14pro --device iphone15pro ...

The driver converts the packages every device lacks once, puts each (zipped) in Ray's object store once,
and starts one `DeviceWorker` actor per node that holds a device (Ray places it by that resource). A
worker prepares its phone once (the runner app built, installed, launched: `DeviceBackend.open`) and
times the packages sent to it; the driver keeps one package in flight per worker and hands each row to
`on_row` the moment it arrives (`profile` merges it into the device's table under the table's lock).

A node that dies takes its worker and the one package in flight with it: that package goes back to the
front of its device's queue for another node holding that device; a package whose row arrived is never
sent again (Ray's own retries are off, so nothing is measured twice). A device no node holds, or whose
every node failed, stops with one line; rows measured so far stay in the tables.
"""

from __future__ import annotations

import io
import re
import shutil
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Protocol

from snapbench.devices.catalog import Device, list_devices, resolve_device
from snapbench.errors import SnapbenchError
from snapbench.profilers.backends import DeviceBackend, PackageFailed, is_mac
from snapbench.profilers.measurement import Measurement, PackageJob

if TYPE_CHECKING:
    from snapbench.profilers.readiness import Machine


@dataclass(frozen=True)
class NodeSettings:
    """How a worker measures (what `profile`'s options say), sent to every node."""

    compute_units: str = "cpu_and_ne"
    warmup: int = 3
    repeats: int = 20
    request_timeout_s: float = 900.0
    team_id: str | None = None  # None: the node's own SNAPBENCH_TEAM_ID
    bundle_id: str | None = None


BackendFactory = Callable[[str, NodeSettings], DeviceBackend]


def node_backend(device_id: str, settings: NodeSettings) -> DeviceBackend:
    """The backend a farm node measures `device_id` with: this Mac's, or the attached phone's."""
    from snapbench.profilers.coreml_api import Signing

    signing = Signing.for_team(settings.team_id, settings.bundle_id) if settings.team_id else None
    return DeviceBackend("mac" if device_id.startswith("mac") else "iphone", signing=signing,
                         compute_units=settings.compute_units, warmup=settings.warmup, repeats=settings.repeats,
                         request_timeout_s=settings.request_timeout_s)


def pack(path: Path) -> bytes:
    """A .mlpackage folder as zip bytes (what travels to the nodes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:  # weights do not compress
        for f in sorted(path.rglob("*")):
            z.write(f, f.relative_to(path).as_posix())
    return buf.getvalue()


def unpack(blob: bytes, folder: Path, name: str) -> Path:
    out = folder / name
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        for member in z.namelist():  # our own archives; still, nothing may land outside `out`
            if member.startswith("/") or ".." in Path(member).parts:
                raise SnapbenchError(f"{name}: unsafe path {member!r} in a shipped package")
        z.extractall(out)
    out.mkdir(exist_ok=True)
    return out


class DeviceWorker:
    """Runs on the node that holds `device_id` (a Ray actor): one open device session, many packages."""

    def __init__(self, device_id: str, factory: BackendFactory, settings: NodeSettings) -> None:
        import ray

        self.device = resolve_device(device_id)
        self.backend = factory(device_id, settings)
        self.backend.check(self.device)  # the node's doctor, before anything is sent to it
        self.target = self.backend.identify(self.device)
        self._session = self.backend.open(self.target)
        self.pricer = self._session.__enter__()
        self.node = ray.get_runtime_context().get_node_id()
        self.folder = Path(tempfile.mkdtemp(prefix="snapbench-farm-"))

    def where(self) -> str:
        return f"{self.target.label()} on node {self.node[:8]}"

    def measure(self, key: str, label: str, name: str, blob: bytes) -> tuple[Measurement | None, str | None, str]:
        """(measurement, None) or (None, why it failed), and where it ran."""
        path = unpack(blob, self.folder, name)
        try:
            return self.pricer(PackageJob(key, label, path), self.device), None, self.node
        except PackageFailed as e:
            return None, str(e), self.node
        finally:
            shutil.rmtree(path, ignore_errors=True)


class RemoteMethod(Protocol):
    def remote(self, *args: object) -> object: ...  # the call's object ref


class WorkerHandle(Protocol):
    """A `DeviceWorker` actor as the driver holds it (Ray's handle: each method called with `.remote`)."""

    @property
    def measure(self) -> RemoteMethod: ...


@dataclass(frozen=True)
class FarmPackage:
    """One package to measure on one device."""

    key: str
    label: str
    path: Path


@dataclass
class DeviceOutcome:
    """What the farm did for one device."""

    device: Device
    measured: list[tuple[FarmPackage, Measurement, str]] = field(default_factory=list)  # (package, figures, node)
    failed: list[tuple[FarmPackage, str]] = field(default_factory=list)  # the device could not measure it
    retried: list[FarmPackage] = field(default_factory=list)  # in flight on a node that died
    lost_nodes: list[str] = field(default_factory=list)  # why each worker of this device went away
    left: list[FarmPackage] = field(default_factory=list)  # unmeasured: no node left for this device


def catalog_resources(resources: dict[str, float]) -> dict[str, int]:
    """The cluster's resources that are catalog device ids (what `farm join` advertises)."""
    ids = {d.id for d in list_devices()}
    return {k: int(v) for k, v in resources.items() if k in ids and v >= 1}


def check_holders(devices: Sequence[Device], resources: dict[str, float], address: str) -> dict[str, int]:
    held = catalog_resources(resources)
    if not held:
        raise SnapbenchError(f"no node of the Ray cluster at {address} holds a phone or Mac: on each Mac with a "
                             f"phone attached run `snapbench farm join --address {address}`")
    missing = [d.id for d in devices if d.id not in held]
    if missing:
        have = ", ".join(f"{k} x{v}" for k, v in sorted(held.items()))
        raise SnapbenchError(f"--device {missing[0]}: no node of the Ray cluster at {address} holds one (nodes hold "
                             f"{have}); attach one to a node and run `snapbench farm join` there")
    return {d.id: held[d.id] for d in devices}


_ACTOR_ERRORS = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "NodeDiedError",
                 "ObjectLostError", "OwnerDiedError", "WorkerCrashedError")


def _why_gone(e: BaseException) -> str:
    text = str(e)
    m = re.search(r"SnapbenchError: (.+)", text)
    if m:
        return m.group(1).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
    return first[:300]


def measure_on_farm(ray: ModuleType, address: str, wanted: dict[str, list[FarmPackage]], *,
                    factory: BackendFactory = node_backend, settings: NodeSettings = NodeSettings(),
                    on_measured: Callable[[Device, FarmPackage, Measurement], None] | None = None,
                    say: Callable[[str], None] | None = None) -> dict[str, DeviceOutcome]:
    """Measure `wanted` (device id -> packages) on the cluster `ray` is connected to. `on_measured` gets each
    result as it arrives. Devices no node holds are refused before anything is sent."""
    devices = [resolve_device(d) for d in wanted]
    holders = check_holders(devices, ray.cluster_resources(), address)
    remote_worker = ray.remote(DeviceWorker)
    workers: dict[str, list[WorkerHandle]] = {}
    for d in devices:
        opts = dict(num_cpus=0, resources={d.id: 1}, max_restarts=0, max_task_retries=0)
        workers[d.id] = [remote_worker.options(**opts).remote(d.id, factory, settings) for _ in range(holders[d.id])]
    blobs: dict[Path, object] = {}  # package -> its object ref
    for pkgs in wanted.values():
        for p in pkgs:
            if p.path not in blobs:
                blobs[p.path] = ray.put(pack(p.path))  # once per package, whatever the number of devices
    queues = {d: deque(pkgs) for d, pkgs in wanted.items()}
    outcomes = {d.id: DeviceOutcome(d) for d in devices}
    busy: dict[object, tuple[str, WorkerHandle, FarmPackage]] = {}  # in-flight ref -> (device id, worker, package)

    def feed() -> None:
        for did, ws in workers.items():
            idle = [w for w in ws if all(w is not b[1] for b in busy.values())]
            for w in idle:
                if queues[did]:
                    p = queues[did].popleft()
                    busy[w.measure.remote(p.key, p.label, p.path.name, blobs[p.path])] = (did, w, p)

    def tell(line: str) -> None:
        if say is not None:
            say(line)

    try:
        feed()
        while busy:
            (ref,), _ = ray.wait(list(busy), num_returns=1)
            did, w, p = busy.pop(ref)
            out = outcomes[did]
            try:
                m, failure, node = ray.get(ref)
            except Exception as e:
                if type(e).__name__ not in _ACTOR_ERRORS and not isinstance(e, ray.exceptions.RayError):
                    raise
                why = _why_gone(e)
                workers[did] = [x for x in workers[did] if x is not w]
                out.lost_nodes.append(why)
                queues[did].appendleft(p)  # its row never arrived: it goes to another node, measured once
                out.retried.append(p)
                tell(f"{did}: a node went away ({why}); {p.label} goes to another node holding {did}")
                with _quiet():
                    ray.kill(w)
            else:
                if m is not None:
                    out.measured.append((p, m, node))
                    if on_measured is not None:
                        on_measured(out.device, p, m)
                else:
                    out.failed.append((p, failure or "failed"))
            for gone, ws in workers.items():
                if not ws and queues[gone]:
                    outcomes[gone].left.extend(queues[gone])
                    queues[gone].clear()
            feed()
    finally:
        for ws in workers.values():
            for w in ws:
                with _quiet():
                    ray.kill(w)
    return outcomes


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> bool:
        return kind is not None and issubclass(kind, Exception)


def farm_stopped(outcomes: dict[str, DeviceOutcome]) -> str | None:
    """One line when a device was left with packages and no node to measure them, else None."""
    for did, o in outcomes.items():
        if o.left:
            last = o.lost_nodes[-1] if o.lost_nodes else "no node"
            return (f"{did}: no node left to measure {len(o.left)} package(s) (last: {last}); rows measured so "
                    "far are kept: run again to go on")
    return None


def is_device_backend(device: Device) -> str:
    return "mac" if is_mac(device) else "iphone"


def node_resources(machine: Machine) -> dict[str, int]:
    """What this computer offers a farm, after `doctor`'s checks: {catalog id: 1} per ready iPhone model
    attached and for this Mac. Nothing ready: SnapbenchError with the first failing check."""
    from snapbench.profilers.phones import catalog_id, iphones, list_attached, mac_catalog_id
    from snapbench.profilers.readiness import put_devicectl_on_path, run_checks, runnable

    can = runnable(run_checks(machine))
    held: dict[str, int] = {}
    if can["iphone"] is None:
        put_devicectl_on_path(machine)
        for p in iphones(list_attached(machine.shell)):
            if p.problem() is None:
                with _quiet():  # a phone the catalog lacks is not offered; the others are
                    held[catalog_id(p, resolve_device)] = 1
    if can["mac"] is None:
        held[mac_catalog_id(machine.shell, resolve_device)] = 1
    if not held:
        raise SnapbenchError(f"this computer has nothing to measure with: {can['iphone'] or can['mac']}; run "
                             "`snapbench doctor` here")
    return held


def join_argv(ray_bin: str, address: str, held: dict[str, int]) -> list[str]:
    """`ray start` for a farm node: its phones and Mac as custom resources (named by catalog id)."""
    import json

    return [ray_bin, "start", "--address", address, "--resources", json.dumps(held, sort_keys=True)]
