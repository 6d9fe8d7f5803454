"""A model's latency on a device: profiling's one seam, as typed steps.

    packages_to_price(source, settings, components)   what a figure needs: one package per unique block
                                                      signature (and per pipeline part), no conversion yet
 -> still_needed(items, table, ...)                   the ones the table lacks for this pricer
 -> locate(items, source, packages)                   their .mlpackage paths (converted or cached)
 -> price(jobs, device, pricer, on_row=)              pricer(package, device) -> Measurement | Estimate,
                                                      one LatencyRow per package, handed on at once
                                                      (`profile` saves the table after every package)
 -> assemble(...)                                     blocks, components, the merged table: a ProfileRun

`profile_model` runs them with the backend asked for, then the estimator for whatever the device or an
import file did not cover (labelled estimate). Pricers are passed in (`backend=` a `DeviceBackend`, an
`EstimatePricer` or a name; `estimator=`): tests hand in fakes, nothing is patched.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, overload

from snapbench import __version__
from snapbench.backbones import backbone_for
from snapbench.blocks.cut import CutBlock
from snapbench.devices.catalog import Device, resolve_device
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject
from snapbench.latency.importer import ImportedRow, check_settings, read_import, refuse_conflicts
from snapbench.latency.packages import COMPONENTS, ConverterPackages, PackageSource
from snapbench.latency.table import LatencyRow, LatencyTable, Settings
from snapbench.model.loading import ModelSource
from snapbench.profilers.backends import (
    MEASURING,
    DeviceBackend,
    EstimatePricer,
    PackageFailed,
    Pricer,
    Target,
    as_measurement,
    choose_backend,
)
from snapbench.profilers.measurement import Measurement, PackageJob
from snapbench.specs.stages import STAGES
from snapbench.versions import tool_versions

if TYPE_CHECKING:  # the device side loads only when a run measures
    from snapbench.profilers.coreml_api import CoreMLTools
    from snapbench.profilers.farm import BackendFactory
    from snapbench.profilers.readiness import Machine
    from snapbench.progress_log import ProgressBar

ALL_COMPONENTS = ("unet", *COMPONENTS)  # COMPONENTS: snapbench.settings.PIPELINE_PARTS
Say = Callable[[str], None]


@dataclass(frozen=True)
class BlockLatency:
    id: str
    file_id: str
    stage: str
    kind: str  # CA | RB | aux
    status: str  # kept | removed | copy
    signature: str | None  # None: removed with nothing left to run (costs nothing)
    latency_ms: float
    p90_ms: float | None
    samples: int
    backend: str | None  # None only for blocks that do not run
    macs: int
    params: int
    first_load_ms: float | None = None  # measured rows only
    warm_load_ms: float | None = None

    def to_dict(self) -> JSONObject:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ComponentLatency:
    name: str  # unet | text_encoder | vae_decoder
    latency_ms: float
    backend: str  # a backend, or "mixed" (the UNet's blocks came from several)
    per: str  # "denoising step" | "run" | "image"
    first_load_ms: float | None = None  # measured: summed over the component's packages
    warm_load_ms: float | None = None


@dataclass
class ProfileRun:
    device: Device
    model: str
    settings: Settings
    backend: str  # the backend that was asked to time things (after `auto`)
    blocks: list[BlockLatency]
    components: dict[str, ComponentLatency]
    new_rows: list[LatencyRow]
    table: LatencyTable  # the input table merged with new_rows
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    measured_on: Target | None = None  # the phone or Mac, when a measuring backend ran
    stages: tuple[str, ...] = STAGES  # the backbone's stages, in execution order
    failures: list[Failure] = field(default_factory=list)  # packages the backend could not measure
    farm_nodes: list[str] = field(default_factory=list)  # a device farm: the Ray nodes that measured
    retried: int = 0  # a device farm: packages sent again after their node went away

    @property
    def tokens(self) -> int:
        return self.settings.tokens


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


# 1. packages to price ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PackageToPrice:
    """One package a figure needs, before it is converted."""

    key: str  # the table key: a block signature, or a component key
    label: str  # "CA[Up-1, 2]" (the first block with the signature) or "text_encoder"
    component: str  # unet | text_encoder | vae_decoder
    settings: Settings  # the settings its row is filed under (pipeline parts run at batch 1)
    count: int  # how many times its latency enters the component's figure
    block: CutBlock | None = None  # UNet: the first block with this signature (names the row)
    path: Path | None = None  # a package that exists already (a whole program given as .mlpackage): not converted


def component_settings(settings: Settings) -> Settings:
    """The settings of the pipeline parts (batch 1; see `RunSettings.for_component`)."""
    return settings.for_component("vae_decoder")


def component_key(component: str, source: ModelSource, settings: Settings) -> str:
    """Table key of a pipeline part: which one it is follows from the UNet's config (context width for the
    text encoder, latent channels for the decoder), and its own shapes (batch 1)."""
    cfg = source.spec.base_config
    if component == "text_encoder":
        ctx = cfg.get("cross_attention_dim", 768)
        shape = f"tokens={settings.tokens},context={ctx[0] if isinstance(ctx, (list, tuple)) else ctx}"
    else:
        shape = f"latent={settings.latent}x{settings.latent},channels={cfg.get('out_channels', 4)}"
    return f"component|{component}|model={source.spec.name}|{shape}|batch=1|{settings.precision}"


def cut_model(source: ModelSource, settings: Settings) -> list[CutBlock]:
    """The model's blocks with these settings (meta device: shapes and counts only, instant)."""
    return backbone_for(source).cut_source(source, settings)


