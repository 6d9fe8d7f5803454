"""The report's "How far to trust these numbers": the estimator's out-of-sample error, and error bands.

Reads the shipped leave-one-source-out result (`snapbench.validation.trust`), so a report never refits.
"""

from __future__ import annotations

from collections.abc import Sequence

from snapbench.devices.catalog import Device
from snapbench.report.data import ModelResult, TrustDevice, TrustSection


def trust_section(devices: Sequence[Device], results: Sequence[ModelResult]) -> TrustSection | None:
    """The section's data; adds an `error_band` to each result whose end-to-end figure is estimated."""
    from snapbench.validation.trust import error_band, load_trust

    doc = load_trust()
    if doc is None:
        return None
    by_chip = {r["chip"]: r for r in doc["by_chip"]}
    per_device = []
    bands = {}
    for d in devices:
        band = error_band(doc, d.chip)
        bands[d.id] = band
        chip = by_chip.get(d.chip) or {}
        per_device.append(TrustDevice(device=d.id, name=d.name, chip=d.chip, band=band, chip_rows=chip.get("n", 0),
                                      chip_median_abs_error_pct=chip.get("median_abs_error_pct")))
    for r in results:
        budget = r.budget
        if budget and "estimated" in r.labels and r.device in bands:
            b = bands[r.device]
            budget.error_band_s = [budget.total_s / b["high"], budget.total_s / b["low"]]
    return TrustSection(cross=doc["cross"], stale=doc["stale"], params_version=doc["params_version"],
                        overall=doc["overall"], by_chip=doc["by_chip"], fits=doc["fits"], per_device=per_device,
                        unseen_app=doc.get("unseen_app"), ranks=doc.get("ranks") or [],
                        rows=doc["rows"], highlight_chips=sorted({d.chip for d in devices}))
