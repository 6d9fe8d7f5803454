"""`snapbench ablate`: quality lost when each single CA / RB block is removed (paper Fig. 4 as a table)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from snapbench.commands.common import JsonOpt, err, out, print_json
from snapbench.commands.evolve import (
    AttentionOpt,
    ClipWeightsOpt,
    DeviceOpt,
    EvalSeedOpt,
    EvalStepsOpt,
    EvaluatorOpt,
    FixedTableOpt,
    GuidanceOpt,
    PipelineOpt,
    PromptsOpt,
    RayOpt,
    SamplesOpt,
    TableOpt,
    ThreadsOpt,
    WorkersOpt,
)

if TYPE_CHECKING:  # heavy (torch): the type only
    from snapbench.evolution.ablation import Ablation


def ablate_command(
    model: list[str] = typer.Option(..., "--model", "-m",
                                    help="Trained model folder; repeat to compare (e.g. normal vs robust)."),
    device: str = DeviceOpt,
    table: str | None = TableOpt,
    fixed_table: str | None = FixedTableOpt,
    attention: str = AttentionOpt,
    block: list[str] | None = typer.Option(None, "--block", help="Only these blocks (id or file id)."),
    evaluator: str = EvaluatorOpt,
    prompts: str | None = PromptsOpt,
    clip_weights: str | None = ClipWeightsOpt,
    pipeline: str | None = PipelineOpt,
    samples_per_prompt: int | None = SamplesOpt,
    eval_steps: int | None = EvalStepsOpt,
    guidance: float | None = GuidanceOpt,
    eval_seed: int = EvalSeedOpt,
    workers: int = WorkersOpt,
    ray_address: str | None = RayOpt,
    threads: int = ThreadsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Evaluate each model, then each model without one block at a time; print the quality drop per block."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

    from snapbench.backbones import resolve_model
    from snapbench.devices.catalog import resolve_device
    from snapbench.evolution.ablation import ablate
    from snapbench.evolution.executors import make_executor
    from snapbench.evolution.options import cost_builder, evaluator_config
    from snapbench.progress_log import label_column, make_progress

    torch.set_num_threads(threads)
    ev = evaluator_config(evaluator, prompts=prompts, clip_weights=clip_weights, pipeline=pipeline,
                          samples_per_prompt=samples_per_prompt, steps=eval_steps, guidance=guidance, seed=eval_seed)
    specs = [resolve_model(m).spec for m in model]
    for s in specs:
        ev.check(s)
    costs = cost_builder(device=resolve_device(device), table=table, fixed_table=fixed_table, attention=attention,
                         progress=True, say=lambda s: err.print(s))
    results = []
    executor = make_executor(workers=workers, threads=threads, ray_address=ray_address)
    try:
        for m, spec in zip(model, specs):
            cost = costs(spec)
            with make_progress(f"ablate {m}", label_column(m, "ablate"), BarColumn(),
                               MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
                n = sum(1 for b in cost.blocks if block is None or b in block) + 1
                task = bar.add_task("", total=n)
                results.append(ablate(m, ev, executor, cost=cost, spec=spec, blocks=block,
                                      on_done=lambda: bar.update(task, advance=1)))
    finally:
        executor.close()
    if as_json:
        print_json([r.to_dict() | {"full_quality": a.full_quality} for a in results for r in a.rows])
        return
    _render(results)


def _render(results: list[Ablation]) -> None:
    """One column of quality drops per model, the blocks' saved ms beside them."""
    t = Table(title="quality lost when one block is removed (full-model quality minus quality without it)",
              title_justify="left")
    for col in ("stage", "block", "ms saved"):
        t.add_column(col, justify="right" if col == "ms saved" else "left")
    for a in results:
        t.add_column(f"drop: {a.model}", justify="right")
    for i, r in enumerate(results[0].rows):
        saved = "" if r.latency_saved_ms is None else f"{r.latency_saved_ms:.3f}"
        t.add_row(r.stage, r.id, saved, *[f"{a.rows[i].quality_drop:+.4f}" if i < len(a.rows) else "" for a in results])
    t.add_row("", "full model quality", "", *[f"{a.full_quality:.4f}" for a in results], style="bold")
    out.print(t)


def register(app: typer.Typer) -> None:
    app.command("ablate")(ablate_command)