def first_blocks(cut: Sequence[CutBlock]) -> dict[str, CutBlock]:
    """Unique signatures in execution order, with the first block that has each (it names the row)."""
    first: dict[str, CutBlock] = {}
    for b in cut:
        if b.signature is not None:
            first.setdefault(b.signature.key(), b)
    return first


def packages_to_price(source: ModelSource, settings: Settings, components: Sequence[str] = ALL_COMPONENTS,
                      cut: Sequence[CutBlock] | None = None) -> list[PackageToPrice]:
    bad = [c for c in components if c not in ALL_COMPONENTS]
    if bad:
        raise SnapbenchError(f"unknown component {bad[0]!r}; choose from {', '.join(ALL_COMPONENTS)}")
    items: list[PackageToPrice] = []
    if "unet" in components:
        cut = cut if cut is not None else cut_model(source, settings)
        counts: dict[str, int] = {}
        for b in cut:
            if b.signature is not None:
                counts[b.signature.key()] = counts.get(b.signature.key(), 0) + 1
        items += [PackageToPrice(k, b.block_id, "unet", settings, counts[k], b) for k, b in first_blocks(cut).items()]
    comp = component_settings(settings)
    items += [PackageToPrice(component_key(c, source, comp), c, c, comp, 1)
              for c in dict.fromkeys(components) if c != "unet"]
    return items


# 2. what the table lacks --------------------------------------------------------------------------------------
def still_needed(items: Iterable[PackageToPrice], table: LatencyTable, device_id: str, pricer: str, *,
                 os_build: str = "", estimator_version: int | None = None) -> list[PackageToPrice]:
    """Items the table has no usable row for: a measuring backend re-measures only on another OS build;
    the estimator fills gaps and refreshes estimates made with other parameters; measured rows are never
    replaced by estimates."""
    todo = []
    for it in items:
        if pricer == "estimate":
            have = table.lookup(device_id, it.settings, it.key)
            stale = (have is not None and have.backend == "estimate" and estimator_version is not None
                     and f"estimator={estimator_version}" not in have.versions)
            if have is None or stale:
                todo.append(it)
            continue
        row = table.lookup_backend(device_id, it.settings, it.key, pricer)
        if row is None or (os_build and row.os_build and row.os_build != os_build):
            todo.append(it)
    return todo


