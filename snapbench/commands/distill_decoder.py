"""`snapbench distill-decoder`: SnapFusion's efficient VAE decoder (uniform channel pruning + distillation)."""

from __future__ import annotations

import typer

from snapbench.commands.common import JsonOpt, err, out, print_json


def distill_decoder_command(
    vae: str = typer.Option(..., "--vae", help="'toy' (trains or reuses the toy digits VAE), or a local "
                                                 "AutoencoderKL folder (or a pipeline folder with vae/)."),
    out_dir: str = typer.Option(..., "--out", "-o", help="Folder for the pruned AutoencoderKL; the same command resumes."),
    prune: float = typer.Option(0.5, "--prune", help="Share of every decoder layer's channels removed (paper: 0.5)."),
    latents: str | None = typer.Option(None, "--latents",
                                          help="Non-toy: folder of .safetensors with 'latents' [N,C,H,W] (scaled by "
                                               "the VAE's scaling factor, as the UNet sees them)."),
    steps: int = typer.Option(600, "--steps", min=0, help="Distillation steps."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    lr: float | None = typer.Option(None, "--lr", help="AdamW learning rate (default: 1e-3 toy, 1e-4 else)."),
    save_every: int = typer.Option(200, "--save-every", min=1),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(1, "--threads", min=1, help="Torch CPU threads."),
    as_json: bool = JsonOpt,
) -> None:
    """Prune a VAE decoder's channels uniformly, inherit the teacher's weights, distil it with MSE (paper 4.1)."""
    import torch

    from snapbench.distillation.decoder import DecoderDistillConfig, distill_decoder
    from snapbench.distillation.decoder_data import load_latents, load_teacher_vae
    from snapbench.distillation.decoder_latency import full_size_decoder

    torch.set_num_threads(threads)
    toy = vae == "toy"
    config = DecoderDistillConfig(prune=prune, steps=steps, batch_size=batch_size,
                                  learning_rate=lr if lr is not None else (1e-3 if toy else 1e-4),
                                  save_every=save_every, seed=seed)
    teacher = load_teacher_vae(vae, say=lambda s: err.print(s))
    latent_set = load_latents(vae, teacher, latents)
    result = distill_decoder(teacher, latent_set, out_dir, config, teacher_ref=vae, progress=True,
                             say=lambda s: err.print(s))
    full = full_size_decoder(prune)
    if as_json:
        print_json({**result.to_dict(), "full_size_sd_decoder": full})
        return
    r = result
    teacher_line = f"; teacher to its inputs {r.psnr_teacher_db:.2f} dB" if r.psnr_teacher_db is not None else ""
    out.print(f"{r.out}: decoder {r.block_out_channels_teacher} -> {r.block_out_channels_student} channels, "
              f"{r.params_teacher:,} -> {r.params_student:,} parameters, {r.step} steps")
    out.print(f"PSNR to the teacher decoder's images (held-out latents): untrained pruned {r.psnr_untrained_db:.2f} dB, "
              f"distilled {r.psnr_distilled_db:.2f} dB{teacher_line}")
    out.print(f"SD-v1.5 decoder at this pruning: {full['params_full']:,} -> {full['params_pruned']:,} parameters")
    for d in full["devices"]:
        out.print(f"  {d['device']}: {d['full_ms']} -> {d['pruned_ms']} ms ({d['backend']})")
    out.print(f"  {full['note']}")


def register(app: typer.Typer) -> None:
    app.command("distill-decoder")(distill_decoder_command)
