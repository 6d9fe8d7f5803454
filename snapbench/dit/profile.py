"""`profile` for DiTs: per-block and per-stage latency of one denoising step, estimated from each block
package's Core ML program by the calibrated Neural Engine cost model (labelled "estimate": nothing here is
measured). Packages come from dit/convert.py, one per signature, kept in the cache folder so a second
profile (another device, say) converts nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from snapbench.converters.cache import cache_key
from snapbench.converters.options import ConvertOptions
from snapbench.devices.catalog import Device, resolve_device
from snapbench.dit.convert import Say, convert_dit
from snapbench.dit.cut import STAGES
from snapbench.dit.source import dit_spec, resolve_dit
from snapbench.model.loading import ModelSource
from snapbench.paths import cache_root
from snapbench.versions import tool_versions

EstimateFn = Callable[[Path, Device], Any]


@dataclass
class DitProfile:
    source: ModelSource
    device: Device
    opts: ConvertOptions
    blocks: list[dict[str, Any]]
    packages: int
    notes: list[str] = field(default_factory=list)

    @property
    def step_ms(self) -> float:
        return sum(b["latency_ms"] for b in self.blocks)

    def stages(self) -> list[dict[str, Any]]:
        out = []
        for stage in STAGES:
            bs = [b for b in self.blocks if b["stage"] == stage]
            if not bs:
                continue
            out.append({"stage": stage, "ms": sum(b["latency_ms"] for b in bs),
                        "TB_ms": sum(b["latency_ms"] for b in bs if b["kind"] == "TB"),
                        "aux_ms": sum(b["latency_ms"] for b in bs if b["kind"] == "aux"),
                        "blocks": len(bs), "params": sum(b["params"] for b in bs), "macs": sum(b["macs"] for b in bs)})
        return out

    def to_dict(self) -> dict[str, Any]:
        spec = dit_spec(self.source.spec)
        return {
            "format": "snapbench.profile/1", "model": spec.name, "backbone": "dit", "class": spec.class_name,
            "device": self.device.id, "chip": self.device.chip, "backend": "estimate",
            "settings": {"latent": self.opts.latent, "batch": self.opts.batch, "tokens": self.opts.tokens,
                         "precision": self.opts.precision, "weight_bits": self.opts.weight_bits,
                         "attention": self.opts.attention,
                         "image": self.opts.latent * spec.family.vae_factor},
            "components": {"transformer": {"latency_ms": self.step_ms, "backend": "estimate", "per": "denoising step"}},
            "model_ms": self.step_ms, "packages": self.packages, "stages": self.stages(), "blocks": self.blocks,
            "versions": tool_versions(), "notes": self.notes,
        }


def packages_folder(source: ModelSource, opts: ConvertOptions) -> Path:
    """Where a model's profile-mode packages are cached: one folder per model, shapes and options."""
    key = cache_key({"dit": source.spec.to_dict(), "latent": opts.latent, "batch": opts.batch,
                     "tokens": opts.tokens, "attention": opts.attention}, opts, tool_versions())
    return cache_root() / "dit-packages" / f"{source.spec.name}-{key[:12]}"


def _estimate(path: Path, device: Device) -> Any:
    from snapbench.profilers.estimate.cost_model import estimate_package

    return estimate_package(path, device)


def profile_dit(model: str | os.PathLike | ModelSource, device: str | Device, opts: ConvertOptions, *,
                packages: str | os.PathLike | None = None, say: Say | None = None,
                estimate: EstimateFn = _estimate) -> DitProfile:
    """Estimate every block of a DiT on `device` (converting its packages first where needed)."""
    dev = resolve_device(device)
    source = model if isinstance(model, ModelSource) else resolve_dit(model)
    folder = Path(packages) if packages is not None else packages_folder(source, opts)
    converted = convert_dit(source, folder, opts, say=say)
    if converted.failed:
        from snapbench.errors import SnapbenchError

        block, error = converted.failed[0]
        raise SnapbenchError(f"{source.spec.name}: converting {block} failed ({error}); see {folder}/manifest.json")
    by_package: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for b in converted.manifest.blocks:
        assert b.package is not None
        if b.package not in by_package:
            by_package[b.package] = estimate(folder / b.package, dev)
        est = by_package[b.package]
        rows.append({"id": b.id, "file_id": b.file_id, "stage": b.stage, "kind": b.kind, "status": b.status,
                     "signature": b.signature, "signature_digest": b.signature_digest,
                     "latency_ms": float(est.total_ms), "backend": "estimate", "macs": b.macs, "params": b.params,
                     "cpu_ops": len(getattr(est, "cpu_ops", ()))})
    notes = []
    cpu = sorted({str(r["id"]) for r in rows if r["cpu_ops"]})
    if cpu:
        notes.append(f"ops the cost model places off the Neural Engine in: {', '.join(cpu)}")
    return DitProfile(source, dev, opts, rows, converted.packages, notes)
