"""`profile` for DiTs: per-block and per-stage latency of one denoising step.

Each block signature's figure comes from the latency table when it has one for this device and settings
(measured > imported > estimated, as for UNets), else it is estimated from the block package's Core ML
program by the calibrated Neural Engine cost model and handed back as a new table row (labelled
"estimate": nothing here is measured). Packages come from converters/convert_dit.py, one per signature, kept in the
cache folder so a second profile (another device, say) converts nothing; a table that has every
signature converts nothing at all.

The measuring backends (iphone, mac, a device farm) and imported files go through profiling's one seam
instead (`profile_run.run_profile`, as for UNets: readiness checks, a row saved after every package,
resume, failures estimated and labelled); `from_run` turns that `ProfileRun` into the same DiT document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from snapbench.converters.cache import cache_key
from snapbench.converters.convert_dit import Say, shapes_of
from snapbench.converters.entry import ConvertRequest, convert
from snapbench.converters.options import ConvertOptions
from snapbench.devices.catalog import Device
from snapbench.dit.cut import STAGES
from snapbench.dit.source import dit_spec
from snapbench.errors import SnapbenchError
from snapbench.latency.table import LatencyRow, LatencyTable
from snapbench.model.loading import ModelSource
from snapbench.paths import cache_root
from snapbench.settings import RunSettings
from snapbench.versions import tool_versions

if TYPE_CHECKING:  # the estimator loads when a block is priced
    from snapbench.latency.model_latency import Failure, ProfileRun
    from snapbench.profilers.backends import Target
    from snapbench.profilers.estimate.cost_model import Estimate

EstimateFn = Callable[[Path, Device], "Estimate"]


class DitBlockRow(TypedDict):
    """One block of one denoising step, as `profile --json` lists it."""

    id: str
    file_id: str
    stage: str
    kind: str
    status: str
    signature: str  # "" for a removed block
    signature_digest: str
    latency_ms: float
    backend: str | None  # None: removed, nothing runs
    macs: int
    params: int
    placement: str
    p90_ms: float | None  # measured rows: the spread
    samples: int  # measured rows: timed runs (0 for an estimate)
    first_load_ms: float | None  # measured rows only
    warm_load_ms: float | None


class DitStageRow(TypedDict):
    stage: str
    ms: float
    TB_ms: float
    aux_ms: float
    blocks: int
    params: int
    macs: int


class DitSettingsDoc(TypedDict):
    latent: int
    batch: int
    tokens: int
    precision: str
    weight_bits: int
    attention: str
    image: int


class DitComponentDoc(TypedDict):
    latency_ms: float
    per: str
    backend: str


# `profile --json` for a DiT ("class" is a keyword, hence the functional form); `table` is added by the command
_DitProfileDoc = TypedDict("_DitProfileDoc", {
    "format": str, "model": str, "backbone": str, "class": str, "device": str, "chip": str, "backend": str,
    "settings": DitSettingsDoc, "components": dict[str, DitComponentDoc], "model_ms": float, "packages": int,
    "stages": list[DitStageRow], "blocks": list[DitBlockRow], "versions": dict[str, str], "notes": list[str],
    "load_ms": dict[str, dict[str, float]], "measured_on": "dict[str, str] | None", "failures": list[dict[str, str]]})


class DitProfileDoc(_DitProfileDoc, total=False):
    table: str


@dataclass
class DitProfile:
    source: ModelSource
    device: Device
    opts: ConvertOptions
    blocks: list[DitBlockRow]
    packages: int  # block signatures priced (packages converted or reused, or rows the table had)
    new_rows: list[LatencyRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    measured_on: Target | None = None  # the phone or Mac, when a measuring backend ran
    failures: list[Failure] = field(default_factory=list)  # packages it could not measure (then estimated)

    @property
    def step_ms(self) -> float:
        return sum(b["latency_ms"] for b in self.blocks)

    @property
    def backends(self) -> str:
        """Where the figures came from (removed blocks cost nothing and come from nowhere)."""
        return "+".join(sorted({b["backend"] for b in self.blocks if b["backend"]}))

    def stages(self) -> list[DitStageRow]:
        out: list[DitStageRow] = []
        for stage in STAGES:
            bs = [b for b in self.blocks if b["stage"] == stage]
            if not bs:
                continue
            out.append(DitStageRow(stage=stage, ms=sum(b["latency_ms"] for b in bs),
                                   TB_ms=sum(b["latency_ms"] for b in bs if b["kind"] == "TB"),
                                   aux_ms=sum(b["latency_ms"] for b in bs if b["kind"] == "aux"),
                                   blocks=len(bs), params=sum(b["params"] for b in bs),
                                   macs=sum(b["macs"] for b in bs)))
        return out

    def to_dict(self) -> DitProfileDoc:
        spec = dit_spec(self.source.spec)
        return {
            "format": "snapbench.profile/1", "model": spec.name, "backbone": "dit", "class": spec.class_name,
            "device": self.device.id, "chip": self.device.chip,
            "backend": self.backends,
            "settings": {"latent": self.opts.latent, "batch": self.opts.batch, "tokens": self.opts.tokens,
                         "precision": self.opts.precision, "weight_bits": self.opts.weight_bits,
                         "attention": self.opts.attention,
                         "image": self.opts.latent * spec.family.vae_factor},
            "components": {"transformer": {"latency_ms": self.step_ms, "per": "denoising step",
                                           "backend": self.backends}},
            "model_ms": self.step_ms, "packages": self.packages, "stages": self.stages(), "blocks": self.blocks,
            "load_ms": self.load_ms(),
            "measured_on": ({"name": t.name, "os_version": t.os_version, "os_build": t.os_build}
                            if (t := self.measured_on) is not None else None),
            "failures": [{"block": f.label, "package": str(f.path), "reason": f.reason} for f in self.failures],
            "versions": tool_versions(), "notes": self.notes,
        }

    def load_ms(self) -> dict[str, dict[str, float]]:
        """Measured only: loading the transformer's packages, first (Neural Engine compile) and warm, summed
        over one package per signature (what an app loading the blocks pays); empty unless every one was."""
        first: dict[str, float | None] = {}
        warm: dict[str, float | None] = {}
        for b in self.blocks:
            if b["signature"]:
                first[b["signature"]], warm[b["signature"]] = b["first_load_ms"], b["warm_load_ms"]
        if not first or any(v is None for v in (*first.values(), *warm.values())):
            return {}
        return {"transformer": {"first": sum(v for v in first.values() if v is not None),
                                "warm": sum(v for v in warm.values() if v is not None)}}


def packages_folder(source: ModelSource, opts: ConvertOptions) -> Path:
    """Where a model's profile-mode packages are cached: one folder per model, shapes and options."""
    key = cache_key({"dit": source.spec.to_dict(), "latent": opts.latent, "batch": opts.batch,
                     "tokens": opts.tokens, "attention": opts.attention}, opts, tool_versions())
    return cache_root() / "dit-packages" / f"{source.spec.name}-{key[:12]}"


