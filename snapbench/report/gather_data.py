"""Everything a report shows, gathered into one `ReportData` (report/data.py): the single source of truth
for the HTML page and for `--json`.

Structure (architecture, params, MACs) comes from `inspect_model`; latency comes only from the profiler's
typed result (see `latency_source`), each figure carrying the backend that produced it. Derived figures
(end-to-end seconds, speedups, achieved TFLOP/s, shares) are computed here, once, so the page and the JSON
can never disagree.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from snapbench.backbones import backbone_for, inspect_model, resolve_model
from snapbench.blocks.cut import InputShapes
from snapbench.blocks.inspection import BlockRow, Inspection
from snapbench.devices.catalog import Device
from snapbench.errors import SnapbenchError
from snapbench.evolution.trajectory import TRAJECTORY_FILE, Cell
from snapbench.latency.end_to_end import TEXT_ENCODER_RUNS, image_budget
from snapbench.model.loading import ModelSource, model_latent
from snapbench.report.data import (
    ArchitectureBlock,
    BlockResult,
    Budget,
    ComponentFigure,
    Denoiser,
    LoadTimes,
    MeasuredOn,
    ModelResult,
    ModelSummary,
    Reference,
    ReferenceMatch,
    ReferenceRow,
    ReportData,
    ReportSettings,
    StageArchitecture,
    StageLatency,
    StageParams,
    Trajectory,
    TrajectoryRow,
)
from snapbench.report.latency_source import (
    PricedSettings,
    ProfileOutcome,
    Profiler,
    backend_label,
    priced_settings,
    profile_with_snapbench,
)
from snapbench.report.reference import load_reference, settings_differences
from snapbench.settings import COMPONENTS, RunSettings
from snapbench.specs.variants import Variant
from snapbench.versions import tool_versions

if TYPE_CHECKING:
    from snapbench.dit.family import Family

SCHEMA = "snapbench.report/1"
COMPONENT_NAMES = {"text_encoder": "text encoder", "unet": "UNet", "vae_decoder": "VAE decoder"}
COMPONENT_PER = {"text_encoder": "run", "unet": "denoising step", "vae_decoder": "image"}
# Sampling steps when nothing else says: the 50 steps behind SD-v1.5's budget in the paper's Table 1.
DEFAULT_STEPS = 50
# SnapFusion's UNet is step-distilled to 8 steps (paper, "Step distillation"); its test-sized twin shares it.
DISTILLED_STEPS = {"snapfusion": 8, "snapfusion-tiny": 8}
SETTING_KEYS = tuple(RunSettings().table_dict())  # compute_units, precision, weight_bits, attention, batch, latent
# RunSettings' defaults, but latent None: each model at its own config's sample_size
_RUN = RunSettings()
DEFAULT_SETTINGS: ReportSettings = {"compute_units": _RUN.compute_units, "precision": _RUN.precision,
                                    "weight_bits": _RUN.weight_bits, "attention": _RUN.attention,
                                    "batch": _RUN.batch, "latent": None}


@dataclass
class ModelEntry:
    key: str  # unique within the report (the spec name, suffixed if two models share one)
    ref: str  # what the user typed
    role: str  # "baseline" | "candidate"
    inspection: Inspection
    steps: int
    steps_source: str
    latent: int  # the latent size it is priced at: --latent, else its own config's
    tokens: int  # the text length it is priced at: 77 for SD's CLIP, a DiT's own pipeline's (300, 333, ...)
    family: str  # its backbone's name
    priced: PricedSettings  # the settings it is priced at; `inspection` was cut at them (the profiler reuses it)


_UNET_STAGES = ("Stages are the paper's: Down-1 to Down-3, Mid and Up-1 to Up-3, the UNet's resolution levels; "
                "CA is a cross-attention block, RB a ResNet block, aux the conv in/out, time embedding and samplers.")
_DIT_STAGES = ("A DiT has no resolution levels, so its stages are groups of blocks: Embed (patch, timestep and caption "
               "embeddings), DiT-1 to DiT-4 (the stack of transformer blocks, TB, split in execution order into four "
               "near-equal runs of consecutive blocks, the larger runs first) and Final (final norm and "
               "projection). TB[DiT-2, 7] is transformer_blocks.6: blocks are numbered by depth through the stack.")


def denoiser_of(family: str) -> Denoiser:
    if family == "dit":
        return Denoiser(family, "transformer", ("TB",), _DIT_STAGES)
    return Denoiser(family, "UNet", ("CA", "RB"), _UNET_STAGES)


def _family_word(family: str) -> str:
    return "a diffusion transformer" if family == "dit" else "a UNet"


# -- inputs ---------------------------------------------------------------------------------------------


def parse_steps(items: Sequence[str]) -> dict[str, int]:
    """`--steps MODEL=N` items -> {MODEL: N}."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise SnapbenchError(f"--steps {item!r}: expected MODEL=N, e.g. --steps snapfusion=8")
        try:
            n = int(value)
        except ValueError:
            raise SnapbenchError(f"--steps {item!r}: {value!r} is not a whole number") from None
        if n < 1:
            raise SnapbenchError(f"--steps {item!r}: steps must be at least 1")
        out[name.strip()] = n
    return out


