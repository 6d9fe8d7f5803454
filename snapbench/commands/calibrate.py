"""`snapbench calibrate`: the Neural Engine cost model's error on every reference point; refit and save.

The refit (`--write`) uses the published corpus as `snapbench validate` prices it, plus the reference points
and any measured rows; `snapbench validate --cross source` shows how well such a fit predicts unseen rows.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from snapbench.commands.common import JsonOpt, err, out, print_json


def calibrate_command(
    report: bool = typer.Option(True, "--report/--no-report", help="Print the error on every reference point."),
    measured: Path | None = typer.Option(None, "--measured", help="CSV of your measured latencies (format below)."),
    write: bool = typer.Option(False, "--write", help="Refit the parameters and save ane_params.json (atomically)."),
    params: Path | None = typer.Option(None, "--params", help="Parameter file to read (and write with --write)."),
    app_floor: Path | None = typer.Option(
        None, "--app-floor", help="CSV of your app's timings of the one-op package `snapbench convert --model "
        "synthetic:floor` writes (model,device,latency_ms): prints your app's per-prediction floor for "
        "--app-floor-ms."),
    as_json: bool = JsonOpt,
) -> None:
    """Estimated vs published latency on each reference point (all estimates); --write refits first."""
    if app_floor is not None:
        if write or measured is not None:
            from snapbench.errors import SnapbenchError

            raise SnapbenchError("--app-floor reads your app's floor only; run --write / --measured on their own")
        _app_floor(app_floor, params, as_json)
        return
    from snapbench.calibration.fit import calibration_report, load_points
    from snapbench.profilers.estimate.params import default_params_path, load_params

    if write:
        from snapbench.validation.run import refit

        err.print("refitting the cost model on the published corpus (snapbench validate), the reference "
                  "points and your measured rows...")
        fitted, table = refit(measured=str(measured) if measured else None, write=True, params_path=params)
        err.print(f"wrote {params or default_params_path()} (version {fitted.version}, "
                  f"fitted on {len(fitted.fitted_on)} points)")
    else:
        fitted = load_params(params)
        table = calibration_report(fitted, load_points(measured))
    if as_json:
        print_json({"params_version": fitted.version, "backend": "estimate",
                    "points": table.to_dict(orient="records")})
        return
    if not report:
        return
    t = Table(title=f"Cost model (params v{fitted.version}) vs published latencies: estimates",
              title_justify="left")
    for col, just in (("reference", "left"), ("settings", "left"), ("published ms", "right"),
                      ("estimated ms", "right"), ("error %", "right")):
        t.add_column(col, justify="right" if just == "right" else "left")
    for row in table.itertuples():
        style = None if abs(row.error_pct) <= 15 else "yellow"
        t.add_row(row.reference, row.settings, f"{row.published_ms:g}", f"{row.estimated_ms:.1f}",
                  f"{row.error_pct:+.1f}", style=style)
    out.print(t)
    mean_abs = table["error_pct"].abs().mean() if len(table) else float("nan")
    out.print(f"mean |error| {mean_abs:.1f}%  (source of every estimated figure: estimate)")


def _app_floor(path: Path, params: Path | None, as_json: bool) -> None:
    from snapbench.profilers.estimate.params import load_params
    from snapbench.zoo.profile import floor_from_file

    reading = floor_from_file(path, params=load_params(params))
    if as_json:
        print_json({"backend": "measured", **reading.to_dict()})
        return
    out.print(Text.assemble(
        f"{path}: {reading.runs} timings on {reading.device}, median {reading.median_ms:.3g} ms, less the "
        f"one-op package's own engine time ({reading.engine_ms:.3f} ms, estimated): your app's floor is ",
        (f"{reading.floor_ms:.3g} ms", "bold"), f" per prediction. Pass --app-floor-ms {reading.floor_ms:.3g} to "
        "profile and report."))


MEASURED_HELP = (
    "Measured format (--measured FILE, CSV, # lines are comments): device (id or name); latency_ms or latency_s "
    "(UNet per step, text encoder per run, VAE decoder per image); and either package (an .mlpackage path) or "
    "component (text_encoder, unet, vae_decoder) with model (a preset) and optional attention, weight_bits, batch; "
    "optional source, notes. Example row: iphone14,unet,sd15,split_einsum_v2,16,2,520,my harness under the header "
    "device,component,model,attention,weight_bits,batch,latency_ms,source. More: docs/formats.md."
)


def register(app: typer.Typer) -> None:
    app.command("calibrate", epilog=MEASURED_HELP)(calibrate_command)
