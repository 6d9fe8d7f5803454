"""Re-estimate the shipped latency tables with the current parameters, from op records (no conversion).

    python -m snapbench.calibration.retable sd15 snapfusion

Each estimated row of `snapbench/latency_tables/<device>/<model>.csv` is priced again on the op records
of the very package it was estimated from: the reference programs' records (shipped for sd15, cached for
other models by `python -m snapbench.calibration.reference_programs unet:MODEL:original:16:2 ...`),
matched by block signature. Measured and imported rows are left alone; a row without records is reported.
"""

from __future__ import annotations

import dataclasses
import sys
from datetime import datetime, timezone

from snapbench.calibration.reference_programs import ReferenceProgram, reference_parts
from snapbench.devices.catalog import resolve_device
from snapbench.latency.table import LatencyTable
from snapbench.paths import shipped_tables_dir
from snapbench.profilers.estimate import estimate_ops, load_params


def records_by_signature(model: str) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    for comp, batch in (("unet", 2), ("text_encoder", 1), ("vae_decoder", 1)):
        for part in reference_parts(ReferenceProgram(comp, model, "original", 16, batch), convert=False):  # type: ignore[arg-type]
            found[comp if comp != "unet" else part.name] = part.records
    return found


def retable(model: str) -> list[str]:
    params = load_params()
    records = records_by_signature(model)
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    missing = []
    for path in sorted(shipped_tables_dir().glob(f"*/{model}.csv")):
        table = LatencyTable.load(path)
        rows = []
        for row in table:
            key = row.block if row.block in ("text_encoder", "vae_decoder") else row.signature
            if row.backend != "estimate" or key not in records:
                if row.backend == "estimate":
                    missing.append(f"{path}: {row.block}")
                rows.append(row)
                continue
            est = estimate_ops(records[key], resolve_device(row.device), params=params)
            versions = ";".join(f"estimator={params.version}" if v.startswith("estimator=") else v
                                for v in row.versions.split(";"))
            rows.append(dataclasses.replace(row, latency_ms=round(est.total_ms, 4), bytes_moved=int(est.dram_bytes),
                                            versions=versions, created_at=created,
                                            source=f"estimator params {params.version}"))
        LatencyTable.from_rows(rows).save(path)
    return missing


if __name__ == "__main__":
    for m in sys.argv[1:]:
        left = retable(m)
        print(f"{m}: re-estimated" + (f"; no records for {len(left)} rows: {left[:3]}" if left else ""))
