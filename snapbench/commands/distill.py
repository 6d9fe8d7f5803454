"""`snapbench distill`: step distillation (CFG-aware or vanilla); also `accelerate launch -m snapbench.distill`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from snapbench.commands.common import JsonOpt, WeightsOpt, err, is_toy_ref, out, print_json

if TYPE_CHECKING:  # heavy (torch): the types only
    from snapbench.distillation.step_distillation import DistillConfig, DistillResult
    from snapbench.distillation.toy_compare import Comparison, ToyCompareConfig


def distill_command(
    model: str = typer.Option(..., "--model", "-m", help="The teacher: a trained folder (or a UNet/pipeline folder)."),
    out_dir: str = typer.Option(..., "--out", "-o", help="Student checkpoint folder; the same command again resumes."),
    teacher_steps: int = typer.Option(32, "--teacher-steps", help="DDIM steps of the teacher (N)."),
    student_steps: int = typer.Option(8, "--student-steps", help="DDIM steps of the student (M; N/M a whole number >= 2)."),
    cfg_aware: bool = typer.Option(True, "--cfg-aware/--vanilla",
                                   help="Apply CFG at w ~ U[w_min, w_max] to teacher and student before the loss."),
    guidance_min: float = typer.Option(2.0, "--guidance-min", help="w_min of the CFG-aware loss (paper: 2)."),
    guidance_max: float = typer.Option(14.0, "--guidance-max", help="w_max of the CFG-aware loss (paper: 14)."),
    cfg_probability: float = typer.Option(1.0, "--cfg-probability", help="Share of batches distilled CFG-aware."),
    gamma: float = typer.Option(1.0, "--gamma", help="Weight of the plain loss: L = L_dstl + gamma * L_ori."),
    student: str | None = typer.Option(None, "--student",
                                          help="Start the student from this model (spec, preset or trained folder) "
                                               "instead of the teacher's weights."),
    prediction_type: str | None = typer.Option(None, "--prediction-type",
                                                  help="The student's: epsilon or v_prediction (default: teacher's)."),
    v_finetune_steps: int = typer.Option(0, "--v-finetune-steps", min=0,
                                         help="First fine-tune the teacher to v-prediction for this many steps."),
    steps: int = typer.Option(500, "--steps", min=0, help="Distillation optimizer steps (a resumed run goes on to it)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Samples per step, over all processes."),
    lr: float | None = typer.Option(None, "--lr", help="AdamW learning rate (default: 1e-4 toy, 1e-5 else)."),
    data: str | None = typer.Option(None, "--data", help="Folder of .safetensors latents + contexts (non-toy)."),
    weights: str | None = WeightsOpt,
    save_every: int = typer.Option(100, "--save-every", min=1, help="Checkpoint interval in steps."),
    seed: int = typer.Option(0, "--seed"),
    eval_guidance: str = typer.Option("1,3,5,7,9", "--eval-guidance",
                                      help="Toy: guidance scales to compare teacher / undistilled / student at."),
    eval_samples: int = typer.Option(50, "--eval-samples", help="Toy: images per digit in the comparison."),
    eval_seed: int | None = typer.Option(None, "--eval-seed",
                                            help="Toy: seed of the fresh noise all models are scored on "
                                                 "(default 1000003; no training step uses it)."),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Toy: score the result on fresh noise."),
    decoder: str | None = typer.Option(None, "--decoder",
                                          help="A `distill-decoder` folder to record as this model's decoder "
                                               "(the report prices and labels it)."),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch CPU threads."),
    as_json: bool = JsonOpt,
) -> None:
    """Distill an N-step teacher into an M-step student (SnapFusion 4.2; direct, CFG-aware by default)."""
    import torch

    from snapbench.distillation.provenance import check_decoder
    from snapbench.distillation.step_distillation import DistillConfig, distill, parse_prediction_type
    from snapbench.distillation.toy_compare import EVAL_SEED, ToyCompareConfig, parse_guidance

    torch.set_num_threads(threads)
    toy = is_toy_ref(model)
    compare_cfg = ToyCompareConfig(parse_guidance(eval_guidance), eval_samples,
                                   EVAL_SEED if eval_seed is None else eval_seed) if toy and evaluate else None
    config = DistillConfig(teacher_steps=teacher_steps, student_steps=student_steps, cfg_aware=cfg_aware,
                           guidance_min=guidance_min, guidance_max=guidance_max, cfg_probability=cfg_probability,
                           gamma=gamma, steps=steps, batch_size=batch_size,
                           learning_rate=lr if lr is not None else (1e-4 if toy else 1e-5),
                           prediction_type=parse_prediction_type(prediction_type), v_finetune_steps=v_finetune_steps,
                           save_every=save_every, seed=seed)
    if decoder is not None:
        check_decoder(decoder)  # before any work
    result = distill(model, out_dir, config, student=student, data=data, weights=weights, progress=True,
                     say=lambda s: err.print(s))
    if result.main_process:  # under `accelerate launch` every process gets here; one records and reports
        _record_and_render(result, config, out_dir, decoder, compare_cfg, as_json)


def _record_and_render(result: DistillResult, config: DistillConfig, out_dir: str, decoder: str | None,
                       compare_cfg: ToyCompareConfig | None, as_json: bool) -> None:
    """Note the decoder, score the toy student against its teacher on fresh noise, and print the run."""
    from snapbench.distillation.provenance import record_decoder
    from snapbench.distillation.toy_compare import compare_distilled

    if decoder is not None:
        record_decoder(out_dir, decoder)
    comparison = None
    if compare_cfg is not None:
        err.print("scoring teacher, undistilled and student on fresh noise")
        comparison = compare_distilled(out_dir, config.teacher_steps, config.student_steps, compare_cfg)
    if as_json:
        print_json({**(comparison or {}), "run": result.to_dict()})
        return
    loss = f"{result.loss:.4f}" if result.loss is not None else "-"
    resumed = f" (resumed at {result.resumed_from})" if result.resumed_from else ""
    out.print(f"{result.out}: step {result.step}{resumed}, loss {loss}, {result.seconds:.0f} s of distillation")
    if comparison is not None:
        _print_comparison(comparison)


def _print_comparison(comparison: Comparison) -> None:
    from rich.table import Table

    table = Table(title="quality (higher is better) / FD to real digits (lower is better), same fresh noise")
    table.add_column("model")
    table.add_column("steps", justify="right")
    ws = list(comparison["teacher"]["quality"])
    for w in ws:
        table.add_column(f"w={w}", justify="right")
    for name in ("teacher", "undistilled", "student"):
        e = comparison[name]
        table.add_row(name, str(e["steps"]), *[f"{e['quality'][w]:.3f} / {e['fd'][w]:.2f}" for w in ws])
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("distill")(distill_command)
