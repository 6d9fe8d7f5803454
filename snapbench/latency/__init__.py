"""Latency lookup tables and a model's latency block by block (see table.py, model_latency.py, document.py).

Names are imported on first use (PEP 562) so that the command line starts without loading torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "profile_document": "document", "stage_summary": "document",
    "ALL_COMPONENTS": "model_latency", "BlockLatency": "model_latency", "ComponentLatency": "model_latency",
    "ProfileRun": "model_latency", "block_latencies": "model_latency", "profile_model": "model_latency",
    "BACKENDS": "table", "LatencyRow": "table", "LatencyTable": "table", "Settings": "table",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'snapbench.latency' has no attribute {name!r}")
    return getattr(importlib.import_module(f"snapbench.latency.{_EXPORTS[name]}"), name)