def _steps_for(ref: str, name: str, overrides: Mapping[str, int], notes: Mapping[str, object],
               family: Family | None = None) -> tuple[int, str]:
    """The sampling steps a model's end-to-end figure counts, and why; `family`: a DiT's."""
    for k in (ref, name):
        if k in overrides:
            return overrides[k], "--steps"
    noted = notes.get("steps")
    if isinstance(noted, int) and not isinstance(noted, bool):
        return noted, "the arch spec's notes"
    from snapbench.distillation.provenance import distilled_steps

    here = distilled_steps(ref)
    if here is not None:
        return here
    if name in DISTILLED_STEPS:
        return DISTILLED_STEPS[name], "the SnapFusion paper's step distillation (assumed, not distilled here)"
    if family is not None:
        return family.steps, f"{family.title} pipeline's default in diffusers (num_inference_steps)"
    return DEFAULT_STEPS, "default (SD-v1.5 sampling in the paper's Table 1)"


def load_models(baseline: str, candidates: Sequence[str], *, settings: ReportSettings,
                steps: Mapping[str, int]) -> list[ModelEntry]:
    entries: list[ModelEntry] = []
    seen: dict[str, int] = {}
    refs = [("baseline", baseline)] + [("candidate", c) for c in candidates]
    sources = [(role, ref, resolve_model(ref)) for role, ref in refs]
    families = [backbone_for(source).name for _, _, source in sources]
    for (_, ref, _), family in zip(sources[1:], families[1:]):
        if (family == "dit") != (families[0] == "dit"):
            # stages, block kinds and the per-step component differ: one table cannot set them side by side
            raise SnapbenchError(f"--candidate {ref} is {_family_word(family)} and --baseline {baseline} "
                                 f"{_family_word(families[0])}: a report compares models of one kind; report "
                                 "them separately, each against a baseline of its own kind")
    for (role, ref, source), family in zip(sources, families):
        latent = model_latent(source.spec, settings.get("latent"))
        tokens = _tokens(source, family)
        priced = priced_settings(settings, latent, tokens)
        # cut once at the priced settings: the profiler prices these very blocks (cutting is most of a
        # report of tiny models; each cut runs the network on the meta device and counts every block)
        shapes = InputShapes(latent=latent, batch=priced["batch"], tokens=tokens)
        inspection = inspect_model(source, shapes=shapes, attention=priced["attention"], precision=priced["precision"])
        name = inspection.name
        seen[name] = seen.get(name, 0) + 1
        key = name if seen[name] == 1 else f"{name}#{seen[name]}"
        n, src = _steps_for(ref, name, steps, inspection.source.spec.notes,
                            _dit_family(source) if family == "dit" else None)
        entries.append(ModelEntry(key, ref, role, inspection, n, src, latent, tokens, family, priced))
    known = {e.ref for e in entries} | {e.inspection.name for e in entries}
    unknown = [k for k in steps if k not in known]
    if unknown:
        raise SnapbenchError(f"--steps names {unknown[0]!r}, which is not a model of this report "
                             f"(models: {', '.join(sorted(known))})")
    return entries


def _dit_family(source: ModelSource) -> Family:
    from snapbench.dit.source import dit_spec

    return dit_spec(source.spec).family


