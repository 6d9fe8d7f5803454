"""`snapbench profile` as one library call: a `ProfileRequest` in, the run and its table out.

Every decision the command used to make lives here, once: which backend prices the packages (measure on
an attached iPhone or this Mac, import a file, estimate; `auto` picks and says which), the device id
`--device auto` stands for (asked of the attached device), which table the figures start from (the
user's, else the one shipped with snapbench: `paths.table_to_read`) and where new rows go (always the
user's). `profile_model` then prices with the backend decided here; it does not decide again.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from snapbench.atomic import check_writable
from snapbench.devices.catalog import Device, resolve_device
from snapbench.errors import SnapbenchError
from snapbench.interrupts import on_interrupt_keep
from snapbench.latency.model_latency import ALL_COMPONENTS, ProfileRun, ProfileTools, Say, profile_model
from snapbench.latency.packages import ConverterPackages, check_manifest_settings
from snapbench.latency.table import LatencyTable, merge_into_file
from snapbench.model.loading import ModelSource
from snapbench.paths import table_to_read, tables_hint, tables_redirect_note, user_table_path
from snapbench.profilers.backends import BACKEND_CHOICES, MEASURING, DeviceBackend, EstimatePricer, choose_backend
from snapbench.profilers.coreml_api import DEFAULT_REQUEST_TIMEOUT_S, CoreMLTools, Signing
from snapbench.profilers.readiness import Machine
from snapbench.settings import RunSettings, check_choice


@dataclass(frozen=True)
class Measuring:
    """How the iphone and mac backends time each package (`profile`'s --repeats ... --team-id)."""

    warmup: int = 3
    repeats: int = 20
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    rebuild_runner: bool = False
    trust_wait_s: float = 300.0
    team_id: str | None = None  # signs coremltools' runner app (iphone); wins over the machine's
    bundle_id: str | None = None


@dataclass(frozen=True)
class ProfileRequest:
    source: ModelSource
    model: str  # --model as the user typed it: names the table file (latency_tables/<device>/<model>.csv)
    device: Device | None  # None: --device auto, the attached iPhone's (or this Mac's) own id
    settings: RunSettings
    backend: str = "auto"  # auto | iphone | mac | import | estimate
    components: tuple[str, ...] = ALL_COMPONENTS
    table: Path | None = None  # --table: read and write this file
    tables: Path | None = None  # --tables: the user's folder of tables
    import_file: Path | None = None  # --from
    packages: Path | None = None  # --packages: a `snapbench convert` folder instead of converting
    measuring: Measuring = Measuring()

    def __post_init__(self) -> None:
        check_choice("--backend", self.backend, BACKEND_CHOICES)


@dataclass(frozen=True)
class ProfileOutcome:
    run: ProfileRun
    path: Path  # the user's table: where new rows were written
    read_from: Path  # where the figures came from when nothing new was written (a shipped table, say)

    @property
    def table_path(self) -> Path:
        return self.path if self.run.new_rows else self.read_from


def run_profile(request: ProfileRequest, tools: ProfileTools = ProfileTools(), *, say: Say | None = None) -> ProfileOutcome:
    """Price the request's components on its device, table first, and merge the new rows into the user's table
    (measured rows as each package is timed: an interrupted run keeps them)."""
    r, m = request, request.measuring
    backend = "import" if r.import_file is not None and r.backend == "auto" else r.backend
    check_packages(r)
    machine = tools.machine or Machine.this(team_id=m.team_id)
    if m.team_id:  # --team-id wins over SNAPBENCH_TEAM_ID (and over a machine handed in)
        machine = dataclasses.replace(machine, team_id=m.team_id)

    def device_backend(name: str) -> DeviceBackend:
        be = DeviceBackend(name, api=tools.coreml or CoreMLTools(), machine=machine,
                           signing=Signing.for_team(m.team_id, m.bundle_id) if m.team_id else None,
                           compute_units=r.settings.compute_units, warmup=m.warmup, repeats=m.repeats,
                           request_timeout_s=m.request_timeout_s, rebuild_runner=m.rebuild_runner,
                           trust_wait_s=m.trust_wait_s, say=say)
        if tools.sleep is not None:
            be.sleep = tools.sleep
        return be

    dev = r.device if r.device is not None else _attached_device(device_backend, backend, say)
    path, read_from = table_paths(r, dev)
    existing = LatencyTable.load_or_empty(read_from)  # a corrupt table stops here, untouched
    on_interrupt_keep(f"the packages converted so far (cached) and the rows measured so far; {path} "
                      "gets estimates only at the end")
    chosen = backend if backend != "auto" else choose_backend("auto", dev, machine=machine, say=say)
    estimator = tools.estimator or EstimatePricer()
    pricer: str | DeviceBackend | EstimatePricer = (device_backend(chosen) if chosen in MEASURING else
                                                    estimator if chosen == "estimate" else chosen)
    run = profile_model(
        r.source, dev, r.settings, table=existing, backend=pricer, estimator=estimator, components=r.components,
        import_file=r.import_file,
        packages=tools.packages or (ConverterPackages(r.packages) if r.packages is not None else None),
        # measured rows are saved one package at a time: an interrupted or failed run keeps them
        on_table=(lambda t: merge_into_file(path, t)) if chosen in MEASURING else None,
        before_writing=lambda: check_writable(path, tables_hint(r.table)), progress=True, say=say,
    )
    if run.new_rows:
        say_redirect(r, say)
        # merged under the table's lock: rows a concurrent run wrote meanwhile (another --weight-bits) stay
        written = merge_into_file(path, run.table)
        if say is not None:
            say(f"{path}: wrote {len(run.new_rows)} row(s) ({counts(run)}); {len(written)} in the table")
    elif say is not None:
        say(f"{read_from}: every figure came from the table; nothing to write")
    return ProfileOutcome(run, path, read_from)


def say_redirect(request: ProfileRequest, say: Say | None) -> None:
    """Say why the user's table is not written under ./latency_tables when that is the shipped folder."""
    note = tables_redirect_note(request.tables) if request.table is None else None
    if note and say is not None:
        say(note)


def check_packages(request: ProfileRequest) -> None:
    """Refuse --packages converted with other settings, before anything else happens."""
    if request.packages is not None:
        from snapbench.converters.manifest import load_manifest

        check_manifest_settings(load_manifest(request.packages), request.packages, request.settings)


def table_paths(request: ProfileRequest, dev: Device) -> tuple[Path, Path]:
    """The user's table for `dev` (where new rows go) and the table the figures start from: the user's,
    else the shipped one while the user has none (resolved: its path in the document says where it is)."""
    path = request.table if request.table is not None else user_table_path(dev.id, request.model, request.tables)
    found = request.table if request.table is not None else table_to_read(dev.id, request.model, request.tables)
    return path, path if found is None or found == path else found.resolve()


def counts(run: ProfileRun) -> str:
    """The new rows per backend: "3 estimate, 12 iphone"."""
    counts = Counter(row.backend for row in run.new_rows)
    return ", ".join(f"{n} {b}" for b, n in sorted(counts.items()))


def _attached_device(device_backend: Callable[[str], DeviceBackend], backend: str, say: Say | None) -> Device:
    """--device auto: the catalog entry of the attached iPhone (or this Mac), asked of the device backend."""
    if backend not in MEASURING:
        raise SnapbenchError("--device auto files figures under the attached iPhone's (or this Mac's) own "
                             "id: use it with --backend iphone or --backend mac")
    be = device_backend(backend)
    be.check()
    target = be.identify(None)
    dev = resolve_device(target.device_id)
    if say is not None:
        say(f"--device auto -> {dev.id}: {target.label()}")
    return dev
