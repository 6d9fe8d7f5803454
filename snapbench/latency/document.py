"""The `snapbench profile --json` document: what reports and evolution read.

```
{
  "format": "snapbench.profile/1",
  "device":   {"id": "iphone14pro", "name": "iPhone 14 Pro", "chip": "A16"},
  "backend":  "estimate",              # the backend of every figure, or "mixed" (then read each row's)
  "model":    "sd15",
  "settings": {"compute_units": "cpu_and_ne", "precision": "fp16", "weight_bits": 16,
               "attention": "original", "batch": 2, "latent": 64, "tokens": 77},
  "components": {"text_encoder": 5.1,  # ms per run (batch 1; a CFG image needs 2 runs)
                 "unet": 1650.0,       # ms per denoising step at settings.batch (sum of its blocks)
                 "vae_decoder": 370.0},# ms per image
  "component_backends": {"text_encoder": "estimate", "unet": "estimate", "vae_decoder": "estimate"},
  "stages": [                          # 7 entries, paper order: Down-1 ... Up-3
    {"stage": "Down-1", "ms": 180.2, "ca_ms": 150.0, "rb_ms": 25.1, "aux_ms": 5.1,
     "params": 13_000_000, "macs": 150_000_000_000}, ...],
  "blocks": [                          # every block in execution order, removed ones included
    {"id": "CA[Down-1, 1]", "file_id": "down1_ca1", "stage": "Down-1", "kind": "CA", "status": "kept",
     "signature": "CA|hidden=2x320x64x64,...", "latency_ms": 70.1, "p90_ms": null, "samples": 0,
     "backend": "estimate", "macs": 70_000_000_000, "params": 2_000_000}, ...],
  "load_ms": {"unet": {"first": 61000.0, "warm": 900.0}, ...},  # measured components only: the first
                                       # load (Neural Engine compile) and a warm load, summed over packages
  "measured_on": {"name": "Ana's iPhone", "os_version": "18.1", "os_build": "22B83"},  # or null
  "failures": [{"block": "CA[Up-1, 2]", "package": "...mlpackage", "reason": "..."}],  # could not be measured
                                       # (their figures are estimates); empty when none
  "versions": {"snapbench": "0.1.0", "coremltools": "9.0", ...},
  "created_at": "2025-01-01T00:00:00+00:00",
  "table": "latency_tables/iphone14pro/sd15.csv"
}
```
Components that were not requested are absent from `components` and `component_backends`; with
`--component vae_decoder` alone, `stages` and `blocks` are empty lists. A removed block with nothing left
to run has `signature`, `backend` null and `latency_ms` 0. `samples` is 0 for estimates; `p90_ms` is
null where the backend gives no spread; blocks also carry `first_load_ms` and `warm_load_ms` (null unless
measured).
"""

from __future__ import annotations

from typing import Any, TypedDict

from snapbench.latency.model_latency import ProfileRun

FORMAT = "snapbench.profile/1"


class StageSummary(TypedDict):
    stage: str
    ms: float
    ca_ms: float
    rb_ms: float
    aux_ms: float
    params: int
    macs: int


def stage_summary(run: ProfileRun) -> list[StageSummary]:
    """Per paper stage: total, CA, RB and auxiliary ms, params and MACs of the blocks that run."""
    rows: list[StageSummary] = []
    for stage in run.stages:
        bs = [b for b in run.blocks if b.stage == stage]
        ms = {k: sum(b.latency_ms for b in bs if b.kind == k) for k in ("CA", "RB", "aux")}
        rows.append({
            "stage": stage,
            "ms": round(sum(ms.values()), 4),
            "ca_ms": round(ms["CA"], 4),
            "rb_ms": round(ms["RB"], 4),
            "aux_ms": round(ms["aux"], 4),
            "params": sum(b.params for b in bs),
            "macs": sum(b.macs for b in bs),
        })
    return rows


def document_backend(run: ProfileRun) -> str:
    """The one backend behind every figure, or "mixed" (then each block and component says its own)."""
    used = {c.backend for c in run.components.values()} | {b.backend for b in run.blocks if b.backend}
    return used.pop() if len(used) == 1 else "mixed"


def model_ms(run: ProfileRun) -> float | None:
    """One run of the whole model `--model` names: for a UNet, one denoising step at the profiled batch;
    when one other component was profiled, one run of it."""
    if "unet" in run.components:
        return round(run.components["unet"].latency_ms, 4)
    if len(run.components) == 1:
        return round(next(iter(run.components.values())).latency_ms, 4)
    return None


def profile_document(run: ProfileRun, *, table_path: str | None = None) -> dict[str, Any]:
    """The document for a finished `ProfileRun`."""
    d = run.device
    t = run.measured_on
    doc: dict[str, Any] = {
        "format": FORMAT,
        "device": {"id": d.id, "name": d.name, "chip": d.chip},
        "backend": document_backend(run),
        "model": run.model,
        "settings": run.settings.to_dict(),
        "components": {k: round(c.latency_ms, 4) for k, c in run.components.items()},
        "model_ms": model_ms(run),
        "component_backends": {k: c.backend for k, c in run.components.items()},
        "stages": stage_summary(run) if run.blocks else [],
        "blocks": [{**b.to_dict(), "latency_ms": round(b.latency_ms, 4)} for b in run.blocks],
        "load_ms": {k: {"first": c.first_load_ms, "warm": c.warm_load_ms} for k, c in run.components.items()
                    if c.first_load_ms is not None},
        "measured_on": {"name": t.name, "os_version": t.os_version, "os_build": t.os_build} if t else None,
        "failures": [{"block": f.label, "package": str(f.path), "reason": f.reason} for f in run.failures],
        "versions": run.versions,
        "created_at": run.created_at,
    }
    if table_path is not None:
        doc["table"] = table_path
    return doc
