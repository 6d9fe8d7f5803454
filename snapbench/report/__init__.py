"""Self-contained HTML reports comparing a baseline UNet with candidates, stage by stage and end to end.

`gather()` collects the data (one JSON-able dict), `render_html()` turns it into a page, `write_report()`
writes both atomically. Names are imported on first use (PEP 562): the CLI starts without matplotlib/torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "default_out_path": "gather_data", "gather": "gather_data", "parse_steps": "gather_data",
    "render_html": "render", "write_report": "write",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'snapbench.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"snapbench.report.{_EXPORTS[name]}"), name)