# 3. where the packages are -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Located:
    item: PackageToPrice
    job: PackageJob
    params: int = 0  # pipeline parts: from the conversion (UNet blocks carry their own)
    macs: int = 0


def locate(items: Sequence[PackageToPrice], source: ModelSource, packages: PackageSource, *,
           progress: bool) -> list[Located]:
    """Convert (or take from the cache) exactly the packages of `items`."""
    out: list[Located] = [Located(it, PackageJob(it.key, it.label, it.path)) for it in items if it.path is not None]
    items = [it for it in items if it.path is None]
    blocks = [it for it in items if it.component == "unet"]
    if blocks:
        paths = packages.block_packages(source, blocks[0].settings, {it.key for it in blocks}, progress=progress)
        out += [Located(it, PackageJob(it.key, it.label, Path(paths[it.key]))) for it in blocks]
    for it in items:
        if it.component != "unet":
            got = packages.component_package(it.component, source, it.settings, progress=progress)
            out.append(Located(it, PackageJob(it.key, it.label, Path(got.path)), int(got.params), int(got.macs)))
    return out


@dataclass(frozen=True)
class Failure:
    """A package the backend could not measure, and why (its figure is then estimated and labelled)."""

    label: str
    path: Path
    reason: str


# 4. price: package -> row -------------------------------------------------------------------------------------
def to_row(device: Device, where: Located | PackageToPrice, m: Measurement, created: str) -> LatencyRow:
    it = where.item if isinstance(where, Located) else where
    s, b = it.settings, it.block
    params = b.params if b is not None else (where.params if isinstance(where, Located) else 0)
    macs = b.macs if b is not None else (where.macs if isinstance(where, Located) else 0)
    return LatencyRow(
        device=device.id, chip=device.chip, backend=m.backend, compute_units=s.compute_units,
        precision=s.precision, weight_bits=s.weight_bits, attention=s.attention,
        stage=b.unit.slot.stage if b is not None else "-", block=it.label, signature=it.key,
        latency_ms=_ms(m.latency_ms), p90_ms=_ms(m.p90_ms), samples=m.samples, macs=macs, params=params,
        bytes_moved=m.bytes_moved, versions=m.versions or f"snapbench={__version__}",
        created_at=created, batch=s.batch, latent=s.latent, placement=m.placement, source=m.source,
        first_load_ms=_ms(m.first_load_ms), warm_load_ms=_ms(m.warm_load_ms), os_build=m.os_build,
    )


def price(located: Sequence[Located], device: Device, pricer: Pricer, *, created: str,
          on_row: Callable[[LatencyRow], None] | None = None, progress: bool = False,
          failures: list[Failure] | None = None) -> list[LatencyRow]:
    """Price each package; every row goes to `on_row` as soon as it exists (an interrupted run keeps it).
    A package the pricer cannot measure (`PackageFailed`) goes to `failures` and the run goes on."""
    rows: list[LatencyRow] = []
    with _bar(pricer.name, len(located), progress) as advance:
        for loc in located:
            try:
                m = pricer(loc.job, device)
            except PackageFailed as e:
                if failures is None:
                    raise
                failures.append(Failure(loc.job.label, loc.job.path, str(e)))
                advance(loc.job.label)
                continue
            row = to_row(device, loc, as_measurement(m), created)
            rows.append(row)
            if on_row is not None:
                on_row(row)
            advance(loc.job.label)
    return rows


