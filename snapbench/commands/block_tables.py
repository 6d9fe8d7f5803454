"""One table of blocks per stage, shared by `inspect`'s UNet and DiT views."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from snapbench.commands.common import fmt_count, out

if TYPE_CHECKING:
    from snapbench.blocks.inspection import Inspection


def signature_digest(signature: str | None) -> str:
    """The short hash `convert` names shared packages by: blocks with one digest share one package (the
    full signature is in --json)."""
    if not signature:
        return "-"
    import hashlib

    return hashlib.sha1(signature.encode()).hexdigest()[:12]


def render_blocks(r: Inspection, *, status: bool = True, all_inputs: bool = False) -> None:
    """One table of blocks per stage (UNet and DiT alike). `status`: a status column, rows styled by it (a
    UNet's removed / copied blocks); `all_inputs`: every input as `name shape` (column "inputs") rather
    than the first input's shape (column "input")."""
    rows = r.block_rows()
    for stage in r.stages:
        stage_rows = [b for b in rows if b["stage"] == stage]
        if not stage_rows:
            continue
        t = Table(title=stage, title_justify="left", show_edge=False)
        cols = ["block", *(["status"] if status else []), "module", "inputs" if all_inputs else "input",
                "params", "MACs", "signature"]
        for col in cols:
            t.add_column(col, justify="right" if col in ("params", "MACs") else "left")
        for b in stage_rows:
            if all_inputs:
                ins = ", ".join(f"{n} {'x'.join(map(str, sh))}" for n, sh in b["inputs"].items())
            else:
                ins = "x".join(map(str, next(iter(b["inputs"].values()))))
            cells = [b["id"], b["module"], ins, fmt_count(b["params"]), fmt_count(b["macs"]),
                     signature_digest(b["signature"])]
            style = None
            if status:
                style = "dim" if b["status"] == "removed" else ("cyan" if b["status"] == "copy" else None)
                cells.insert(1, b["status"] + "".join(f" {k}={v}" for k, v in b.get("variant", {}).items()))
            t.add_row(*cells, style=style)
        out.print(t)
