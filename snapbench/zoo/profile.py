"""Price any network (`timm:`, `torchvision:`, `open_clip:`, `hf:`, `synthetic:`, a `.mlpackage`) as one
whole program on a device: the `profile --model NETWORK` document, and the app floor a user's timings of
the one-op `synthetic:floor` network give (`calibrate --app-floor`).

    doc = profile_network("timm:fastvit_t8", "1x3x256x256", resolve_device("iphone12pro"))  # doc["model_ms"]
"""

from __future__ import annotations

import os
from typing import Any

from snapbench.devices.catalog import Device
from snapbench.errors import SnapbenchError
from snapbench.latency.app_floor import FLOOR_MODEL, FloorReading, check_floor_ms, read_floor_file
from snapbench.profilers.estimate.params import AneParams

# --weight-bits -> how the weights are stored (the converters' choices: 8 = int8, 6/4 = palettized)
_STORED = {16: "fp16", 8: "w8", 6: "pal6", 4: "pal4"}


def profile_network(model: str, input_shape: str | None, device: Device, *, weight_bits: int = 16,
                    backend: str = "estimate", params: AneParams | None = None,
                    app_floor_ms: float | None = None) -> dict[str, Any]:
    """The engine's time of one whole program (`model_ms`, what Xcode's performance report shows); with
    `app_floor_ms` (your app's per-prediction floor) also `end_to_end_ms`, beside it."""
    from snapbench.latency.app_floor import with_floor
    from snapbench.profilers.estimate import estimate_ops, load_params
    from snapbench.profilers.estimate.stored_weights import with_stored_weights
    from snapbench.zoo.programs import network_records
    from snapbench.zoo.specs import parse_model_spec

    if backend not in ("auto", "estimate"):
        raise SnapbenchError(f"--backend {backend}: a --model {model} network is priced by the estimator only; "
                             "time its package on a device with Xcode's performance report "
                             "(snapbench convert --model ... writes it)")
    if weight_bits not in _STORED:
        raise SnapbenchError(f"--weight-bits {weight_bits}: choose one of {', '.join(map(str, _STORED))}")
    floor = check_floor_ms(app_floor_ms)
    spec = parse_model_spec(model)
    records = network_records(spec, input_shape)
    params = params or load_params()
    est = estimate_ops(with_stored_weights(records, _STORED[weight_bits]), device, params=params)
    doc = {"model": spec.text, "input": input_shape, "device": device.id, "chip": device.chip, "backend": "estimate",
           "weight_bits": weight_bits, "model_ms": round(est.total_ms, 4), "params_version": params.version,
           "estimate": est.to_dict(),
           "notes": ["one whole program (no blocks); model_ms is the engine's time (what Xcode's performance "
                     "report shows); an app also pays its own per-prediction floor: "
                     + (f"yours, {floor:g} ms, is in end_to_end_ms" if floor is not None else
                        f"time `snapbench convert --model {FLOOR_MODEL}` in your app, read it with "
                        "`snapbench calibrate --app-floor FILE` and pass --app-floor-ms")]}
    return with_floor(doc, floor)


def floor_from_file(path: str | os.PathLike, *, params: AneParams | None = None) -> FloorReading:
    """The app floor a user's timing file gives: the median timing less the engine's own time of the
    one-op package (estimated) on that device."""
    import numpy as np

    from snapbench.profilers.estimate import estimate_ops, load_params
    from snapbench.zoo.programs import network_records

    device, times = read_floor_file(path)
    engine = estimate_ops(network_records(FLOOR_MODEL), device, params=params or load_params()).total_ms
    median = float(np.median(times))
    floor = max(median - engine, 0.0)
    check_floor_ms(floor, f"{path}: the median timing, {median:.3g} ms, gives a floor of")
    return FloorReading(device=device.id, runs=len(times), median_ms=median, engine_ms=engine, floor_ms=floor)