# 5. assemble --------------------------------------------------------------------------------------------------
def assemble(source: ModelSource, device: Device, settings: Settings, cut: Sequence[CutBlock],
             items: Sequence[PackageToPrice], table: LatencyTable, components: Sequence[str]
             ) -> tuple[list[BlockLatency], dict[str, ComponentLatency]]:
    blocks = [_block_latency(b, table, device.id, settings) for b in cut] if "unet" in components else []
    out: dict[str, ComponentLatency] = {}
    if "unet" in components:
        used = {b.backend for b in blocks if b.backend}
        out["unet"] = ComponentLatency("unet", sum(b.latency_ms for b in blocks),
                                       used.pop() if len(used) == 1 else "mixed", "denoising step",
                                       *_load_sums([b.first_load_ms for b in blocks if b.signature],
                                                   [b.warm_load_ms for b in blocks if b.signature]))
    for it in items:
        if it.component == "unet":
            continue
        row = table.lookup(device.id, it.settings, it.key)
        if row is None:  # cannot happen: the estimate pass fills every gap
            raise SnapbenchError(f"no latency for {it.component}")
        out[it.component] = ComponentLatency(it.component, row.latency_ms, row.backend,
                                             "run" if it.component == "text_encoder" else "image",
                                             row.first_load_ms, row.warm_load_ms)
    return blocks, out


def _load_sums(first: list[float | None], warm: list[float | None]) -> tuple[float | None, float | None]:
    """A component's load times only when every package of it was measured (partial sums mislead)."""
    def total(xs: list[float | None]) -> float | None:
        return sum(x for x in xs if x is not None) if xs and all(x is not None for x in xs) else None
    return total(first), total(warm)


# the whole run -------------------------------------------------------------------------------------------------
@dataclass
class ProfileTools:
    """What `snapbench profile` prices with, when not the real thing: tests pass fakes here (through the
    CLI's `ctx.obj`) instead of patching modules. None: the real converters, estimator, this machine."""

    packages: PackageSource | None = None
    estimator: EstimatePricer | None = None
    machine: Machine | None = None
    coreml: CoreMLTools | None = None
    sleep: Callable[[float], None] | None = None  # the runner app's startup and trust waits
    farm_backend: BackendFactory | None = None  # what farm nodes measure with


