"""`snapbench sample`: a PNG grid of a model's images for some prompts, steps and guidance."""

from __future__ import annotations

import typer

from snapbench.commands.common import JsonOpt, out, print_json


def sample_command(
    model: str = typer.Option(..., "--model", "-m", help="A trained or distilled folder (toy-digits or SD-structured)."),
    out_path: str = typer.Option(..., "--out", "-o", help="The PNG to write."),
    prompt: list[str] = typer.Option(..., "--prompt", "-p", help="A prompt (repeat for more rows)."),
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (default: what the model was distilled for, else 50)."),
    cfg: float = typer.Option(5.0, "--cfg", help="Classifier-free guidance scale."),
    per_prompt: int = typer.Option(8, "--per-prompt", help="Images per prompt (one row each)."),
    seed: int = typer.Option(0, "--seed"),
    pipeline: str | None = typer.Option(None, "--pipeline", help="SD: local pipeline folder (text_encoder/, tokenizer/, vae/)."),
    as_json: bool = JsonOpt,
) -> None:
    """Write a PNG grid of generated images (rows: prompts) to look at what distillation did."""
    from snapbench.distillation.sample_grid import SampleConfig, sample_grid

    result = sample_grid(model, out_path, SampleConfig(tuple(prompt), steps, cfg, per_prompt, seed, pipeline))
    if as_json:
        print_json(result)
        return
    out.print(f"{result['out']}: {len(result['prompts'])} x {result['per_prompt']} images, {result['steps']} steps, "
              f"CFG {result['guidance']:g} ({result['width']}x{result['height']} px)")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_command)