def _estimate(path: Path, device: Device) -> Estimate:
    from snapbench.profilers.estimate.cost_model import estimate_package

    return estimate_package(path, device)


def settings_of(opts: ConvertOptions, compute_units: str = "cpu_and_ne") -> RunSettings:
    return RunSettings(compute_units=compute_units, precision=opts.precision, weight_bits=opts.weight_bits,
                       attention=opts.attention, batch=opts.batch, latent=opts.latent, tokens=opts.tokens)


@dataclass(frozen=True)
class _Where:
    """A block's place and size, from a cut block or a profile run's `BlockLatency`."""

    id: str
    file_id: str
    stage: str
    kind: str
    status: str
    macs: int
    params: int


def _block(b: _Where, *, signature: str, latency_ms: float, backend: str | None, placement: str,
           p90_ms: float | None = None, samples: int = 0, first_load_ms: float | None = None,
           warm_load_ms: float | None = None) -> DitBlockRow:
    """One block of the document."""
    return {"id": b.id, "file_id": b.file_id, "stage": b.stage, "kind": b.kind, "status": b.status,
            "signature": signature, "signature_digest": _digest(signature), "latency_ms": latency_ms,
            "p90_ms": p90_ms, "samples": samples, "backend": backend, "macs": b.macs if signature else 0,
            "params": b.params if signature else 0, "placement": placement, "first_load_ms": first_load_ms,
            "warm_load_ms": warm_load_ms}


def _digest(signature: str) -> str:
    """`Signature.digest` of a key (the same short hash), "" for a block that does not run."""
    import hashlib

    return hashlib.sha1(signature.encode()).hexdigest()[:12] if signature else ""