def profile_model(
    source: ModelSource,
    dev: Device,
    settings: Settings = Settings(),
    *,
    table: LatencyTable | None = None,
    backend: str | DeviceBackend | EstimatePricer = "auto",
    estimator: EstimatePricer | None = None,
    components: Sequence[str] = ALL_COMPONENTS,
    import_file: str | Path | None = None,
    packages: PackageSource | None = None,
    on_table: Callable[[LatencyTable], object] | None = None,  # its return value is ignored
    before_writing: Callable[[], object] | None = None,
    progress: bool = True,
    say: Say | None = None,
    cut: Sequence[CutBlock] | None = None,
) -> ProfileRun:
    """Price every package the requested components need on `device`, table first. `backend`: a name
    (`auto` picks and says which), or a pricer object; `estimator` fills what it did not cover.
    `on_table` gets the merged table after every priced package (`profile` saves it there). `cut`: the
    model's blocks at `settings` when the caller has them already (`cut_model`, or an inspection at the same
    shapes, precision and attention); else the model is cut here. `before_writing` is called once the run
    knows it will make new rows, before any package is converted or measured (`profile` refuses a table it
    cannot write there, not after the work)."""
    comps = tuple(dict.fromkeys(components))
    name = backend if isinstance(backend, str) else backend.name
    if name == "import" and import_file is None:
        raise SnapbenchError("--backend import needs --from FILE (CSV or JSON measurements)")
    if import_file is not None and name not in ("import", "auto"):
        raise SnapbenchError(f"--from is only read by --backend import (got --backend {name})")
    # Parse the import file before anything slow, so bad input fails fast and changes nothing.
    imported = read_import(import_file) if import_file is not None else None
    if imported is not None:
        chosen = "import"
    elif isinstance(backend, str):
        chosen = choose_backend(backend, dev, say=say)
    else:
        if isinstance(backend, DeviceBackend):
            backend.check(dev)
        chosen = backend.name
    estimator = estimator or (backend if isinstance(backend, EstimatePricer) else EstimatePricer())
    if "unet" not in comps:
        cut = []
    elif cut is None:
        cut = cut_model(source, settings)
    items = packages_to_price(source, settings, comps, cut)
    packages = packages or ConverterPackages()
    created = now()
    merged = table if table is not None else LatencyTable.empty()
    new_rows: list[LatencyRow] = []

    def keep(row: LatencyRow) -> None:
        nonlocal merged
        new_rows.append(row)
        merged = merged.merge([row])
        if on_table is not None:
            on_table(merged)

    target: Target | None = None
    failures: list[Failure] = []
    checked = False

    def will_write() -> None:
        nonlocal checked
        if before_writing is not None and not checked:
            before_writing()
            checked = True

    if imported is not None and import_file is not None:  # read from it above
        will_write()
        by_key = {it.key: it for it in items}
        for key, m in _resolve_import(import_file, imported, dev, settings, cut, items).items():
            keep(to_row(dev, by_key[key], m, created))
    elif chosen in MEASURING:
        be = backend if isinstance(backend, DeviceBackend) else DeviceBackend(chosen, compute_units=settings.compute_units)
        target = be.identify(dev)
        todo = still_needed(items, merged, dev.id, chosen, os_build=target.os_build)
        if todo:
            will_write()
            located = locate(todo, source, packages, progress=progress)
            with be.open(target) as pricer:
                price(located, dev, pricer, created=created, on_row=keep, progress=progress, failures=failures)
    # The estimator: the whole job for `estimate`, the gaps (labelled) for the others.
    todo = still_needed(items, merged, dev.id, "estimate", estimator_version=_version(estimator))
    if todo:
        will_write()
        if chosen != "estimate" and say:
            say(f"{len(todo)} package(s) not covered by {chosen}: estimated and labelled estimate")
        price(locate(todo, source, packages, progress=progress), dev, estimator, created=created, on_row=keep,
              progress=progress)
    blocks, comps_out = assemble(source, dev, settings, cut, items, merged, comps)
    return ProfileRun(dev, source.spec.name, settings, chosen, blocks, comps_out, new_rows, merged,
                      tool_versions(), created, target, backbone_for(source).stages, failures)


def _version(estimator: EstimatePricer) -> int | None:
    try:
        return estimator.version()
    except SnapbenchError:  # no parameter file: nothing to compare old estimates with
        return None


@dataclass(frozen=True)
class PricedPackage:
    """A package `profile_model` prices, and how many times its latency enters the component's figure."""

    key: str  # block signature key (UNet) or component name
    path: Path
    count: int


def profile_packages(source: ModelSource, settings: Settings = Settings(), component: str = "unet", *,
                     packages: PackageSource | None = None, progress: bool = False) -> list[PricedPackage]:
    """Exactly the packages `profile_model` prices for one component with these settings (converted, or
    taken from the cache, as profile does). The sum of count x latency over the list is the component's
    profile figure."""
    items = packages_to_price(source, settings, (component,))
    located = locate(items, source, packages or ConverterPackages(), progress=progress)
    return [PricedPackage(loc.item.key if loc.item.component == "unet" else component, loc.job.path,
                          loc.item.count) for loc in located]


def block_latencies(source: ModelSource, dev: Device, settings: Settings = Settings(), *,
                    table: LatencyTable | None = None, backend: str = "auto", progress: bool = False,
                    estimator: EstimatePricer | None = None, packages: PackageSource | None = None,
                    import_file: str | Path | None = None, say: Say | None = None) -> list[BlockLatency]:
    """Every block of the model with its latency on `device`: table rows where they exist, the backend
    (`auto`: a connected device if any, else the estimator) for signatures the table lacks, each labelled."""
    return profile_model(source, dev, settings, table=table, backend=backend, components=("unet",),
                         progress=progress, estimator=estimator, packages=packages, import_file=import_file,
                         say=say).blocks


