"""`snapbench devices`: the device catalog (public hardware facts the cost model uses)."""

from __future__ import annotations

import typer
from rich.table import Table

from snapbench.commands.common import JsonOpt, out, print_json
from snapbench.devices.catalog import list_devices


def devices_command(as_json: bool = JsonOpt) -> None:
    """The catalog: ids for --device, chip, Neural Engine TOPS (marketed and fp16), memory bandwidth (the SoC's,
    and the engine's own where a measurement was published: the estimator uses that one)."""
    devices = list_devices()
    if as_json:
        print_json([d.to_dict() for d in devices])
        return
    t = Table(title="Device catalog (public facts; bandwidth is an estimate)", title_justify="left")
    for col, just in (("id", "left"), ("name", "left"), ("chip", "left"), ("ANE TOPS marketed", "right"),
                      ("fp16 TFLOP/s used", "right"), ("RAM GB", "right"), ("memory", "left"),
                      ("bandwidth GB/s", "right"), ("engine GB/s measured", "right"), ("confidence", "left")):
        t.add_column(col, justify="right" if just == "right" else "left")
    for d in devices:
        marketed = f"{d.ane_tops_marketed:g}" + (" (int8)" if d.marketed_tops_are_int8 else "")
        t.add_row(d.id, d.name, d.chip, marketed, f"{d.ane_fp16_tflops:g}", f"{d.ram_gb:g}", d.memory,
                  f"{d.mem_bandwidth_gbps_est:g}", f"{d.ane_bandwidth_gbps:g}" if d.ane_bandwidth_gbps else "-",
                  d.confidence)
    out.print(t)


def register(app: typer.Typer) -> None:
    app.command("devices")(devices_command)
