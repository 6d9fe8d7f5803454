"""Where latency tables live: `latency_tables/<device>/<model>.csv` (shipped ones are in the repository)."""

from __future__ import annotations

from pathlib import Path

TABLES_DIR = Path("latency_tables")


def default_table_path(device_id: str, model: str) -> Path:
    name = Path(model).stem if ("/" in model or model.endswith(".json")) else model
    return TABLES_DIR / device_id / f"{name}.csv"
