"""`snapbench compress analyze`: per-layer palettization sensitivity -> mixed-bit recipes (converters/sensitivity.py)."""

from __future__ import annotations

import typer

from snapbench.commands.common import JsonOpt, ModelOpt, WeightsOpt, err, model_source, out, print_json

compress_app = typer.Typer(help="Mixed-bit palettization: measure each layer's sensitivity, write recipes.",
                           no_args_is_help=True)


@compress_app.command("analyze")
def analyze_command(
    model: str = ModelOpt,
    weights: str | None = WeightsOpt,
    out_dir: str = typer.Option(..., "--out", "-o", help="Folder for <spec>-sensitivity.csv and the recipe JSON files."),
    bits: list[float] = typer.Option([], "--bits", help="Average bits per compressible weight of a recipe (repeatable; default 4.5)."),
    size_mb: list[float] = typer.Option([], "--size-mb", help="A recipe whose compressible weights fit this many MB (repeatable)."),
    latent: int = typer.Option(32, "--latent", min=1, help="Calibration latent size."),
    samples: int = typer.Option(2, "--samples", min=1, help="Calibration inputs (one batch)."),
    tokens: int = typer.Option(77, "--tokens", min=1, help="Text tokens in the calibration context."),
    seed: int = typer.Option(0, "--seed", help="Calibration inputs and random weights."),
    widths: str = typer.Option("1,2,4,6,8", "--widths", help="Bit widths to measure, comma-separated (fp16 always)."),
    as_json: bool = JsonOpt,
) -> None:
    """Each layer palettized alone at 1/2/4/6/8 bits (and fp16): its block's output PSNR on calibration inputs;
    then a bit width per layer under each budget (recipe JSON for `convert --recipe`)."""
    from snapbench.converters.sensitivity import SensitivityOptions, write_analysis
    from snapbench.errors import SnapbenchError

    try:
        measured = tuple(int(w) for w in widths.split(",") if w.strip())
    except ValueError:
        raise SnapbenchError(f"--widths {widths!r}: comma-separated integers, e.g. 2,4,6,8") from None
    opts = SensitivityOptions(latent=latent, samples=samples, tokens=tokens, seed=seed, widths=measured)
    source = model_source(model, weights)
    targets = tuple(bits) if bits or size_mb else (4.5,)
    done = write_analysis(source, out_dir, opts, targets=targets, budgets_mb=tuple(size_mb),
                          progress=None if as_json else (lambda m: err.print(m, markup=False, highlight=False)))
    if as_json:
        print_json(done)
        return
    out.print(f"sensitivity of {done['layers']} layers: {done['sensitivity']}")
    for r in done["recipes"]:
        widths = ", ".join(f"{n} x {b} bit" for b, n in sorted(r["layers_by_bits"].items(), key=lambda kv: int(kv[0])))
        out.print(f"{r['path']}: {r['average_bits']:.2f} bits on average, {r['bytes'] / 1e6:.2f} MB ({widths}); "
                  f"{r['sum_db_lost']:.1f} dB lost summed over layers")


def register(app: typer.Typer) -> None:
    app.add_typer(compress_app, name="compress")
