"""A model's latency, block by block, from the table first and a backend for whatever the table lacks.

`profile_model` is what `snapbench profile` runs: cut the model into blocks (meta device, instant),
look every unique signature up in the table, time the missing ones with the chosen backend (converting
only what is needed), fill anything still missing with a labelled estimate, and return the blocks, the
pipeline components and the rows to write back. `block_latencies` is the same for code (evolution,
reports) that only wants the numbers.
"""

from __future__ import annotations

import datetime as _dt
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from snapbench.blocks.cut import CutBlock, InputShapes, cut_blocks
from snapbench.errors import SnapbenchError
from snapbench.versions import tool_versions
from snapbench.latency.table import LatencyRow, LatencyTable, Settings
from snapbench.model.loading import ModelSource, build_unet, resolve_model
from snapbench.profilers.backends import CoreMLTools, choose_backend, make_backend
from snapbench.profilers.importer import ImportedRow, check_settings, read_import, refuse_conflicts
from snapbench.profilers.measurement import Measurement, PackageJob
from snapbench.profilers.packages import COMPONENTS, ConverterPackages, PackageSource

ALL_COMPONENTS = ("unet", *COMPONENTS)


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

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ComponentLatency:
    name: str  # unet | text_encoder | vae_decoder
    latency_ms: float
    backend: str  # a backend, or "mixed" (the UNet's blocks came from several)
    per: str  # "denoising step" | "run" | "image"


@dataclass
class ProfileRun:
    device: Any  # catalog Device
    model: str
    settings: Settings
    tokens: int
    backend: str  # the backend that was asked to time things (after `auto`)
    blocks: list[BlockLatency]
    components: dict[str, ComponentLatency]
    new_rows: list[LatencyRow]
    table: LatencyTable  # the input table merged with new_rows
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def component_key(component: str, source: ModelSource, settings: Settings, tokens: int) -> str:
    """Table key of a pipeline part: which one it is follows from the UNet's config (context width for the
    text encoder, latent channels for the decoder), and its own shapes (batch 1)."""
    cfg = source.spec.base_config
    if component == "text_encoder":
        ctx = cfg.get("cross_attention_dim", 768)
        shape = f"tokens={tokens},context={ctx[0] if isinstance(ctx, (list, tuple)) else ctx}"
    else:
        shape = f"latent={settings.latent}x{settings.latent},channels={cfg.get('out_channels', 4)}"
    return f"component|{component}|model={source.spec.name}|{shape}|batch=1|{settings.precision}"


def _component_settings(settings: Settings) -> Settings:
    return replace(settings, batch=1)  # one prompt encoding, one image decode (per CFG branch / image)