# helpers ---------------------------------------------------------------------------------------------------------
@overload
def _ms(v: float) -> float: ...
@overload
def _ms(v: float | None) -> float | None: ...
def _ms(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)  # 0.1 us: finer than any backend resolves


def _block_latency(b: CutBlock, table: LatencyTable, device_id: str, s: Settings) -> BlockLatency:
    u = b.unit
    if b.signature is None:
        return BlockLatency(u.block_id, u.file_id, u.slot.stage, b.kind, u.status, None, 0.0, None, 0, None,
                            b.macs, b.params)
    key = b.signature.key()
    row = table.lookup(device_id, s, key)
    if row is None:
        raise SnapbenchError(f"no latency for {u.block_id} ({key})")
    return BlockLatency(u.block_id, u.file_id, u.slot.stage, b.kind, u.status, key, row.latency_ms, row.p90_ms,
                        row.samples, row.backend, b.macs, b.params, row.first_load_ms, row.warm_load_ms)


class _bar:
    """A rich progress bar on stderr while packages are priced (nothing when progress is off)."""

    def __init__(self, name: str, total: int, enabled: bool) -> None:
        self.name, self.total, self.enabled = name, total, enabled and total > 0
        self.progress: ProgressBar | None = None

    def __enter__(self) -> Callable[[str], None]:
        if not self.enabled:
            return lambda label: None
        from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

        from snapbench.console import err
        from snapbench.progress_log import description_column, label_column, make_progress

        progress = make_progress(f"profile ({self.name})", label_column(self.name), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), description_column(),
                                 console=err, transient=True)
        self.progress = progress
        progress.start()
        task = progress.add_task("", total=self.total)
        return lambda label: progress.update(task, advance=1, description=label)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()


def _resolve_import(path: str | Path, rows: list[ImportedRow], dev: Device, settings: Settings, cut: Sequence[CutBlock],
                    items: Sequence[PackageToPrice]) -> dict[str, Measurement]:
    by_key = {it.key for it in items}
    by_ref: dict[str, str] = {}
    for b in cut:
        if b.signature is None:
            continue
        k = b.signature.key()
        by_ref[b.block_id] = by_ref[b.unit.file_id] = by_ref[k] = k
    comp_refs = {it.component: it.key for it in items if it.component != "unet"}
    expected = settings.table_dict()
    got: dict[str, list[ImportedRow]] = {}
    for r in rows:
        where = f"{path} {r.where} {r.line}"
        if r.device is not None:
            try:
                named = resolve_device(r.device).id
            except SnapbenchError:
                named = r.device
            if named != dev.id:
                raise SnapbenchError(f"{where}: device {r.device!r} is not --device {dev.id}")
        if r.ref in comp_refs:
            key = comp_refs[r.ref]
            check_settings(path, r, {**expected, "batch": 1})
        else:
            ref_key = by_ref.get(r.ref)
            if ref_key is None or ref_key not in by_key:
                what = "signature" if r.by_signature else "block"
                raise SnapbenchError(f"{where}: {what} {r.ref!r} is not in this model with these settings "
                                     f"(see `snapbench inspect`; components: {', '.join(COMPONENTS)})")
            check_settings(path, r, expected)
            key = ref_key
        got.setdefault(key, []).append(r)
    out: dict[str, Measurement] = {}
    for key, rs in got.items():
        refuse_conflicts(path, rs)
        # Several blocks share a signature (a harness timing every block): one row per signature, the
        # median of their medians (all within CONFLICT_TOLERANCE), all their samples, the widest p90.
        p90s = [r.p90_ms for r in rs if r.p90_ms is not None]
        notes = "; ".join(dict.fromkeys(r.notes for r in rs if r.notes))
        out[key] = Measurement("import", float(statistics.median(r.latency_ms for r in rs)),
                                       max(p90s) if p90s else None, sum(r.samples for r in rs),
                                       source=f"{Path(str(path)).name}{': ' + notes if notes else ''}")
    return out
