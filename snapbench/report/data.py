"""The report's data, typed: what `gather()` builds, the page renders and `--json` writes.

Each dataclass names the fields of one part of the report; `ReportData.to_dict()` is the one place that
turns them into the JSON document (schema `snapbench.report/1`): its keys and their order are the
document's, so `report --json` writes the same bytes it wrote when the data was a plain dict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, TypedDict

from snapbench.devices.catalog import Device
from snapbench.json_types import JSON, JSONObject

if TYPE_CHECKING:
    from snapbench.validation.run import HeldOutFit
    from snapbench.validation.trust import ErrorBand, Summary, TrustRow

# The report's document (`to_dict()`s) is only written as JSON and read by the page's template: its
# values are passed through, so `object`.
Document = dict[str, object]


class ReportSettings(TypedDict, total=False):
    """The report's settings (RunSettings' table fields): what `gather` takes (any of them) and the document
    records (all of them). latent None: each model at its own config's sample_size."""

    compute_units: str
    precision: str
    weight_bits: int
    attention: str
    batch: int
    latent: int | None


class ReferenceRow(TypedDict):
    """A row of a reference file (report/reference.py), its columns in the file's order, and its line."""

    source: str
    device: str
    model: str
    component: str
    latency_ms: float
    per: str
    runtime: str
    attention: str
    weight_bits: str
    batch: str
    notes: str
    line: int


class TrustDevice(TypedDict):
    """One report device in the trust section: its chip's error band and how many corpus rows back it."""

    device: str
    name: str
    chip: str
    band: ErrorBand
    chip_rows: str | int | float
    chip_median_abs_error_pct: str | int | float | None


class TrustSection(TypedDict):
    """The report's "How far to trust these numbers" (report/trust.py): the shipped validation's figures
    as written (snapbench.validation.trust), per device, and the rows the chart plots."""

    cross: str
    stale: bool
    params_version: int
    overall: Summary
    by_chip: list[Summary]
    fits: list[HeldOutFit]
    per_device: list[TrustDevice]
    unseen_app: JSONObject | None
    ranks: list[Summary]
    rows: list[TrustRow]
    highlight_chips: list[str]


@dataclass
class TrajectoryRow:
    """One row of an evolve run's trajectory.csv, with the label of the latency source behind it."""

    iteration: int
    phase: str
    action: str
    block: str
    latency_ms: float | None
    quality: float | None
    value: float | None
    backend: str
    label: str


@dataclass
class Trajectory:
    file: str
    rows: list[TrajectoryRow]
    problem: str | None  # why the file could not be read; the rest of the report still stands


@dataclass(frozen=True)
class Denoiser:
    """The family of the report's denoising networks (one per report): what the page calls the network, the
    block kinds it counts per stage, and how its stages are defined."""

    family: str  # the backbone's name: "sd-unet", "sdxl-unet", "dit"
    name: str  # "UNet" | "transformer"
    kinds: tuple[str, ...]  # the elastic block kinds: ("CA", "RB") for a UNet, ("TB",) for a DiT
    stages_note: str


# Per-kind fields of the stage rows: a UNet's CA/RB, a DiT's TB. Those of the other family are None in the
# dataclasses and left out of the JSON, so a UNet report's document is what it was before DiTs.
KIND_FIELDS = frozenset({"CA", "RB", "TB", "CA_swapped", "RB_swapped", "TB_swapped", "ca_params", "rb_params",
                         "tb_params", "ca_ms", "rb_ms", "tb_ms", "variant"})


def without_absent_kinds(d: Document) -> Document:
    return {k: v for k, v in d.items() if v is not None or k not in KIND_FIELDS}


@dataclass
class ArchitectureBlock:
    id: str
    kind: str  # "CA" | "RB" | "TB"
    status: str
    variant: str | None  # the label of the cheaper variant it runs as (separable x2, MQA, ...), if any