def _tokens(source: ModelSource, family: str) -> int:
    """A DiT is priced at its own pipeline's text length (as `snapbench profile` prices it, so the report
    reads the rows profile wrote); a UNet at CLIP's 77."""
    if family != "dit":
        return InputShapes().tokens
    from snapbench.dit.source import dit_spec

    return dit_spec(source.spec).text_tokens()


def distinct_devices(devices: Sequence[Device]) -> list[Device]:
    """Each device once, in the order given ("iPhone 14 Pro" and "iphone14pro" resolve to one device)."""
    out: list[Device] = []
    for dev in devices:
        if dev.id not in [o.id for o in out]:
            out.append(dev)
    return out


def find_trajectory(ref: str) -> Path | None:
    """An evolve output folder (or the folder of its arch.json) holds trajectory.csv."""
    p = Path(ref)
    folder = p if p.is_dir() else p.parent if p.suffix == ".json" and p.is_file() else None
    if folder is None:
        return None
    f = folder / TRAJECTORY_FILE
    return f if f.is_file() else None


def read_trajectory(path: Path) -> tuple[list[TrajectoryRow], str | None]:
    """(rows, problem), in evolve's own format (snapbench.evolution.trajectory). A broken trajectory is
    reported in the page, not fatal: the rest of the report still stands."""
    from snapbench.evolution.trajectory import read_trajectory as read_evolve_trajectory

    try:
        raw = read_evolve_trajectory(path)
    except SnapbenchError as e:
        return [], str(e)
    except (ValueError, OSError) as e:
        return [], f"{path}: {e}"
    rows = []
    for r in raw:
        backend = str(r.get("latency_backend") or "")
        labels = {backend_label(b) for b in backend.split("+") if b}
        iteration = r["iteration"]
        rows.append(TrajectoryRow(iteration if isinstance(iteration, int) else 0, str(r.get("phase") or ""),
                                  str(r.get("action") or ""), str(r.get("block") or ""), _number(r.get("latency_ms")),
                                  _number(r.get("quality")), _number(r.get("value")), backend,
                                  labels.pop() if len(labels) == 1 else "mixed" if labels else "unlabelled"))
    return rows, None


def _number(cell: Cell) -> float | None:
    """A number column of trajectory.csv as read (None where empty)."""
    return float(cell) if isinstance(cell, (int, float)) else None


# -- per model: structure -------------------------------------------------------------------------------


def _variant_label(row: BlockRow) -> str | None:
    """The label of the cheaper variant an inspection row runs as ("MQA", "separable x2"), if any."""
    v = row.get("variant")
    return Variant.from_dict(v, row["kind"], row["id"]).label() if v else None


def _model_summary(e: ModelEntry) -> ModelSummary:
    from snapbench.distillation.provenance import decoder_source, toy_grid_data_uri

    spec = e.inspection.source.spec
    kinds = denoiser_of(e.family).kinds
    totals = e.inspection.totals()
    stage_rows = {r["stage"]: r for r in e.inspection.stage_frame().to_dict(orient="records")}
    architecture = []
    counts = spec.counts()
    for stage in e.inspection.stages:
        blocks = [ArchitectureBlock(b["id"], b["kind"], b["status"], _variant_label(b))
                  for b in e.inspection.block_rows() if b["stage"] == stage and b["kind"] in kinds]
        # swapped: blocks that run as a cheaper variant (SnapGen-style, or an evolve --moves swap), copies too
        swapped = {k: sum(1 for b in blocks if b.kind == k and b.variant and b.status != "removed") for k in kinds}
        n = {k: counts.get(stage, {}).get(k, 0) for k in kinds}
        architecture.append(StageArchitecture(stage, n.get("CA"), n.get("RB"), swapped.get("CA"), swapped.get("RB"),
                                              blocks, n.get("TB"), swapped.get("TB")))
    traj_file = find_trajectory(e.ref)
    trajectory = None
    if traj_file is not None:
        rows, problem = read_trajectory(traj_file)
        trajectory = Trajectory(str(traj_file), rows, problem)

    def kind_params(stage: str, kind: str) -> int | None:
        return int(stage_rows[stage][f"{kind}_params"]) if kind in kinds else None

    # a UNet's claim is the paper's; a DiT preset's, the published count (model card or paper)
    claimed = spec.notes.get("paper_claimed_params", spec.notes.get("published_params"))
    return ModelSummary(
        key=e.key, name=spec.name, ref=e.ref, role=e.role, description=spec.description,
        notes={k: v for k, v in spec.notes.items() if isinstance(v, (str, int, float, bool))},
        claimed_params=claimed,
        # Test-sized twins inherit the paper's notes; a claim 100x off is about another size, not an error.
        claim_comparable=_comparable(claimed, totals["params"]),
        steps=e.steps, steps_source=e.steps_source, latent=e.latent,
        decoder_source=decoder_source(e.ref, spec.name) if e.family != "dit" else _dit_decoder(e),
        sample_grid=toy_grid_data_uri(e.ref) if e.role == "candidate" else None,
        totals=totals,
        stage_params=[StageParams(s, kind_params(s, "CA"), kind_params(s, "RB"), int(stage_rows[s]["aux_params"]),
                                  int(stage_rows[s]["params"]), int(stage_rows[s]["macs"]), kind_params(s, "TB"))
                      for s in e.inspection.stages],
        architecture=architecture,
        trajectory=trajectory,
        tokens=e.tokens if e.family == "dit" else None,
    )


