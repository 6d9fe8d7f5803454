"""Terminal view of a DiT's inspection: blocks by stage, stage totals, parameters against the published count."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

from rich.table import Table
from rich.text import Text

from snapbench.commands.block_tables import render_blocks
from snapbench.commands.common import fmt_count, out
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSON

if TYPE_CHECKING:
    from snapbench.blocks.inspection import Inspection


class Published(TypedDict):
    """A DiT spec's published parameter count (its notes) beside ours."""

    params: int
    label: JSON  # as the notes write it ("0.6B"), else the count
    source: JSON  # where it was published
    difference: float  # (ours - published) / published


def published(r: Inspection) -> Published | None:
    notes = r.source.spec.notes
    if "published_params" not in notes:
        return None
    raw = notes["published_params"]
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise SnapbenchError(f"{r.name}: notes.published_params is {raw!r}; give a number")
    pub, ours = int(raw), r.totals()["params"]
    return {"params": pub, "label": notes.get("published_params_label", f"{pub:,}"),
            "source": notes.get("published_params_source"), "difference": (ours - pub) / pub}


def render_inspection(r: Inspection, *, show_blocks: bool = True) -> None:

    s = r.shapes
    out.rule(Text.assemble((r.name, "bold"), f" ({r.source.spec.base_config.get('_class_name')})  latent {s.latent}x{s.latent}, "
             f"batch {s.batch}, {s.tokens} tokens"))
    if show_blocks:
        render_blocks(r, status=False, all_inputs=True)
    t = Table(title=f"{r.name}: per stage", title_justify="left")
    for col in ("stage", "TB", "aux", "params", "MACs", "MACs w/o attn matmuls"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for row in r.stage_frame().to_dict(orient="records"):
        if row["TB_count"] or row["aux_count"]:
            t.add_row(row["stage"], str(row["TB_count"]), str(row["aux_count"]), fmt_count(row["params"]),
                      fmt_count(row["macs"]), fmt_count(row["macs_no_attention"]))
    tot = r.totals()
    t.add_row("total", str(tot["TB"]), str(tot["blocks"] - tot["TB"]), f"{tot['params']:,}", fmt_count(tot["macs"]),
              fmt_count(tot["macs_no_attention"]), style="bold")
    out.print(t)
    out.print(f"{tot['signatures']} block signatures: `convert` makes one package each")
    pub = published(r)
    if pub:
        out.print(f"parameters: {tot['params']:,} here vs {pub['label']} published ({pub['difference']:+.1%}; "
                  f"{pub['source']})")