@dataclass
class StageArchitecture:
    """Blocks that run in one stage, per kind (None: a kind the family does not have)."""

    stage: str
    CA: int | None
    RB: int | None
    CA_swapped: int | None  # running blocks of that kind swapped for a cheaper variant
    RB_swapped: int | None
    blocks: list[ArchitectureBlock]
    TB: int | None = None
    TB_swapped: int | None = None

    def to_dict(self) -> Document:
        return without_absent_kinds(asdict(self))


@dataclass
class StageParams:
    stage: str
    ca_params: int | None
    rb_params: int | None
    aux_params: int
    params: int
    macs: int
    tb_params: int | None = None

    def to_dict(self) -> Document:
        return without_absent_kinds(asdict(self))


@dataclass
class ModelSummary:
    """One model's structure: what it is, its parameters and MACs per stage, its evolve trajectory."""

    key: str
    name: str
    ref: str
    role: str
    description: str
    notes: dict[str, str | int | float | bool]
    claimed_params: JSON  # the arch spec's note, as written
    claim_comparable: bool
    steps: int
    steps_source: str
    latent: int
    decoder_source: str
    sample_grid: str | None
    totals: dict[str, int]
    stage_params: list[StageParams]
    architecture: list[StageArchitecture]
    trajectory: Trajectory | None
    tokens: int | None = None  # a DiT's text length as priced (its pipeline's); a UNet's is CLIP's 77, not shown

    def to_dict(self) -> Document:
        out = asdict(self)
        if self.tokens is None:
            del out["tokens"]
        out["stage_params"] = [p.to_dict() for p in self.stage_params]
        out["architecture"] = [a.to_dict() for a in self.architecture]
        return out


@dataclass
class ComponentFigure:
    ms: float | None
    per: str
    backend: str | None
    label: str


@dataclass
class BlockResult:
    id: str
    stage: str
    kind: str
    status: str
    change: str | None
    runs: bool
    module: str
    signature: str | None
    macs: int
    params: int
    latency_ms: float | None
    p90_ms: float | None
    samples: int | None
    backend: str | None
    label: str
    tflops: float | None = None
    peak_share: float | None = None
    latency_share: float | None = None
    variant: str | None = None  # the cheaper variant a swapped block runs as (a DiT's kv_heads / ff_mult)


@dataclass
class StageLatency:
    stage: str
    ms: float
    ca_ms: float | None
    rb_ms: float | None
    aux_ms: float
    tb_ms: float | None = None


@dataclass
class Budget:
    """Seconds per image; the app floor and the error band only when the report has them."""

    text_encoder_ms: float
    unet_ms: float
    vae_decoder_ms: float
    total_ms: float
    total_s: float
    app_floor_ms: float | None = None
    app_calls: int | None = None
    in_app_s: float | None = None
    error_band_s: list[float] | None = None

    def to_dict(self) -> Document:
        return {k: v for k, v in asdict(self).items() if v is not None or k in _BUDGET_ALWAYS}


_BUDGET_ALWAYS = ("text_encoder_ms", "unet_ms", "vae_decoder_ms", "total_ms", "total_s")


@dataclass
class LoadTimes:
    first: float | None
    warm: float | None


@dataclass
class MeasuredOn:
    name: str
    os_version: str | None
    os_build: str | None


