"""The `estimate` backend: an op-level cost model of the Apple Neural Engine.

    records = read_op_records("Blocks/CA_Up-1_0.mlpackage")     # parsed once, cached as JSON beside it
    dev = resolve_device("iphone14pro")                          # devices.catalog: once, at the edge
    est = estimate_ops(records, dev)                             # est.total_ms, est.by_op_type, est.cpu_ops
    est = estimate_package(mlmodel_or_path, dev)

Every figure it produces is an estimate (`Estimate.source == "estimate"`), never a measurement.
"""

from snapbench.profilers.estimate.cost_model import (
    CpuOp,
    Estimate,
    PreparedOps,
    estimate_ops,
    estimate_package,
    prepare,
)
from snapbench.profilers.estimate.params import AneParams, load_params, save_params
from snapbench.profilers.estimate.program_ops import OpRecord, read_op_records

__all__ = [
    "AneParams", "CpuOp", "Estimate", "OpRecord", "PreparedOps", "estimate_ops", "estimate_package",
    "load_params", "prepare", "read_op_records", "save_params",
]
