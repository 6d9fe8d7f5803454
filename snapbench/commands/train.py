"""`snapbench train`: (robust) training of an elastic UNet; also `accelerate launch -m snapbench.train`."""

from __future__ import annotations

import typer

from snapbench.commands.common import JsonOpt, WeightsOpt, default_learning_rate, err, out, print_json
from snapbench.interrupts import on_interrupt_keep


def train_command(
    model: str = typer.Option(..., "--model", "-m", help="toy-digits, a trained folder, or an SD UNet / pipeline folder."),
    out_dir: str = typer.Option(..., "--out", "-o", help="Checkpoint folder; the same command again resumes it."),
    robust: bool = typer.Option(False, "--robust/--normal",
                                help="Skip each CA / RB block at random (SnapFusion robust training)."),
    steps: int = typer.Option(2000, "--steps", min=0, help="Total optimizer steps (a resumed run goes on to it)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Samples per step, over all processes."),
    lr: float | None = typer.Option(None, "--lr", help="AdamW learning rate [default: 1e-3 toy, 1e-5 else]."),
    skip_ca: float = typer.Option(0.1, "--skip-ca", help="Skip probability of a CA block with --robust."),
    skip_rb: float = typer.Option(0.1, "--skip-rb", help="Skip probability of an RB block with --robust."),
    variant_moves: str | None = typer.Option(
        None, "--variant-moves",
        help="With --robust, also run kept blocks as these cheaper variants at random, so evolve --moves judges "
             "swaps on trained weights: some of separable, mqa, ffn, drop-self-attn (comma-separated)."),
    variant_p: float = typer.Option(0.1, "--variant-p", help="Chance that a kept block runs one of its variants."),
    prediction_type: str | None = typer.Option(None, "--prediction-type",
                                                  help="epsilon or v_prediction [default: the noise schedule's]."),
    data: str | None = typer.Option(None, "--data", help="Folder of .safetensors latents + contexts (non-toy)."),
    weights: str | None = WeightsOpt,
    save_every: int = typer.Option(500, "--save-every", min=1, help="Checkpoint interval in steps."),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", min=1,
                                help="Torch CPU threads (1: the toy's ops are too small to gain from more)."),
    as_json: bool = JsonOpt,
) -> None:
    """Train an elastic UNet with the diffusion loss; --robust skips blocks at random (paper 3.1.1)."""
    import torch

    from snapbench.errors import SnapbenchError
    from snapbench.evolution.robust_training import SkipProbabilities, TrainConfig, train
    if prediction_type not in (None, "epsilon", "v_prediction"):
        raise SnapbenchError(f"--prediction-type {prediction_type!r}: choose epsilon or v_prediction")
    torch.set_num_threads(threads)
    if lr is None:
        lr = default_learning_rate(model)
    config = TrainConfig(steps=steps, batch_size=batch_size, learning_rate=lr, robust=robust,
                         skip=SkipProbabilities(skip_ca, skip_rb), prediction_type=prediction_type,  # type: ignore[arg-type]  # checked above
                         save_every=save_every, seed=seed, variant_p=variant_p,
                         variant_moves=tuple(m.strip() for m in (variant_moves or "").split(",") if m.strip()))
    on_interrupt_keep(f"the last checkpoint in {out_dir} (one every --save-every {save_every} steps)")
    result = train(model, out_dir, config, data=data, weights=weights, progress=True,
                   say=lambda s: err.print(s))
    if not result.main_process:
        return  # under `accelerate launch` every process gets here; one result on stdout
    if as_json:
        print_json(result.to_dict())
        return
    loss = f"{result.loss:.4f}" if result.loss is not None else "-"
    resumed = f" (resumed at {result.resumed_from})" if result.resumed_from else ""
    out.print(f"{result.out}: step {result.step}{resumed}, loss {loss}, {result.seconds:.0f} s of training")


def register(app: typer.Typer) -> None:
    app.command("train")(train_command)
