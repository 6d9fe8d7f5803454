"""Terminal views of DiTs for `inspect`, `convert` and `profile`: blocks by stage, stage totals."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from snapbench.commands.common import fmt_count, out

if TYPE_CHECKING:
    from snapbench.dit.inspection import DitInspection


def render_inspection(r: DitInspection, *, show_blocks: bool = True) -> None:
    s = r.shapes
    out.rule(f"[bold]{r.name}[/bold] ({r.source.spec.class_name})  latent {s.latent}x{s.latent}, "
             f"batch {s.batch}, {s.tokens} tokens")
    rows = r.block_rows()
    if show_blocks:
        for stage in r.stage_frame()["stage"]:
            t = Table(title=stage, title_justify="left", show_edge=False)
            for col in ("block", "module", "inputs", "params", "MACs", "signature"):
                t.add_column(col, justify="right" if col in ("params", "MACs") else "left")
            for b in (b for b in rows if b["stage"] == stage):
                ins = ", ".join(f"{n} {'x'.join(map(str, sh))}" for n, sh in b["inputs"].items())
                t.add_row(b["id"], b["module"], ins, fmt_count(b["params"]), fmt_count(b["macs"]), b["signature_digest"])
            out.print(t)
    t = Table(title=f"{r.name}: per stage", title_justify="left")
    for col in ("stage", "TB", "aux", "params", "MACs", "MACs w/o attn matmuls", "signatures"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for row in r.stage_frame().to_dict(orient="records"):
        t.add_row(row["stage"], str(row["TB_count"]), str(row["aux_count"]), fmt_count(row["params"]),
                  fmt_count(row["macs"]), fmt_count(row["macs_no_attention"]), str(row["signatures"]))
    tot = r.totals()
    t.add_row("total", str(tot["TB"]), str(tot["blocks"] - tot["TB"]), f"{tot['params']:,}", fmt_count(tot["macs"]),
              fmt_count(tot["macs_no_attention"]), str(tot["signatures"]), style="bold")
    out.print(t)
    pub = r.published()
    if pub:
        out.print(f"parameters: {tot['params']:,} here vs {pub['label']} published ({pub['difference']:+.1%}; "
                  f"{pub['source']})")
