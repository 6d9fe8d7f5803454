"""A DiT pipeline's other parts priced: its text encoders (per run) and its VAE decoder (per image), so that a
DiT has an end-to-end figure as a UNet pipeline has (`end_to_end.image_budget`).

The parts are the app's (`converters/dit_app.py`): SD3's CLIP-L, CLIP-G and T5-XXL, PixArt-Sigma's T5-XXL,
Sana's Gemma-2-2B, and the family's VAE decoder. Each is priced as a UNet pipeline's text encoder and decoder
are: the latency table's row when it has one for this device and settings (measured > imported >
estimated), else estimated by the Neural Engine cost model from the part's converted package, labelled
estimate. A part too large to convert here is estimated from two converted slices of it and extrapolated
to its depth (`dit_app.PricedPart`); the row's source says which. The text encoders run one after another
for a prompt, so the pipeline's `text_encoder` figure is their sum per run (CFG runs them twice per image,
as it does CLIP for SD).

Rows are filed under a key of the part's config and shapes (not the model's name): two models with one
encoder share its row.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from snapbench.devices.catalog import Device
from snapbench.latency.table import LatencyRow, LatencyTable
from snapbench.model.loading import ModelSource
from snapbench.settings import RunSettings

if TYPE_CHECKING:
    from snapbench.converters.app_parts import AppPart
    from snapbench.converters.dit_app import PricedPart
    from snapbench.latency.model_latency import ComponentLatency
    from snapbench.latency.packages import PackageSource
    from snapbench.profilers.backends import Pricer



@dataclass(frozen=True)
class PartLatency:
    """One part's figure, where it came from and how it was made."""

    name: str  # TextEncoderT5, VAEDecoder, ...
    kind: str  # text_encoder | vae_decoder
    title: str
    params: int
    latency_ms: float  # per run (a text encoder) or per image (the decoder), batch 1
    backend: str
    method: str  # how the figure was made (a table row, a converted package, slices)

    def line(self) -> str:
        per = "run" if self.kind == "text_encoder" else "image"
        return (f"{self.name} ({self.title}, {self.params:,} parameters): {self.latency_ms:.1f} ms per {per}, "
                f"{self.method}")


def part_key(part: PricedPart, settings: RunSettings) -> str:
    """The table key of a part: its kind, name, config and shapes (batch 1)."""
    digest = hashlib.sha1(json.dumps(part.identity, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"component|{part.kind}|part={part.name}|config={digest}|batch=1|{settings.precision}"


def price_dit_pipeline(source: ModelSource, device: Device, settings: RunSettings, *,
                       table: LatencyTable | None = None, estimator: Pricer | None = None,
                       packages: PackageSource | None = None, slice_above: int | None = None,
                       say: Callable[[str], None] | None = None) -> tuple[list[PartLatency], list[LatencyRow]]:
    """Every part beside the transformer on `device` (in pipeline order) and the new rows (estimates)."""
    from snapbench.converters.dit_app import SLICE_ABOVE_PARAMS, pricing_parts
    from snapbench.converters.options import ConvertOptions
    from snapbench.latency.model_latency import PackageToPrice, now, to_row
    from snapbench.latency.packages import ConverterPackages
    from snapbench.profilers.backends import EstimatePricer, as_measurement
    from snapbench.profilers.measurement import Measurement, PackageJob

    comp = settings.for_component("vae_decoder")  # batch 1, as every pipeline part runs
    opts = ConvertOptions.from_settings(comp)
    pricer = estimator or EstimatePricer()
    packages = packages or ConverterPackages()
    parts = pricing_parts(source, opts, slice_above=SLICE_ABOVE_PARAMS if slice_above is None else slice_above)
    created = now()
    out: list[PartLatency] = []
    rows: list[LatencyRow] = []
    for part in parts:
        key = part_key(part, comp)
        row = table.lookup(device.id, comp, key) if table is not None else None
        if row is not None:
            out.append(PartLatency(part.name, part.kind, part.title, part.params, row.latency_ms, row.backend,
                                   f"from the latency table ({row.backend})"))
            continue

        def estimate(p: AppPart) -> Measurement:
            if say is not None:
                say(f"{source.spec.name}: pricing {p.name} ({p.title})")
            return as_measurement(pricer(PackageJob(key, p.name, packages.part_package(p, opts, source)), device))

        if part.whole is not None:
            m = estimate(part.whole)
        else:
            assert part.slices is not None  # PricedPart: one or the other
            one, two = (estimate(p) for p in part.slices)
            layer = two.latency_ms - one.latency_ms
            m = replace(one, latency_ms=one.latency_ms + (part.layers - 1) * layer,
                        bytes_moved=(one.bytes_moved + (part.layers - 1) * (two.bytes_moved - one.bytes_moved)
                                     if one.bytes_moved is not None and two.bytes_moved is not None else None),
                        source=f"{one.source}; 1- and 2-layer slices extrapolated to {part.layers} layers")
        new = replace(to_row(device, PackageToPrice(key, part.name, part.kind, comp, 1), m, created), params=part.params)
        rows.append(new)
        out.append(PartLatency(part.name, part.kind, part.title, part.params, new.latency_ms, new.backend,
                               part.method))
    return out, rows


def pipeline_components(parts: Sequence[PartLatency]) -> dict[str, ComponentLatency]:
    """The pipeline's `text_encoder` (every encoder, one run each: one prompt) and `vae_decoder` figures."""
    from snapbench.latency.model_latency import ComponentLatency

    out = {}
    for kind, per in (("text_encoder", "run"), ("vae_decoder", "image")):
        mine = [p for p in parts if p.kind == kind]
        if mine:
            used = {p.backend for p in mine}
            out[kind] = ComponentLatency(kind, sum(p.latency_ms for p in mine),
                                         used.pop() if len(used) == 1 else "mixed", per)
    return out