def profile_model(
    model: str | Path | ModelSource,
    device: Any,
    settings: Settings = Settings(),
    *,
    table: LatencyTable | None = None,
    backend: str = "auto",
    components: Sequence[str] = ALL_COMPONENTS,
    tokens: int = 77,
    repeats: int = 20,
    warmup: int = 3,
    import_file: str | Path | None = None,
    packages: PackageSource | None = None,
    api: CoreMLTools | None = None,
    estimate_fn: Callable[..., Any] | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> ProfileRun:
    from snapbench.devices.catalog import resolve_device

    dev = resolve_device(device)
    comps = tuple(dict.fromkeys(components))
    bad = [c for c in comps if c not in ALL_COMPONENTS]
    if bad:
        raise SnapbenchError(f"unknown component {bad[0]!r}; choose from {', '.join(ALL_COMPONENTS)}")
    if backend == "import" and import_file is None:
        raise SnapbenchError("--backend import needs --from FILE (CSV or JSON measurements)")
    if import_file is not None and backend not in ("import", "auto"):
        raise SnapbenchError(f"--from is only read by --backend import (got --backend {backend})")
    # Parse the import file before anything slow, so bad input fails fast and changes nothing.
    imported = read_import(import_file) if import_file is not None else None
    api = api or CoreMLTools()
    chosen = "import" if imported is not None else choose_backend(backend, dev, api=api, say=say)
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    cut = cut_model(source, settings, tokens)
    table = table if table is not None else LatencyTable.empty()
    packages = packages or ConverterPackages()
    created = now()
    versions = tool_versions()

    first = first_blocks(cut)
    comp_keys = {c: component_key(c, source, settings, tokens) for c in comps if c != "unet"}
    unet_keys = set(first) if "unet" in comps else set()

    measured: dict[str, Measurement] = {}
    if imported is not None:
        measured.update(_resolve_import(import_file, imported, dev, settings, cut, comp_keys))

    est_version: list[Any] = []  # looked up once, on first need (it reads the estimator's parameter file)

    def needs(key: str, row_settings: Settings, backend_name: str) -> bool:
        if key in measured:
            return False
        if backend_name == "estimate":  # fill gaps; refresh estimates made by another estimator version
            have = table.lookup(dev.id, row_settings, key)
            if have is None:
                return True
            if have.backend == "estimate":
                if not est_version:
                    est_version.append(estimate_version(estimate_fn))
                return est_version[0] is not None and f"estimator={est_version[0]}" not in have.versions
            return False
        return table.lookup_backend(dev.id, row_settings, key, backend_name) is None

    comp_settings = _component_settings(settings)
    comp_sizes: dict[str, tuple[int, int]] = {}
    passes = [chosen] if chosen != "import" else []
    if chosen != "estimate":
        passes.append("estimate")  # whatever the device or the file did not cover, labelled as such
    for name in passes:
        todo = [k for k in first if k in unet_keys and needs(k, settings, name)]
        todo_comps = [c for c, k in comp_keys.items() if needs(k, comp_settings, name)]
        if not todo and not todo_comps:
            continue
        be = make_backend(name, dev, compute_units=settings.compute_units, warmup=warmup, repeats=repeats,
                          api=api, estimate_fn=estimate_fn)
        if name == "estimate" and chosen != "estimate" and say:
            say(f"{len(todo) + len(todo_comps)} signature(s) not timed by {chosen}: estimated and labelled estimate")
        jobs: list[PackageJob] = []
        if todo:
            paths = packages.block_packages(source, settings, tokens, set(todo), progress=progress)
            jobs += [PackageJob(k, first[k].block_id, paths[k]) for k in todo]
        for c in todo_comps:
            got = packages.component_package(c, source, comp_settings, tokens, progress=progress)
            path = getattr(got, "path", got)
            comp_sizes[c] = (int(getattr(got, "params", 0)), int(getattr(got, "macs", 0)))
            jobs.append(PackageJob(comp_keys[c], c, Path(path)))
        measured.update(_run(be, jobs, progress))

    new_rows = [_row(dev, settings, first[k], k, m, created) for k, m in measured.items() if k in first]
    for c, k in comp_keys.items():
        if k in measured:
            new_rows.append(_component_row(dev, comp_settings, c, k, measured[k], created, *comp_sizes.get(c, (0, 0))))
    merged = table.merge(new_rows)

    blocks = [_block_latency(b, merged, dev.id, settings) for b in cut] if "unet" in comps else []
    comps_out: dict[str, ComponentLatency] = {}
    if "unet" in comps:
        used = {b.backend for b in blocks if b.backend}
        comps_out["unet"] = ComponentLatency("unet", sum(b.latency_ms for b in blocks),
                                             used.pop() if len(used) == 1 else "mixed", "denoising step")
    for c, k in comp_keys.items():
        row = merged.lookup(dev.id, comp_settings, k)
        if row is None:  # cannot happen: the estimate pass fills every gap
            raise SnapbenchError(f"no latency for {c}")
        comps_out[c] = ComponentLatency(c, row.latency_ms, row.backend, "run" if c == "text_encoder" else "image")
    return ProfileRun(dev, source.spec.name, settings, tokens, chosen, blocks, comps_out, new_rows, merged,
                      versions, created)


def cut_model(source: ModelSource, settings: Settings, tokens: int) -> list[CutBlock]:
    """The model's blocks with these settings (meta device: shapes and counts only, instant)."""
    return cut_blocks(build_unet(source, device="meta"),
                      InputShapes(latent=settings.latent, batch=settings.batch, tokens=tokens),
                      precision=settings.precision, attention=settings.attention)


def first_blocks(cut: Sequence[CutBlock]) -> dict[str, CutBlock]:
    """Unique signatures in execution order, with the first block that has each (it names the row)."""
    first: dict[str, CutBlock] = {}
    for b in cut:
        if b.signature is not None:
            first.setdefault(b.signature.key(), b)
    return first


@dataclass(frozen=True)
class PricedPackage:
    """A package `profile_model` prices, and how many times its latency enters the component's figure."""

    key: str  # block signature key (UNet) or component name
    path: Path
    count: int


def profile_packages(model: str | Path | ModelSource, settings: Settings = Settings(), component: str = "unet", *,
                     tokens: int = 77, packages: PackageSource | None = None,
                     progress: bool = False) -> list[PricedPackage]:
    """Exactly the packages `profile_model` estimates for one component with these settings (converted, or
    taken from the cache, as profile does). The UNet: one package per unique block signature, counted once
    per block that has it (profile sums the blocks); the text encoder / VAE decoder: one package (batch 1).
    The sum of count x latency over the list is the component's profile figure."""
    if component not in ALL_COMPONENTS:
        raise SnapbenchError(f"unknown component {component!r}; choose from {', '.join(ALL_COMPONENTS)}")
    source = model if isinstance(model, ModelSource) else resolve_model(model)
    packages = packages or ConverterPackages()
    if component != "unet":
        got = packages.component_package(component, source, _component_settings(settings), tokens,
                                         progress=progress)
        return [PricedPackage(component, Path(getattr(got, "path", got)), 1)]
    cut = cut_model(source, settings, tokens)
    first = first_blocks(cut)
    counts = {k: sum(1 for b in cut if b.signature is not None and b.signature.key() == k) for k in first}
    paths = packages.block_packages(source, settings, tokens, set(first), progress=progress)
    return [PricedPackage(k, Path(paths[k]), counts[k]) for k in first]


def estimate_version(estimate_fn: Callable[..., Any] | None) -> Any:
    """The estimator's parameter version (to re-estimate rows made with older parameters); None if unknown."""
    if estimate_fn is not None:
        return getattr(estimate_fn, "params_version", None)
    try:
        from snapbench.profilers.estimate.params import load_params

        return getattr(load_params(), "version", None)
    except Exception:  # the estimator is another module's; an unknown version only disables refreshes
        return None


def _run(be: Any, jobs: list[PackageJob], progress: bool) -> dict[str, Measurement]:
    if not jobs:
        return {}
    if not progress:
        return be.measure(jobs)
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from snapbench.commands.common import err
    from snapbench.progress_log import make_progress

    with make_progress(f"profile ({be.name})", TextColumn(f"[bold]{be.name}[/bold]"), BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.description}"), console=err,
                       transient=True) as bar:
        task = bar.add_task("", total=len(jobs))
        return be.measure(jobs, on_done=lambda label: bar.update(task, advance=1, description=label))


