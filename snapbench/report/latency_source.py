"""Where the report's latencies come from: the profiler's JSON document, or an honest "not available".

The report never makes a latency up. It asks `snapbench.latency` for the same document that
`snapbench profile --json` prints (device, backend, settings, components, stages, blocks) and labels every
figure by the backend that produced it. When the profiler cannot answer, the outcome carries the reason,
and the report shows the architecture without latencies and says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from snapbench.devices.catalog import Device
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource

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
    document: dict[str, Any] | None  # the `snapbench profile --json` document, or None
    reason: str | None = None  # why there is no document
    notes: list[str] = field(default_factory=list)  # what the report must say about how it was obtained


# (model source, device, settings dict, backend, table path or None, say) -> outcome
Profiler = Callable[..., ProfileOutcome]


def profile_with_snapbench(source: ModelSource, device: Device, settings: Mapping[str, Any], backend: str,
                           table: Path | None, say: Callable[[str], None] | None = None,
                           **profile_kw: Any) -> ProfileOutcome:
    """Latencies from the latency package: the table first (`--table`, else the model's table under
    your tables, else the shipped ones), the backend for whatever it lacks, labelled estimates for the rest.

    The UNet is profiled first and its errors stop the report (they are the user's to fix: a backend not
    available here, a corrupt table); the text encoder and VAE decoder are then profiled one by one on
    the table the UNet's run left, and a failure there costs only that figure, which the report shows
    as missing with the reason. Each part is priced once.
    The report only reads tables; `snapbench profile` writes them. `profile_kw` go to `profile_model`
    (packages, estimator, ...: how tests run it without converting).
    """
    try:
        from snapbench.paths import table_to_read, user_table_path
        from snapbench.latency import LatencyTable, Settings, profile_document, profile_model
    except ImportError as e:
        return ProfileOutcome(None, f"the latency profiler is not available in this installation ({e})")
    path = table if table is not None else (table_to_read(device.id, source.ref)
                                            or user_table_path(device.id, source.ref))
    existing = LatencyTable.load(path) if path.is_file() else LatencyTable.empty()
    kw = {"progress": True, **profile_kw}
    s = Settings(**settings)
    notes: list[str] = []
    try:
        run = profile_model(source, device, s, table=existing, backend=backend, components=("unet",), say=say, **kw)
    except ImportError as e:  # a converter or Core ML piece missing here: say so, never invent a number
        return ProfileOutcome(None, f"latencies could not be produced on this machine ({e})")
    doc = profile_document(run, table_path=_shown(path))
    new_rows = list(run.new_rows)
    table_now = run.table
    for comp in ("text_encoder", "vae_decoder"):
        try:
            part = profile_model(source, device, s, table=table_now, backend=backend, components=(comp,), **kw)
        except (SnapbenchError, ImportError) as e:
            notes.append(f"no {comp.replace('_', ' ')} latency: {e}")
            continue
        table_now = part.table
        doc["components"][comp] = round(part.components[comp].latency_ms, 4)
        doc["component_backends"][comp] = part.components[comp].backend
        got = part.components[comp]
        if got.first_load_ms is not None:
            doc.setdefault("load_ms", {})[comp] = {"first": got.first_load_ms, "warm": got.warm_load_ms}
        if part.measured_on is not None and doc.get("measured_on") is None:
            t = part.measured_on
            doc["measured_on"] = {"name": t.name, "os_version": t.os_version, "os_build": t.os_build}
        new_rows += part.new_rows
    return _outcome(doc, new_rows, path, notes)


def _shown(path: Path) -> str | None:
    from snapbench.paths import display_path

    return display_path(path) if path.is_file() else None


def _outcome(doc: dict[str, Any], new_rows: list[Any], path: Path, notes: list[str]) -> ProfileOutcome:
    """The document plus what the report must say about the table: read from it, or filled in now."""
    if new_rows:
        counts: dict[str, int] = {}
        for r in new_rows:
            counts[backend_label(r.backend)] = counts.get(backend_label(r.backend), 0) + 1
        made = ", ".join(f"{n} {lab}" for lab, n in sorted(counts.items()))
        shown = _shown(path)
        if shown is not None:
            notes.insert(0, f"{shown} lacked current rows for these settings: {made} now (labelled; "
                            f"run `snapbench profile` to store them)")
        else:
            notes.insert(0, f"no latency table at {path}: {made} now")
    else:
        notes.insert(0, f"every figure read from {_shown(path) or path}")
    return ProfileOutcome(doc, notes=notes)
