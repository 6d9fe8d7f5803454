"""Latency lookup tables and a model's latency block by block (see table.py, model_latency.py, document.py)."""

from snapbench.latency.document import profile_document, stage_summary
from snapbench.latency.model_latency import (
    ALL_COMPONENTS, BlockLatency, ComponentLatency, ProfileRun, block_latencies, profile_model,
)
from snapbench.latency.table import BACKENDS, LatencyRow, LatencyTable, Settings

__all__ = [
    "ALL_COMPONENTS", "BACKENDS", "BlockLatency", "ComponentLatency", "LatencyRow", "LatencyTable",
    "ProfileRun", "Settings", "block_latencies", "profile_document", "profile_model", "stage_summary",
]