def _resolve_import(path: Any, rows: list[ImportedRow], dev: Any, settings: Settings, cut: list[CutBlock],
                    comp_keys: dict[str, str]) -> dict[str, Measurement]:
    from snapbench.devices.catalog import resolve_device

    by_ref: dict[str, str] = {}
    for b in cut:
        if b.signature is None:
            continue
        k = b.signature.key()
        by_ref[b.block_id] = by_ref[b.unit.file_id] = by_ref[k] = k
    comp_refs = {c: k for c, k in comp_keys.items()}
    expected = settings.to_dict()
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
            key = by_ref.get(r.ref)
            if key is None:
                what = "signature" if r.by_signature else "block"
                raise SnapbenchError(f"{where}: {what} {r.ref!r} is not in this model with these settings "
                                     f"(see `snapbench inspect`; components: {', '.join(COMPONENTS)})")
            check_settings(path, r, expected)
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


def _ms(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)  # 0.1 us: finer than any backend resolves


def _row(dev: Any, s: Settings, b: CutBlock, key: str, m: Measurement, created: str) -> LatencyRow:
    return LatencyRow(
        device=dev.id, chip=dev.chip, backend=m.backend, compute_units=s.compute_units, precision=s.precision,
        weight_bits=s.weight_bits, attention=s.attention, stage=b.unit.slot.stage, block=b.block_id,
        signature=key, latency_ms=_ms(m.latency_ms), p90_ms=_ms(m.p90_ms), samples=m.samples, macs=b.macs,
        params=b.params, bytes_moved=m.bytes_moved, versions=m.versions or _short_versions(), created_at=created,
        batch=s.batch, latent=s.latent, placement=m.placement, source=m.source,
    )


def _component_row(dev: Any, s: Settings, name: str, key: str, m: Measurement, created: str, params: int = 0,
                   macs: int = 0) -> LatencyRow:
    return LatencyRow(
        device=dev.id, chip=dev.chip, backend=m.backend, compute_units=s.compute_units, precision=s.precision,
        weight_bits=s.weight_bits, attention=s.attention, stage="-", block=name, signature=key,
        latency_ms=_ms(m.latency_ms), p90_ms=_ms(m.p90_ms), samples=m.samples, macs=macs, params=params,
        bytes_moved=m.bytes_moved, versions=m.versions or _short_versions(), created_at=created,
        batch=s.batch, latent=s.latent, placement=m.placement, source=m.source,
    )


def _short_versions() -> str:
    from snapbench import __version__

    return f"snapbench={__version__}"


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
                        row.samples, row.backend, b.macs, b.params)


def block_latencies(model: str | Path | ModelSource, device: Any, settings: Settings = Settings(), *,
                    table: LatencyTable | None = None, backend: str = "auto", progress: bool = False,
                    tokens: int = 77, **kw: Any) -> list[BlockLatency]:
    """Every block of the model with its latency on `device`: table rows where they exist, the backend
    (`auto`: a connected device if any, else the estimator) for signatures the table lacks, each labelled with where it came from."""
    return profile_model(model, device, settings, table=table, backend=backend, components=("unet",),
                         tokens=tokens, progress=progress, **kw).blocks