@dataclass
class ModelResult:
    """One model on one device: its latency per component, stage and block, or why there is none."""

    model: str
    device: str
    steps: int
    notes: list[str]
    available: bool
    reason: str | None
    backend: str | None
    labels: list[str]
    components: dict[str, ComponentFigure]
    budget: Budget | None
    stages: list[StageLatency]
    blocks: list[BlockResult]
    # only when available
    budget_missing: list[str] = field(default_factory=list)
    block_latency_sum_ms: float = 0.0
    profile_settings: dict[str, JSON] = field(default_factory=dict)  # RunSettings.to_dict()
    profile_versions: dict[str, str] = field(default_factory=dict)
    profile_created_at: str | None = None
    load_ms: dict[str, LoadTimes] = field(default_factory=dict)
    measured_on: MeasuredOn | None = None
    # against the baseline on the same device
    speedup_e2e: float | None = None
    speedup_unet_step: float | None = None

    def to_dict(self) -> Document:
        out: Document = {
            "model": self.model, "device": self.device, "steps": self.steps, "notes": list(self.notes),
            "available": self.available, "reason": self.reason, "backend": self.backend,
            "labels": list(self.labels), "components": {k: asdict(v) for k, v in self.components.items()},
            "budget": self.budget.to_dict() if self.budget is not None else None,
        }
        if self.available:
            out["budget_missing"] = list(self.budget_missing)
        out.update(stages=[without_absent_kinds(asdict(s)) for s in self.stages],
                   blocks=[without_absent_kinds(asdict(b)) for b in self.blocks])
        if self.available:
            out.update(block_latency_sum_ms=self.block_latency_sum_ms, profile_settings=dict(self.profile_settings),
                       profile_versions=dict(self.profile_versions), profile_created_at=self.profile_created_at,
                       load_ms={k: asdict(v) for k, v in self.load_ms.items()},
                       measured_on=asdict(self.measured_on) if self.measured_on is not None else None)
        out.update(speedup_e2e=self.speedup_e2e, speedup_unet_step=self.speedup_unet_step)
        return out


@dataclass
class ReferenceMatch:
    """A reference row as written, with this report's figure for the same model, device and component.

    `ours_status`: "matched" (a figure to compare), "missing" (the model and device are in the report but
    that component has no latency), "absent" (the model or device is not part of this report)."""

    row: ReferenceRow  # the reference file's columns, and its line
    settings_differ: list[str]
    ours_model: str | None = None
    ours_ms: float | None = None
    ours_label: str | None = None
    ratio: float | None = None
    ours_status: str = "absent"

    def to_dict(self) -> Document:
        return {**self.row, "settings_differ": list(self.settings_differ), "ours_model": self.ours_model,
                "ours_ms": self.ours_ms, "ours_label": self.ours_label, "ratio": self.ratio,
                "ours_status": self.ours_status}


@dataclass
class Reference:
    source: str
    shipped: bool
    rows: list[ReferenceMatch]


@dataclass
class ReportData:
    schema: str
    title: str
    created_at: str
    command: str | None
    versions: dict[str, str]
    settings: ReportSettings  # RunSettings' table fields; latent None: each model's own
    requested_backend: str
    table: str | None
    baseline: str  # the key of the baseline model
    models: list[ModelSummary]
    devices: list[Device]
    results: list[ModelResult]
    latency_labels: list[str]
    mixed_sources: bool
    reference: Reference
    stages: list[str]  # the backbones' stages, in order
    text_encoder_runs: int
    app_floor_ms: float | None
    trust: TrustSection | None  # the shipped validation's summary (snapbench.validation.trust)
    denoiser: Denoiser

    def to_dict(self) -> Document:
        """The JSON document `report --json` writes and the page's `data-json` paths point into."""
        return {
            "schema": self.schema, "title": self.title, "created_at": self.created_at, "command": self.command,
            "versions": dict(self.versions), "settings": dict(self.settings),
            "requested_backend": self.requested_backend, "table": self.table, "baseline": self.baseline,
            "models": [m.to_dict() for m in self.models],
            "devices": self.device_dicts(),
            "results": [r.to_dict() for r in self.results],
            "latency_labels": list(self.latency_labels), "mixed_sources": self.mixed_sources,
            "reference": {"source": self.reference.source, "shipped": self.reference.shipped,
                          "rows": [r.to_dict() for r in self.reference.rows]},
            "stages": list(self.stages), "text_encoder_runs": self.text_encoder_runs,
            "app_floor_ms": self.app_floor_ms, "trust": self.trust,
            "denoiser": {**asdict(self.denoiser), "kinds": list(self.denoiser.kinds)},
        }

    def device_dicts(self) -> list[Document]:
        """The report's devices as the document lists them: catalog facts and the engine's fp16 peak."""
        return [{**d.to_dict(), "fp16_peak_tflops": d.ane_fp16_tflops} for d in self.devices]