def _dit_decoder(e: ModelEntry) -> str:
    """Which VAE decodes a DiT's latents (what its pipeline part is priced as)."""
    from snapbench.converters.dit_app import vae_config
    from snapbench.dit.source import dit_spec

    return f"{vae_config(dit_spec(e.inspection.source.spec))[0]} (random weights: latency does not depend on them)"


def _comparable(claimed: object, ours: int) -> bool:
    return isinstance(claimed, (int, float)) and claimed > 0 and 0.5 <= ours / claimed <= 2.0


# -- per model and device: latency ----------------------------------------------------------------------


def _result(e: ModelEntry, device: Device, outcome: ProfileOutcome) -> ModelResult:
    notes = list(outcome.notes)
    run = outcome.run
    if run is None:
        return ModelResult(e.key, device.id, e.steps, notes, available=False,
                           reason=outcome.reason or "no latency could be obtained", backend=None, labels=[],
                           components={}, budget=None, stages=[], blocks=[])
    used = {c.backend for c in outcome.components.values()} | {b.backend for b in run.blocks if b.backend}
    run_backend = used.pop() if len(used) == 1 else "mixed"
    components: dict[str, ComponentFigure] = {}
    for c in COMPONENTS:
        got = outcome.components.get(c)
        components[c] = ComponentFigure(got.latency_ms if got else None, COMPONENT_PER[c],
                                        got.backend if got else None,
                                        backend_label(got.backend) if got else "not available")

    run_blocks = {b.id: b for b in run.blocks}
    blocks: list[BlockResult] = []
    missing_latency = []
    for row in e.inspection.block_rows():
        d = run_blocks.pop(row["id"], None)
        runs = row["signature"] is not None
        lat = d.latency_ms if runs and d is not None else None
        if runs and lat is None:
            missing_latency.append(row["id"])
        block_backend = d.backend if lat is not None and d is not None else None
        blocks.append(BlockResult(
            id=row["id"], stage=row["stage"], kind=row["kind"], status=row["status"],
            change={"removed": "removed", "copy": "added"}.get(row["status"]), runs=runs,
            module=row["module"], signature=row["signature"], macs=int(row["macs"]),
            params=int(row["params"]), latency_ms=lat, p90_ms=d.p90_ms if lat is not None and d is not None else None,
            samples=d.samples if d is not None else None, backend=block_backend,
            label=backend_label(block_backend) if block_backend else "not available",
            variant=_variant_label(row),
        ))
    if run_blocks:  # the profiler knows blocks the inspection does not: a mismatch worth saying, not hiding
        notes.append(f"the profile has {len(run_blocks)} block(s) this model's inspection lacks "
                     f"({', '.join(list(run_blocks)[:3])}); they are left out")
    if missing_latency:
        notes.append(f"no latency for {len(missing_latency)} block(s) that run "
                     f"({', '.join(missing_latency[:3])}{', ...' if len(missing_latency) > 3 else ''}); "
                     "their shares and stage sums leave them out")

    total_block_ms = sum(b.latency_ms for b in blocks if b.latency_ms is not None)
    peak = device.ane_fp16_tflops
    for b in blocks:
        lat = b.latency_ms
        if lat is not None and lat > 0:
            b.tflops = 2 * b.macs / (lat * 1e-3) / 1e12
            b.peak_share = b.tflops / peak if peak else None
            b.latency_share = lat / total_block_ms if total_block_ms > 0 else None

    stages = _stages(blocks, e.inspection.stages, denoiser_of(e.family).kinds)
    # "mixed" describes a total, not a source: the sources are those of its parts
    labels = sorted(({c.label for c in components.values() if c.ms is not None}
                     | {b.label for b in blocks if b.latency_ms is not None}) - {"mixed"})
    block_labels: dict[str, int] = {}
    for b in blocks:
        if b.latency_ms is not None:
            block_labels[b.label] = block_labels.get(b.label, 0) + 1
    if len(block_labels) > 1:
        notes.append("block latencies come from more than one source: "
                     + ", ".join(f"{n} {lab}" for lab, n in sorted(block_labels.items())))

    budget = None
    missing = [COMPONENT_NAMES[c] for c, fig in components.items() if fig.ms is None]
    te, un, va = (components[c].ms for c in ("text_encoder", "unet", "vae_decoder"))
    if te is not None and un is not None and va is not None:
        budget = Budget(**image_budget(float(te), float(un), float(va), e.steps).to_dict())
    else:
        notes.append(f"no end-to-end figure: no latency for the {', '.join(missing)}")
    where = outcome.measured_on
    return ModelResult(
        e.key, device.id, e.steps, notes, available=True, reason=None, backend=run_backend, labels=labels,
        components=components, budget=budget, budget_missing=missing, stages=stages, blocks=blocks,
        block_latency_sum_ms=total_block_ms, profile_settings=run.settings.to_dict(),
        profile_versions=run.versions, profile_created_at=run.created_at,
        # measured only: loading each component before its first run (first = Neural Engine compile)
        load_ms={c: LoadTimes(v.first_load_ms, v.warm_load_ms)
                 for c, v in outcome.components.items() if v.first_load_ms is not None},
        measured_on=MeasuredOn(where.name, where.os_version, where.os_build) if where is not None else None)


