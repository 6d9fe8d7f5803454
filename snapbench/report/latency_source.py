"""Where the report's latencies come from: the profiler's typed result, or an honest "not available".

The report never makes a latency up. It asks `snapbench.latency.profile_model` for the same `ProfileRun`
that `snapbench profile` prints (device, settings, blocks, components, where it was measured) and labels
every figure by the backend that produced it. When the profiler cannot answer, the outcome carries the
reason, and the report shows the architecture without latencies and says why.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from snapbench.devices.catalog import Device
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.report.data import ReportSettings
from snapbench.settings import RunSettings
from snapbench.specs.dit_layout import is_dit_config

if TYPE_CHECKING:
    from snapbench.blocks.cut import CutBlock
    from snapbench.latency.model_latency import ComponentLatency, ProfileRun
    from snapbench.latency.packages import PackageSource
    from snapbench.latency.table import LatencyRow, Settings
    from snapbench.profilers.backends import EstimatePricer, Target

# A backend name (from a document or a block row) -> the word the report prints next to the figure.
_LABELS = (("mixed", "mixed"), ("iphone", "measured"), ("mac", "measured"), ("measure", "measured"),
           ("import", "imported"), ("estimat", "estimated"))


def backend_label(backend: str | None) -> str:
    """'iphone'/'mac' -> measured, 'import' -> imported, 'estimate' -> estimated, 'mixed' (a total over
    blocks from several backends) -> mixed; anything else is unlabelled."""
    b = (backend or "").strip().lower()
    for prefix, label in _LABELS:
        if b.startswith(prefix):
            return label
    return "unlabelled"


@dataclass
class ProfileOutcome:
    run: ProfileRun | None  # the UNet's profile (blocks, stages, settings), or None
    reason: str | None = None  # why there is no profile
    notes: list[str] = field(default_factory=list)  # what the report must say about how it was obtained
    components: dict[str, ComponentLatency] = field(default_factory=dict)  # every part with a figure
    measured_on: Target | None = None  # the phone or Mac, when any part was measured

    @staticmethod
    def of(run: ProfileRun, *parts: ProfileRun, notes: list[str] | None = None) -> ProfileOutcome:
        """The outcome of a UNet run plus the runs of other parts (each adds its components)."""
        comps = dict(run.components)
        for part in parts:
            comps.update(part.components)
        where = next((r.measured_on for r in (run, *parts) if r.measured_on is not None), None)
        return ProfileOutcome(run, notes=list(notes or []), components=comps, measured_on=where)


class PricedSettings(TypedDict):
    """The settings one model is priced at: the report's, with that model's latent size and text length."""

    compute_units: str
    precision: str
    weight_bits: int
    attention: str
    batch: int
    latent: int
    tokens: int


def priced_settings(settings: ReportSettings, latent: int, tokens: int) -> PricedSettings:
    d = RunSettings()
    return {"compute_units": settings.get("compute_units", d.compute_units),
            "precision": settings.get("precision", d.precision), "weight_bits": settings.get("weight_bits", d.weight_bits),
            "attention": settings.get("attention", d.attention), "batch": settings.get("batch", d.batch),
            "latent": latent, "tokens": tokens}


# (model source, device, settings, backend, table path or None, say=, cut=) -> outcome; `cut`: the model's
# blocks at these settings, already cut by the report's inspection (a profiler may ignore it)
Profiler = Callable[..., ProfileOutcome]


def profile_with_snapbench(source: ModelSource, device: Device, settings: PricedSettings, backend: str,
                           table: Path | None, say: Callable[[str], None] | None = None, *,
                           cut: Sequence[CutBlock] | None = None, packages: PackageSource | None = None,
                           estimator: EstimatePricer | None = None, progress: bool = True) -> ProfileOutcome:
    """Latencies from the latency package: the table first (`--table`, else the model's table under
    your tables, else the shipped ones), the backend for whatever it lacks, labelled estimates for the rest.

    The UNet is profiled first and its errors stop the report (they are the user's to fix: a backend not
    available here, a corrupt table); the text encoder and VAE decoder are then profiled one by one on
    the table the UNet's run left, and a failure there costs only that figure, which the report shows
    as missing with the reason. Each part is priced once. A DiT's pipeline parts are its app's (its text
    encoders, its VAE decoder), priced by `latency/dit_pipeline.py` into the same two components.
    The report only reads tables; `snapbench profile` writes them. `cut` (the blocks at `settings`, from the
    report's inspection), `packages`, `estimator` and `progress` go to `profile_model` (the last three are
    how tests run it without converting).
    """
    try:
        from snapbench.latency.model_latency import profile_model
        from snapbench.latency.table import LatencyTable, Settings
        from snapbench.paths import table_to_read, user_table_path
    except ImportError as e:
        return ProfileOutcome(None, f"the latency profiler is not available in this installation ({e})")
    path = table if table is not None else (table_to_read(device.id, source.ref)
                                            or user_table_path(device.id, source.ref))
    # a table the user named is read whatever it is (missing, a folder, /dev/zero: one line); the default
    # path may simply not exist yet
    existing = LatencyTable.load(path) if table is not None or path.is_file() else LatencyTable.empty()
    s = Settings(**settings)
    notes: list[str] = []
    try:
        run = profile_model(source, device, s, table=existing, backend=backend, components=("unet",), say=say,
                            cut=cut, packages=packages, estimator=estimator, progress=progress)
    except ImportError as e:  # a converter or Core ML piece missing here: say so, never invent a number
        return ProfileOutcome(None, f"latencies could not be produced on this machine ({e})")
    if is_dit_config(source.spec.base_config):  # a DiT pipeline's parts are the app's, not a UNet's components
        return _with_dit_pipeline(run, source, device, s, path, say, packages=packages, estimator=estimator)
    parts = []
    table_now = run.table
    for comp in ("text_encoder", "vae_decoder"):
        try:
            part = profile_model(source, device, s, table=table_now, backend=backend, components=(comp,),
                                 packages=packages, estimator=estimator, progress=progress)
        except (SnapbenchError, ImportError) as e:
            notes.append(f"no {comp.replace('_', ' ')} latency: {e}")
            continue
        table_now = part.table
        parts.append(part)
    new_rows = [r for p in (run, *parts) for r in p.new_rows]
    return ProfileOutcome.of(run, *parts, notes=_table_notes(new_rows, path, notes))


def _with_dit_pipeline(run: ProfileRun, source: ModelSource, device: Device, settings: Settings, path: Path,
                       say: Callable[[str], None] | None, *, packages: PackageSource | None,
                       estimator: EstimatePricer | None) -> ProfileOutcome:
    """A DiT's run with its pipeline's text encoders and VAE decoder priced (`latency/dit_pipeline.py`), each
    part's figure and how it was made said in a note. A part that cannot be priced here costs only the
    end-to-end figure, with the reason."""
    from snapbench.latency.dit_pipeline import pipeline_components, price_dit_pipeline

    try:
        parts, rows = price_dit_pipeline(source, device, settings, table=run.table, estimator=estimator,
                                         packages=packages, say=say)
    except (SnapbenchError, ImportError) as e:
        return ProfileOutcome.of(run, notes=_table_notes(run.new_rows, path, [f"no pipeline parts' latency: {e}"]))
    notes = [f"pipeline part {p.line()}" for p in parts]
    outcome = ProfileOutcome.of(run, notes=_table_notes([*run.new_rows, *rows], path, notes))
    outcome.components.update(pipeline_components(parts))
    return outcome


def _shown(path: Path) -> str | None:
    from snapbench.paths import display_path

    return display_path(path) if path.is_file() else None


def _table_notes(new_rows: Sequence[LatencyRow], path: Path, notes: list[str]) -> list[str]:
    """What the report must say about the table: read from it, or filled in now."""
    if new_rows:
        counts: dict[str, int] = {}
        for r in new_rows:
            counts[backend_label(r.backend)] = counts.get(backend_label(r.backend), 0) + 1
        made = ", ".join(f"{n} {lab}" for lab, n in sorted(counts.items()))
        shown = _shown(path)
        if shown is not None:
            return [f"{shown} lacked current rows for these settings: {made} now (labelled; "
                    f"run `snapbench profile` to store them)", *notes]
        return [f"no latency table at {path}: {made} now", *notes]
    return [f"every figure read from {_shown(path) or path}", *notes]
