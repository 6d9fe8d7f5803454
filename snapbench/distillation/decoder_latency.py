"""What a decoder pruning means at full size: parameters of SD-v1.5's VAE decoder and of its pruned
twin, and their estimated latency on the catalog's iPhones, read from the latency tables (the user's
first, else the shipped ones: `<device>/sd15.csv` and `snapfusion.csv`; rows carry the backend that made
them, `estimate` for every shipped row; nothing is measured here).

The tables hold the full SD decoder (the sd15 preset's) and the SnapFusion decoder (the snapfusion
preset's: every block_out_channels halved, 32 groups kept), which is exactly `pruned_config(SD_VAE, 0.5)`
(checked, not assumed). Another fraction has no shipped rows: that needs a conversion and an estimate
(`snapbench profile`), so it is reported as unavailable instead of guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import NotRequired, TypedDict

from snapbench.distillation.decoder import pruned_config
from snapbench.json_types import JSON


class DecoderOnDevice(TypedDict):
    device: str
    full_ms: float
    pruned_ms: float
    backend: str


class FullSizeDecoder(TypedDict):
    """SD-v1.5's decoder and its pruned twin: parameters, and latency per catalog iPhone from the tables."""

    params_full: int
    params_pruned: int
    block_out_channels_pruned: JSON
    devices: list[DecoderOnDevice]
    note: NotRequired[str]


def _decoder_params(cfg: Mapping[str, JSON]) -> int:
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae = AutoencoderKL(**cfg)
    return sum(p.numel() for p in vae.decoder.parameters()) + sum(p.numel() for p in vae.post_quant_conv.parameters())


def full_size_decoder(prune: float, tables: str | Path | None = None) -> FullSizeDecoder:
    """{"params_full", "params_pruned", "block_out_channels_pruned", "devices": [{device, full_ms, pruned_ms,
    backend}], "note"} for SD-v1.5's decoder pruned by `prune`."""
    from snapbench.backbones import resolve_model
    from snapbench.converters.components import SD_VAE, vae_config
    from snapbench.devices.catalog import list_devices
    from snapbench.latency.model_latency import component_key
    from snapbench.latency.table import LatencyTable, Settings
    from snapbench.paths import table_to_read

    pruned = pruned_config(dict(SD_VAE), prune)
    out: FullSizeDecoder = {"params_full": _decoder_params(dict(SD_VAE)), "params_pruned": _decoder_params(pruned),
                            "block_out_channels_pruned": pruned["block_out_channels"], "devices": []}
    sd, snap = resolve_model("sd15"), resolve_model("snapfusion")
    if pruned["block_out_channels"] != vae_config(snap)[1]["block_out_channels"]:
        out["note"] = (f"no shipped latency rows for a decoder pruned by {prune:g} (only 0.5, the SnapFusion "
                       "decoder's); estimating it needs a Core ML conversion")
        return out
    settings = Settings().for_component("vae_decoder")
    for device in list_devices():
        ms = {}
        for name, source in (("full", sd), ("pruned", snap)):
            path = table_to_read(device.id, source.spec.name, tables)
            if path is None:
                continue
            row = LatencyTable.load(path).lookup(device.id, settings,
                                                 component_key("vae_decoder", source, settings))
            if row is not None:
                ms[name] = (round(float(row.latency_ms), 1), row.backend)
        if len(ms) == 2:
            out["devices"].append({"device": device.id, "full_ms": ms["full"][0], "pruned_ms": ms["pruned"][0],
                                   "backend": ms["pruned"][1]})
    out["note"] = ("latencies from the latency tables (fp16, original attention, 64x64 latent, batch 1); "
                   "the backend column says how each was made")
    return out
