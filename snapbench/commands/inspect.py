"""`snapbench inspect`: every block, stage by stage, with CA vs RB subtotals and model totals."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from snapbench.commands.block_tables import render_blocks
from snapbench.commands.common import (
    BatchOpt,
    JsonOpt,
    LatentOpt,
    RevisionOpt,
    SubfolderOpt,
    VariantOpt,
    WeightsOpt,
    fmt_count,
    model_source,
    out,
    print_json,
    resolved_latent,
)
from snapbench.commands.dit_render import published, render_inspection

if TYPE_CHECKING:
    from snapbench.blocks.inspection import Inspection


def inspect_command(
    model: list[str] = typer.Option(["sd15"], "--model", "-m",
                                    help="Preset, arch spec .json, diffusers UNet or DiT transformer folder; repeat for several."),
    weights: str | None = WeightsOpt,
    variant: str | None = VariantOpt,
    subfolder: str | None = SubfolderOpt,
    revision: str | None = RevisionOpt,
    latent: int | None = LatentOpt,
    batch: int = BatchOpt,
    tokens: int | None = typer.Option(None, "--tokens", min=1, show_default=False,
                                         help="Text tokens in the context [default: 77 for UNets; a DiT's own pipeline's]."),
    blocks: bool = typer.Option(True, "--blocks/--no-blocks", help="Show the per-block tables."),
    as_json: bool = JsonOpt,
) -> None:
    """Every block of a UNet or DiT in execution order: paper stage, id, module, shapes, params, MACs, signature digest."""
    from snapbench.backbones import inspect_model
    from snapbench.blocks.cut import InputShapes  # torch: imported when the command runs
    from snapbench.dit.cut import default_shapes
    from snapbench.dit.source import dit_spec, is_dit_ref, resolve_dit

    results: list[Inspection] = []
    for m in model:
        if is_dit_ref(m):
            src = resolve_dit(m, variant=variant)
            shapes = default_shapes(dit_spec(src.spec), latent=latent, batch=batch, tokens=tokens)
        else:
            src = model_source(m, weights, variant, subfolder, revision)
            shapes = InputShapes(latent=resolved_latent(src, latent), batch=batch, tokens=tokens or 77)
        results.append(inspect_model(src, shapes=shapes))
    if as_json:
        docs = [r.to_dict() for r in results]
        for r, doc in zip(results, docs):
            if "TB" in r.kinds():
                doc.update(backbone="dit", published=published(r))
        print_json(docs[0] if len(docs) == 1 else docs)
        return
    for r in results:
        if "TB" in r.kinds():
            render_inspection(r, show_blocks=blocks)
        else:
            render(r, show_blocks=blocks)


def render(r: Inspection, *, show_blocks: bool = True) -> None:
    s = r.shapes
    out.rule(Text.assemble((r.name, "bold"), f"  latent {s.latent}x{s.latent}, batch {s.batch}, {s.tokens} tokens"))
    if show_blocks:
        render_blocks(r)
    t = Table(title=f"{r.name}: per stage (blocks that run)", title_justify="left")
    for col in ("stage", "CA", "RB", "CA params", "RB params", "aux params", "params", "CA MACs", "RB MACs",
                "MACs", "MACs w/o attn matmuls"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for row in r.stage_frame().to_dict(orient="records"):
        t.add_row(row["stage"], str(row["CA_count"]), str(row["RB_count"]), fmt_count(row["CA_params"]),
                  fmt_count(row["RB_params"]), fmt_count(row["aux_params"]), fmt_count(row["params"]),
                  fmt_count(row["CA_macs"]), fmt_count(row["RB_macs"]), fmt_count(row["macs"]),
                  fmt_count(row["macs_no_attention"]))
    tot = r.totals()
    t.add_row("total", str(tot["CA"]), str(tot["RB"]), "", "", "", f"{tot['params']:,}", "", "",
              fmt_count(tot["macs"]), fmt_count(tot["macs_no_attention"]), style="bold")
    out.print(t)
    claimed = r.source.spec.notes.get("paper_claimed_params")
    if isinstance(claimed, (int, float)) and claimed:
        out.print(f"parameters: {tot['params']:,} here vs {claimed:,} claimed by the paper "
                  f"({(tot['params'] - claimed) / claimed:+.1%})")


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect_command)
