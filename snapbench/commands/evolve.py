"""`snapbench evolve`: SnapFusion's architecture evolution (Algorithm 1) driven by the latency table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.table import Table

from snapbench.commands.common import JsonOpt, default_learning_rate, err, out, print_json
from snapbench.evolution.budget import DEFAULT_TIE_MARGIN
from snapbench.interrupts import on_interrupt_keep
from snapbench.json_types import json_int

if TYPE_CHECKING:  # heavy (torch): the type only
    from snapbench.evolution.evolve import EvolutionResult

# Options shared with `ablate`.
DeviceOpt = typer.Option("iphone14pro", "--device", "-d", help="Catalog device whose latency table prices blocks.")
TableOpt = typer.Option(None, "--table", help="Latency table CSV to read first (estimates fill what it lacks).")
FixedTableOpt = typer.Option(None, "--fixed-table",
                             help="CSV of signature,latency_ms used as is (nothing estimated).")
AttentionOpt = typer.Option("original", "--attention", help="Attention implementation of the CA rows.")
EvaluatorOpt = typer.Option("toy", "--evaluator", "-e", help="toy (toy-digits) or clip (needs local weights).")
PromptsOpt = typer.Option(None, "--prompts", help="clip: prompts file, one per line.")
ClipWeightsOpt = typer.Option(None, "--clip-weights", help="clip: local transformers CLIPModel folder.")
PipelineOpt = typer.Option(None, "--pipeline", help="clip: SD pipeline folder (text_encoder/, tokenizer/, vae/).")
SamplesOpt = typer.Option(None, "--samples-per-prompt", min=1, help="Images per prompt [toy: 8, clip: 1].")
EvalStepsOpt = typer.Option(None, "--eval-steps", min=1, help="DDIM steps per image [toy: 10, clip: 50].")
GuidanceOpt = typer.Option(None, "--guidance", help="CFG scale [toy: 2.0, clip: 7.5].")
EvalSeedOpt = typer.Option(0, "--eval-seed", help="Seed of the starting noise shared by all candidates.")
WorkersOpt = typer.Option(1, "--workers", min=1, help="Local worker processes for evaluations (1: this process).")
RayOpt = typer.Option(None, "--ray-address", help="Run evaluations on Ray: host:port, ray://host:port, auto, local.")
ThreadsOpt = typer.Option(1, "--threads", min=1, help="Torch CPU threads per process.")


def evolve_command(
    model: str = typer.Option(..., "--model", "-m", help="A robust-trained folder (or any model --evaluator can score)."),
    out_dir: str = typer.Option(..., "--out", "-o", help="Output folder; the same command again resumes a killed run."),
    device: str = DeviceOpt,
    target_ms: float | None = typer.Option(None, "--target-ms", help="Target latency of one UNet step, ms."),
    target_fraction: float | None = typer.Option(None, "--target-fraction",
                                                    help="Target as a fraction of the starting latency."),
    removals_per_iteration: int = typer.Option(1, "--removals-per-iteration", min=1,
                                               help="A- actions applied per iteration (best first)."),
    max_iterations: int = typer.Option(200, "--max-iterations", min=1),
    add_phase: bool = typer.Option(True, "--add/--no-add", help="Add copies under the target once it is met."),
    moves: str = typer.Option("remove,copy", "--moves",
                              help="Comma-separated moves: remove, copy (SnapFusion's A-/A+) and swaps for cheaper "
                                   "variants: separable (RB), mqa, ffn, drop-self-attn (CA)."),
    min_gain: float = typer.Option(0.0, "--min-gain", help="Least quality gain per ms an A+ must bring."),
    train_steps: int = typer.Option(0, "--train-steps", min=0, help="Robust-training steps between iterations."),
    final_steps: int = typer.Option(0, "--final-steps", min=0,
                                    help="Training steps of the final architecture after the last decision "
                                         "(Algorithm 1 trains on until the network converges)."),
    final_robust: bool = typer.Option(True, "--final-robust/--final-normal",
                                      help="Those final steps skip blocks at random like the rest (the paper's "
                                           "loop), or train the final network whole."),
    lr: float | None = typer.Option(None, "--lr", help="Learning rate of those steps [default: train's: 1e-3 "
                                                        "toy, 1e-5 else]."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    skip_ca: float = typer.Option(0.1, "--skip-ca"),
    skip_rb: float = typer.Option(0.1, "--skip-rb"),
    data: str | None = typer.Option(None, "--data", help="Training data folder (non-toy models)."),
    table: str | None = TableOpt,
    fixed_table: str | None = FixedTableOpt,
    attention: str = AttentionOpt,
    evaluator: str = EvaluatorOpt,
    prompts: str | None = PromptsOpt,
    clip_weights: str | None = ClipWeightsOpt,
    pipeline: str | None = PipelineOpt,
    samples_per_prompt: int | None = SamplesOpt,
    eval_steps: int | None = EvalStepsOpt,
    guidance: float | None = GuidanceOpt,
    eval_seed: int = EvalSeedOpt,
    eval_budget: str = typer.Option("auto", "--eval-budget",
                                    help="exhaustive (every candidate on every sample), auto, or the samples per "
                                         "candidate of the first successive-halving round (>= 2; doubled per "
                                         "round for the better half) [auto: 1/16 of the samples]."),
    eval_confidence: float = typer.Option(0.95, "--eval-confidence",
                                          help="Stop halving once the leader beats every other survivor at this "
                                               "confidence (paired t-test over common samples)."),
    eval_tie_margin: float = typer.Option(DEFAULT_TIE_MARGIN, "--eval-tie-margin", min=0.0,
                                          help="Stop a decision (from a quarter of the samples on) when no rival "
                                               "can beat the leader by more than this much quality at "
                                               "--eval-confidence, and take the leader (0: never; exhaustive: "
                                               "never)."),
    workers: int = WorkersOpt,
    ray_address: str | None = RayOpt,
    threads: int = ThreadsOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Remove the blocks with the least quality lost per ms saved until the target holds, then add copies
    with the most quality gained per ms spent (SnapFusion Algorithm 1); with --moves, swapping a block for
    a cheaper variant competes with removing one."""
    import torch

    from snapbench.devices.catalog import resolve_device
    from snapbench.evolution.evolve import EvolveConfig, evolve
    from snapbench.evolution.executors import make_executor
    from snapbench.evolution.moves import parse_moves
    from snapbench.evolution.options import cost_builder, evaluator_config, latency_settings
    from snapbench.evolution.options import eval_budget as parse_budget
    from snapbench.evolution.robust_training import SkipProbabilities, TrainConfig

    torch.set_num_threads(threads)
    dev = resolve_device(device)  # once; an unknown device fails now, not after the model is loaded
    ev = evaluator_config(evaluator, prompts=prompts, clip_weights=clip_weights, pipeline=pipeline,
                          samples_per_prompt=samples_per_prompt, steps=eval_steps, guidance=guidance, seed=eval_seed)
    config = EvolveConfig(target_ms=target_ms, target_fraction=target_fraction,
                          removals_per_iteration=removals_per_iteration, max_iterations=max_iterations,
                          add_phase=add_phase, min_gain=min_gain, train_steps=train_steps, final_steps=final_steps,
                          final_robust=final_robust, moves=parse_moves(moves),
                          train=TrainConfig(batch_size=batch_size,
                                            learning_rate=lr if lr is not None else default_learning_rate(model),
                                            robust=True,
                                            skip=SkipProbabilities(skip_ca, skip_rb)), data=data,
                          eval_budget=parse_budget(eval_budget, eval_confidence, ev, eval_tie_margin))
    costs = cost_builder(device=dev, table=table, fixed_table=fixed_table, attention=attention, progress=True,
                         say=lambda s: err.print(s))
    on_interrupt_keep(f"the state after every finished iteration in {out_dir}")
    executor = make_executor(workers=workers, threads=threads, ray_address=ray_address)
    try:
        result = evolve(model, out_dir, config, evaluator=ev, costs=costs, executor=executor,
                        settings=latency_settings(dev, table, fixed_table, attention), progress=True,
                        say=lambda s: err.print(s))
    finally:
        executor.close()
    if as_json:
        print_json(result.to_dict())
        return
    _render(result)