def _stages(blocks: list[BlockResult], stages: Sequence[str], kinds: Sequence[str]) -> list[StageLatency]:
    """Per stage latency by block kind (a UNet's CA and RB, a DiT's TB) and auxiliary: the sums of the block
    rows that have a latency; a kind the family lacks is None."""
    out = []
    for stage in stages:
        ms = {kind: sum(b.latency_ms for b in blocks if b.stage == stage and b.kind == kind
                        and b.latency_ms is not None) for kind in (*kinds, "aux")}
        out.append(StageLatency(stage, sum(ms.values()), ms.get("CA"), ms.get("RB"), ms["aux"], ms.get("TB")))
    return out


def _attach_speedups(results: list[ModelResult], baseline_key: str) -> None:
    base = {r.device: r for r in results if r.model == baseline_key}
    for r in results:
        b = base.get(r.device)
        r.speedup_e2e = r.speedup_unet_step = None
        if r.model == baseline_key or b is None or not r.available or not b.available:
            continue
        if r.budget and b.budget and r.budget.total_ms > 0:
            r.speedup_e2e = b.budget.total_ms / r.budget.total_ms
        ru, bu = r.components["unet"].ms, b.components["unet"].ms
        if ru and bu:
            r.speedup_unet_step = bu / ru


# -- reference points -----------------------------------------------------------------------------------


def _reference(rows: list[ReferenceRow], models: list[ModelSummary], results: list[ModelResult],
               settings: ReportSettings) -> list[ReferenceMatch]:
    """Each reference row with this report's figure for the same model, device and component, if any."""
    out = []
    for ref in rows:
        match = None
        for m in models:
            if ref["model"] not in (m.name, m.key, m.ref):
                continue
            for r in results:
                if r.model == m.key and r.device == ref["device"]:
                    match = (m, r)
        item = ReferenceMatch(ref, settings_differences(ref, settings))
        if match:
            m, r = match
            ours = r.components.get(ref["component"])
            ms = ours.ms if ours is not None else None
            item.ours_model, item.ours_status = m.key, "matched" if ms is not None else "missing"
            if ours is not None and ms is not None:
                item.ours_ms, item.ours_label = ms, ours.label
                item.ratio = ms / ref["latency_ms"] if ref["latency_ms"] else None
        out.append(item)
    return out


