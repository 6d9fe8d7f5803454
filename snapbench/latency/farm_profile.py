"""`profile --ray-address ADDR --device A --device B`: one model on several devices of a Ray device farm.

The same steps as `profile_model` (`model_latency`), with the measuring fanned out: what each device's
table lacks is converted once (the union: the packages are the same for every device), measured on
the nodes that hold each device (`snapbench.profilers.farm`), every row handed to `on_table` as it
arrives; then the estimator fills each device's gaps (labelled) and each device gets its `ProfileRun`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING

from snapbench.backbones import backbone_for
from snapbench.devices.catalog import Device
from snapbench.errors import SnapbenchError
from snapbench.latency.model_latency import (
    ALL_COMPONENTS,
    EstimatePricer,
    Failure,
    Located,
    ProfileRun,
    _version,
    assemble,
    cut_model,
    locate,
    now,
    packages_to_price,
    price,
    still_needed,
    to_row,
)
from snapbench.latency.packages import ConverterPackages, PackageSource
from snapbench.latency.table import LatencyRow, LatencyTable, Settings
from snapbench.model.loading import ModelSource
from snapbench.profilers.farm import (
    BackendFactory,
    DeviceOutcome,
    FarmPackage,
    NodeSettings,
    check_holders,
    farm_stopped,
    is_device_backend,
    measure_on_farm,
    node_backend,
)
from snapbench.ray_cluster import connect
from snapbench.versions import tool_versions

if TYPE_CHECKING:
    from snapbench.latency.profile_run import ProfileRequest


def farm_devices(request: ProfileRequest, devices: Sequence[Device | None]) -> list[Device]:
    """`--ray-address`'s refusals, before anything is converted, and the devices it measures on: the farm's
    phones and Macs measure (no other --backend), each named by its catalog id (not --device auto), each
    into a table of its own that can be written (one --table cannot hold several devices); packages given
    with --packages must have this run's settings."""
    from snapbench.atomic import check_writable
    from snapbench.latency.profile_run import check_packages, table_paths
    from snapbench.paths import tables_hint

    if request.backend not in ("auto", "iphone", "mac"):
        raise SnapbenchError(f"--ray-address measures on the farm's phones and Macs: --backend {request.backend} "
                             "does not apply (leave it out)")
    named = [d for d in devices if d is not None]
    if len(named) < len(devices):
        raise SnapbenchError("--ray-address needs catalog ids (--device iphone14pro ...), not --device auto")
    if request.table is not None and len(named) > 1:
        raise SnapbenchError("--table names one table; a farm run writes one per device under --tables")
    check_packages(request)
    for d in named:  # a farm run measures: it always writes, so it refuses before converting
        check_writable(table_paths(request, d)[0], tables_hint(request.table))
    return named


def profile_on_farm(
    source: ModelSource,
    devices: Sequence[Device],
    settings: Settings = Settings(),
    *,
    address: str,
    tables: dict[str, LatencyTable] | None = None,
    estimator: EstimatePricer | None = None,
    components: Sequence[str] = ALL_COMPONENTS,
    packages: PackageSource | None = None,
    factory: BackendFactory = node_backend,
    node_settings: NodeSettings | None = None,
    on_table: Callable[[str, LatencyTable], object] | None = None,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
) -> list[ProfileRun]:
    """Each device's run, in the order given. `tables`: device id -> its table so far; `on_table(device id,
    merged table)` after every measured package. Raises SnapbenchError (rows so far handed on) when a device
    has packages left and no node to measure them."""
    devs = list(dict.fromkeys(devices))
    if not devs:
        raise SnapbenchError("--ray-address needs at least one --device")
    # the cluster answers and holds every device before anything is converted
    ray, connected = connect(address, "the device farm (--ray-address)")
    try:
        check_holders(devs, ray.cluster_resources(), address)
        return _profile(ray, source, devs, settings, address=address, tables=tables, estimator=estimator,
                        components=components, packages=packages, factory=factory, node_settings=node_settings,
                        on_table=on_table, progress=progress, say=say)
    finally:
        if connected:
            ray.shutdown()


def _profile(ray: ModuleType, source: ModelSource, devs: list[Device], settings: Settings, *, address: str,
             tables: dict[str, LatencyTable] | None, estimator: EstimatePricer | None, components: Sequence[str],
             packages: PackageSource | None, factory: BackendFactory, node_settings: NodeSettings | None,
             on_table: Callable[[str, LatencyTable], object] | None, progress: bool,
             say: Callable[[str], None] | None) -> list[ProfileRun]:
    comps = tuple(dict.fromkeys(components))
    cut = cut_model(source, settings) if "unet" in comps else []
    items = packages_to_price(source, settings, comps, cut)
    estimator = estimator or EstimatePricer()
    packages = packages or ConverterPackages()
    merged = {d.id: (tables or {}).get(d.id) or LatencyTable.empty() for d in devs}
    new_rows: dict[str, list[LatencyRow]] = {d.id: [] for d in devs}
    created = now()

    def keep(dev: Device, row: LatencyRow) -> None:
        new_rows[dev.id].append(row)
        merged[dev.id] = merged[dev.id].merge([row])
        if on_table is not None:
            on_table(dev.id, merged[dev.id])

    # what each device lacks, converted once for all of them
    todo = {d.id: still_needed(items, merged[d.id], d.id, is_device_backend(d)) for d in devs}
    union = list({it.key: it for its in todo.values() for it in its}.values())
    located: dict[str, Located] = ({loc.item.key: loc for loc in locate(union, source, packages, progress=progress)}
                                   if union else {})
    wanted = {d.id: [FarmPackage(it.key, it.label, located[it.key].job.path) for it in todo[d.id]] for d in devs}
    outcomes: dict[str, DeviceOutcome] = {}
    if any(wanted.values()):
        outcomes = measure_on_farm(
            ray, address, {k: v for k, v in wanted.items() if v}, factory=factory,
            settings=node_settings or NodeSettings(compute_units=settings.compute_units), say=say,
            on_measured=lambda dev, p, m: keep(dev, to_row(dev, located[p.key], m, created)))
    stopped = farm_stopped(outcomes)
    if stopped:
        raise SnapbenchError(stopped)
    runs = []
    for d in devs:
        out = outcomes.get(d.id)
        failures = [Failure(p.label, p.path, why) for p, why in out.failed] if out else []
        gaps = still_needed(items, merged[d.id], d.id, "estimate", estimator_version=_version(estimator))
        if gaps:
            if say and wanted[d.id]:
                say(f"{d.id}: {len(gaps)} package(s) not measured: estimated and labelled estimate")
            price(locate(gaps, source, packages, progress=progress), d, estimator, created=created,
                  on_row=partial(keep, d), progress=progress)
        blocks, comps_out = assemble(source, d, settings, cut, items, merged[d.id], comps)
        runs.append(ProfileRun(d, source.spec.name, settings, is_device_backend(d), blocks, comps_out,
                               new_rows[d.id], merged[d.id], tool_versions(), created, None,
                               backbone_for(source).stages, failures,
                               farm_nodes=sorted({node for _, _, node in out.measured}) if out else [],
                               retried=len(out.retried) if out else 0))
    return runs