def _off_engine(blocks: list[DitBlockRow]) -> list[str]:
    off = sorted({str(r["id"]) for r in blocks if "cpu=" in r["placement"] and "cpu=0" not in r["placement"]})
    return [f"ops placed off the Neural Engine in: {', '.join(off)}"] if off else []


def from_run(run: ProfileRun, source: ModelSource, opts: ConvertOptions) -> DitProfile:
    """The DiT document of a run through profiling's seam (a measuring backend, an import, a farm)."""
    blocks: list[DitBlockRow] = []
    for b in run.blocks:
        row = run.table.lookup(run.device.id, run.settings, b.signature) if b.signature else None
        where = _Where(b.id, b.file_id, b.stage, b.kind, b.status, b.macs, b.params)
        blocks.append(_block(where, signature=b.signature or "", latency_ms=float(b.latency_ms), backend=b.backend,
                             placement=row.placement if row is not None else "", p90_ms=b.p90_ms,
                             samples=b.samples, first_load_ms=b.first_load_ms, warm_load_ms=b.warm_load_ms))
    signatures = {b.signature for b in run.blocks if b.signature}
    return DitProfile(source, run.device, opts, blocks, len(signatures), list(run.new_rows), _off_engine(blocks),
                      run.measured_on, list(run.failures))


def profile_dit(source: ModelSource, dev: Device, opts: ConvertOptions, *,
                table: LatencyTable | None = None, packages: Path | None = None,
                say: Say | None = None, estimate: EstimateFn = _estimate,
                before_writing: Callable[[], object] | None = None) -> DitProfile:
    """Every block of a DiT on `device`: from `table` where it has the signature, else estimated (converting
    the packages first where needed; `before_writing` is called first: a table that cannot be written
    refuses there, before the conversion)."""
    from snapbench.backbones.dit import DitBackbone
    from snapbench.latency.model_latency import PackageToPrice, now, to_row
    from snapbench.profilers.measurement import Measurement

    settings = settings_of(opts)
    backbone = DitBackbone()
    blocks = backbone.cut(backbone.build(source, device="meta"), shapes_of(opts), precision=opts.precision,
                          attention=opts.attention)
    keys = {b.signature.key(): b for b in reversed(blocks) if b.signature is not None}  # first block wins
    blocks_run = [b for b in blocks if b.signature is not None]
    rows: dict[str, LatencyRow] = {}
    if table is not None:
        rows = {k: r for k in keys if (r := table.lookup(dev.id, settings, k)) is not None}
    new_rows: list[LatencyRow] = []
    missing = [k for k in keys if k not in rows]
    if missing:
        if before_writing is not None:
            before_writing()
        folder = Path(packages) if packages is not None else packages_folder(source, opts)
        converted = convert(ConvertRequest(source, folder, opts, say=say, shared_folder=packages is None))
        if converted.failed:
            block, error = converted.failed[0]
            raise SnapbenchError(f"{source.spec.name}: converting {block} failed ({error}); see {folder}/manifest.json")
        paths = {b.signature: folder / b.package for b in converted.manifest.blocks if b.package and b.signature}
        created = now()
        for k in missing:
            b = keys[k]
            item = PackageToPrice(k, b.block_id, "unet", settings, sum(x.signature == b.signature for x in blocks_run), b)
            row = to_row(dev, item, Measurement.from_estimate(estimate(paths[k], dev)), created)
            rows[k] = row
            new_rows.append(row)
    out: list[DitBlockRow] = []
    for b in blocks:
        view = _Where(b.block_id, b.unit.file_id, b.unit.slot.stage, b.kind, b.unit.status, b.macs, b.params)
        if b.signature is None:  # a removed block: nothing runs
            out.append(_block(view, signature="", latency_ms=0.0, backend=None, placement=""))
            continue
        row = rows[b.signature.key()]
        out.append(_block(view, signature=b.signature.key(), latency_ms=float(row.latency_ms), backend=row.backend,
                          placement=row.placement, p90_ms=row.p90_ms, samples=row.samples,
                          first_load_ms=row.first_load_ms, warm_load_ms=row.warm_load_ms))
    return DitProfile(source, dev, opts, out, len(keys), new_rows, _off_engine(out))