# -- the whole report -----------------------------------------------------------------------------------


def _versions() -> dict[str, str]:
    return {"python": platform.python_version(), **tool_versions("matplotlib", "jinja2")}


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "model"


def gather(*, baseline: str = "sd15", candidates: Sequence[str] = ("snapfusion",),
           devices: Sequence[Device], settings: ReportSettings | None = None,
           steps: Mapping[str, int] | None = None, backend: str = "auto", table: str | Path | None = None,
           reference: str | Path | None = None, profiler: Profiler | None = None,
           command: str | None = None, progress: Callable[[str], None] | None = None,
           app_floor_ms: float | None = None) -> ReportData:
    """Gather the report's data. `profiler` defaults to snapbench's latency package (tests pass their own).
    `app_floor_ms`: your app's per-prediction floor; each budget then also gives `in_app_s` beside its engine
    total (one floor per prediction: the text encoder runs, the steps, the decoder)."""
    from snapbench.latency.app_floor import check_floor_ms

    app_floor_ms = check_floor_ms(app_floor_ms)
    settings = {**DEFAULT_SETTINGS, **(settings or {})}
    unknown = set(settings) - set(SETTING_KEYS)
    if unknown:
        raise SnapbenchError(f"unknown setting(s) {sorted(unknown)}; settings are {', '.join(SETTING_KEYS)}")
    table_path = Path(table) if table is not None else None
    if table_path is not None:  # read it now: missing, a folder, /dev/zero or a bad row fail before any work
        from snapbench.latency.table import LatencyTable

        LatencyTable.load(table_path)
    devs = distinct_devices(devices)
    ref_source, ref_rows = load_reference(reference)
    say = progress or (lambda _msg: None)  # the profiler's own messages (backend chosen, rows estimated)
    entries = load_models(baseline, candidates, settings=settings, steps=steps or {})
    profiler = profiler or profile_with_snapbench
    results = []
    for e in entries:
        for d in devs:
            outcome = profiler(e.inspection.source, d, e.priced, backend, table_path, say=say,
                               cut=e.inspection.blocks)
            results.append(_result(e, d, outcome))
    models = [_model_summary(e) for e in entries]
    _attach_speedups(results, entries[0].key)
    if app_floor_ms is not None:
        for r in results:
            if r.budget:
                calls = TEXT_ENCODER_RUNS + r.steps + 1
                r.budget.app_floor_ms, r.budget.app_calls = app_floor_ms, calls
                r.budget.in_app_s = r.budget.total_s + calls * app_floor_ms / 1000
    from snapbench.report.trust import trust_section

    trust = trust_section(devs, results)
    labels = sorted({lab for r in results for lab in r.labels})
    return ReportData(
        schema=SCHEMA,
        title=f"{entries[0].key} vs {', '.join(e.key for e in entries[1:]) or '(no candidate)'} "
              f"on {', '.join(d.name for d in devs)}",
        created_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        command=command,
        versions=_versions(),
        settings=settings,
        requested_backend=backend,
        table=str(table_path) if table_path else None,
        baseline=entries[0].key,
        models=models,
        devices=devs,
        results=results,
        latency_labels=labels,
        mixed_sources=len(labels) > 1,
        reference=Reference(ref_source, reference is None, _reference(ref_rows, models, results, settings)),
        stages=list(dict.fromkeys(s for e in entries for s in e.inspection.stages)),  # the backbones' stages
        text_encoder_runs=TEXT_ENCODER_RUNS,
        app_floor_ms=app_floor_ms,
        trust=trust,
        denoiser=denoiser_of(entries[0].family),
    )


def default_out_path(data: ReportData, folder: str | Path = "reports") -> Path:
    models = [m.name for m in data.models]
    devices = [d.id for d in data.devices]
    name = f"{slug(models[0])}-vs-{'+'.join(slug(m) for m in models[1:]) or 'none'}-{'+'.join(devices)}.html"
    return Path(folder) / name


__all__ = ["gather", "default_out_path", "parse_steps", "SCHEMA"]