def _render(result: EvolutionResult) -> None:
    """The trajectory as a table, then the run's summary lines."""
    t = Table(title=f"{result.out}: evolution on {result.device} ({result.latency_source})", title_justify="left")
    for col in ("it", "action", "block", "latency ms", "quality", "d quality", "d ms", "value"):
        t.add_column(col, justify="left" if col in ("action", "block") else "right")
    for r in result.trajectory:
        def f(v: object, fmt: str) -> str:
            return "" if v is None else format(v, fmt)
        t.add_row(str(r["iteration"]), str(r["action"]), str(r["block"]), f(r["latency_ms"], ".3f"), f(r["quality"], ".4f"),
                  f(r.get("quality_delta"), "+.4f"), f(r.get("latency_delta_ms"), "+.3f"), f(r.get("value"), ".4f"))
    out.print(t)
    out.print(f"latency {result.initial_latency_ms:.3f} -> {result.final_latency_ms:.3f} ms "
              f"(target {result.target_ms:.3f}, floor {result.floor_ms:.3f}, {result.latency_backend}); "
              f"quality {result.initial_quality:.4f} -> {result.final_quality:.4f}; {result.seconds:.0f} s")
    out.print(f"evaluation: {result.eval_budget}; {result.eval_samples} images generated "
              f"({sum(json_int(e, 'reused') for e in result.evaluations)} sample scores reused)")


def register(app: typer.Typer) -> None:
    app.command("evolve")(evolve_command)
