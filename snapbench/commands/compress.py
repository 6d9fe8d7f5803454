"""`snapbench compress analyze`: per-layer palettization sensitivity -> mixed-bit recipes (converters/sensitivity.py)."""

from __future__ import annotations

import functools

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
    latency_budget_ms: list[float] = typer.Option(
        [], "--latency-budget-ms", help="A recipe whose UNet step takes at most this many ms on --device, estimated "
        "from each layer's op at its bit width (repeatable)."),
    device: str | None = typer.Option(None, "--device", "-d", help="Catalog device that prices latency budgets; "
                                      "with it every recipe states its estimated ms per step."),
    attention: str = typer.Option("original", "--attention", help="Attention of the packages the recipe is priced "
                                  "on (as you will convert them)."),
    price_latent: int | None = typer.Option(None, "--price-latent", min=8, show_default=False,
                                            help="Latent size the recipe is priced at [default: the model's own]."),
    as_json: bool = JsonOpt,
) -> None:
    """Each layer palettized alone at 1/2/4/6/8 bits (and fp16): its block's output PSNR on calibration inputs;
    then a bit width per layer under each budget (recipe JSON for `convert --recipe`)."""
    from snapbench.converters.sensitivity import Pricer, SensitivityOptions, write_analysis
    from snapbench.errors import SnapbenchError

    try:
        measured = tuple(int(w) for w in widths.split(",") if w.strip())
    except ValueError:
        raise SnapbenchError(f"--widths {widths!r}: comma-separated integers, e.g. 2,4,6,8") from None
    opts = SensitivityOptions(latent=latent, samples=samples, tokens=tokens, seed=seed, widths=measured)
    source = model_source(model, weights)
    targets = tuple(bits) if bits or size_mb or latency_budget_ms else (4.5,)
    say = None if as_json else (lambda m: err.print(m, markup=False, highlight=False))
    pricer: Pricer | None = None
    if device is not None:
        from snapbench.devices.catalog import resolve_device
        from snapbench.latency.recipe_price import layer_prices
        from snapbench.model.loading import model_latent
        from snapbench.settings import RunSettings

        dev = resolve_device(device)  # a typo fails here, before any conversion or measurement
        settings = RunSettings(attention=attention, latent=model_latent(source.spec, price_latent), tokens=tokens)
        pricer = functools.partial(layer_prices, source, dev, settings, progress=not as_json)
    done = write_analysis(source, out_dir, opts, targets=targets, budgets_mb=tuple(size_mb),
                          budgets_ms=tuple(latency_budget_ms), pricer=pricer, progress=say)
    if as_json:
        print_json(done)
        return
    out.print(f"sensitivity of {done['layers']} layers: {done['sensitivity']}")
    priced = done.get("latency")
    for r in done["recipes"]:
        widths = ", ".join(f"{n} x {b} bit" for b, n in sorted(r["layers_by_bits"].items(), key=lambda kv: int(kv[0])))
        ms = (f"; {r['latency_ms']:.3f} ms per UNet step on {priced['device']} (fp16 {priced['fp16_ms']:.3f}; "
              f"estimated, estimator v{priced['estimator_version']})") if priced else ""
        out.print(f"{r['path']}: {r['average_bits']:.2f} bits on average, {r['bytes'] / 1e6:.2f} MB ({widths}); "
                  f"{r['sum_db_lost']:.1f} dB lost summed over layers{ms}")


def register(app: typer.Typer) -> None:
    app.add_typer(compress_app, name="compress")
