"""`snapbench report`: one self-contained HTML page comparing a baseline UNet (or diffusion transformer) with
candidates of the same kind on devices."""

from __future__ import annotations

import shlex

import typer
from rich.text import Text

from snapbench.commands.common import err
from snapbench.devices.catalog import resolve_device
from snapbench.errors import SnapbenchError
from snapbench.report.data import ReportData, ReportSettings
from snapbench.settings import ATTENTIONS, BACKEND_CHOICES, COMPUTE_UNITS, PRECISIONS, WEIGHT_BITS, check_choice

BACKENDS = tuple(b for b in BACKEND_CHOICES if b != "import")  # "import" reaches the report through a --table
DEFAULT_CANDIDATES = ("snapfusion",)
DEFAULT_DEVICES = ("iphone14pro",)


def report_command(
    ctx: typer.Context,
    baseline: str = typer.Option("sd15", "--baseline", "-b", help="Preset, arch spec .json or model folder."),
    candidate: list[str] | None = typer.Option(
        None, "--candidate", "-c",
        help="Model to compare with the baseline; repeat for several. [default: snapfusion]"),
    device: list[str] | None = typer.Option(
        None, "--device", "-d",
        help="Catalog id or name (`snapbench devices`); repeat for several. [default: iphone14pro]"),
    steps: list[str] | None = typer.Option(
        None, "--steps", help="Sampling steps of one model, MODEL=N (default: SnapFusion 8, others 50); repeatable."),
    backend: str = typer.Option("auto", "--backend", help=f"{' | '.join(BACKENDS)}: where missing latencies come "
                                "from; auto picks the best available and says which."),
    table: str | None = typer.Option(
        None, "--table", help="Latency table CSV to read (missing rows are estimated)."),
    reference: str | None = typer.Option(
        None, "--reference", help="Reference-points CSV shown beside the figures (default: shipped copy)."),
    attention: str = typer.Option(
        "original", "--attention", help=f"Attention implementation of the converted UNet: {', '.join(ATTENTIONS)}."),
    weight_bits: int = typer.Option(16, "--weight-bits", help="Bits per UNet weight: 16 (fp16), 8, 6 or 4."),
    precision: str = typer.Option("fp16", "--precision", help=f"{', '.join(PRECISIONS)}."),
    compute_units: str = typer.Option("cpu_and_ne", "--compute-units", help=f"{', '.join(COMPUTE_UNITS)}."),
    batch: int = typer.Option(2, "--batch", min=1, help="UNet batch (2 = classifier-free guidance)."),
    latent: int | None = typer.Option(None, "--latent", min=8, show_default=False,
                                         help="Latent height = width for every model [default: each model's own "
                                              "config sample_size; SD: 64, a 512x512 image]."),
    out_path: str | None = typer.Option(
        None, "--out", "-o", help="HTML file to write. [default: reports/<baseline>-vs-<candidates>-<devices>.html]"),
    as_json: bool = typer.Option(False, "--json", help="Also write the data behind the report beside it (.json)."),
    app_floor_ms: float | None = typer.Option(
        None, "--app-floor-ms", help="Your app's per-prediction floor in ms (`snapbench calibrate --app-floor "
        "FILE`): the end-to-end table adds a figure in your app beside the engine's."),
) -> None:
    """Self-contained HTML report: provenance, summary, Fig. 2 per stage, Table 3, blocks, end-to-end budget."""
    if backend == "import":  # imports go through a table; the report reads tables
        raise SnapbenchError("--backend import: put the measurements in a table first (`snapbench profile "
                             "--backend import --from FILE --table T.csv`), then run `snapbench report --table T.csv`")
    for flag, value, allowed in (("--backend", backend, BACKENDS), ("--attention", attention, ATTENTIONS),
                                 ("--precision", precision, PRECISIONS),
                                 ("--compute-units", compute_units, COMPUTE_UNITS),
                                 ("--weight-bits", weight_bits, WEIGHT_BITS)):
        check_choice(flag, value, allowed)
    candidates = list(candidate or DEFAULT_CANDIDATES)
    devices = list(device or DEFAULT_DEVICES)
    devs = [resolve_device(d) for d in devices]  # once, first: a typo there fails before any model is built
    from snapbench.latency.app_floor import check_floor_ms
    from snapbench.report.gather_data import default_out_path, gather, parse_steps  # heavy: when used
    from snapbench.report.write import check_out_path, write_report

    app_floor_ms = check_floor_ms(app_floor_ms)  # before minutes of profiling
    steps_map = parse_steps(steps or [])
    if out_path is not None:
        check_out_path(out_path)  # fail before minutes of profiling, not after
    settings: ReportSettings = {"compute_units": compute_units, "precision": precision, "weight_bits": weight_bits,
                "attention": attention, "batch": batch, "latent": latent}
    command = _command_line(baseline, candidates, devices, steps or [], backend, table, reference, settings,
                            out_path, as_json, app_floor_ms)
    data = gather(baseline=baseline, candidates=candidates, devices=devs, settings=settings, steps=steps_map,
                  backend=backend, table=table, reference=reference, command=command,
                  # tests hand a profiler in through the CLI's ctx.obj; None: snapbench's latency package
                  profiler=ctx.obj if callable(ctx.obj) else None,
                  progress=_once(lambda msg: err.print(msg, markup=False)), app_floor_ms=app_floor_ms)
    html_path, json_path = write_report(data, out_path or default_out_path(data), with_json=as_json)
    for r in data.results:
        if not r.available:
            err.print(Text.assemble((f"no latency for {r.model} on {r.device}:", "yellow"), f" {r.reason}"))
    err.print(headline(data), markup=False, highlight=False, soft_wrap=True)
    typer.echo(str(html_path))  # plain echo: a path is data, not rich markup
    if json_path is not None:
        typer.echo(str(json_path))


def headline(data: ReportData) -> str:
    """The report's summary in the terminal, one line per model and device: UNet (or transformer) ms per
    step, steps, seconds per image end to end, speedups against the baseline, and how the figures were made."""
    name = data.denoiser.name
    lines = []
    for r in data.results:
        if not r.available:
            lines.append(f"{r.model} on {r.device}: no latency")
            continue
        got = r.components.get("unet")
        unet = got.ms if got is not None else None
        budget = r.budget
        parts = [f"{name} {unet:.1f} ms/step" if unet is not None else f"{name} -", f"{r.steps} steps",
                 f"{budget.total_s:.2f} s per image" if budget else "no end-to-end figure"]
        if r.speedup_e2e:
            parts.append(f"{r.speedup_e2e:.1f}x end to end")
        if r.speedup_unet_step:
            parts.append(f"{r.speedup_unet_step:.1f}x per {name} step")
        lines.append(f"{r.model} on {r.device}: {', '.join(parts)} ({'+'.join(r.labels) or 'unlabelled'})")
    return "\n".join(lines)


def _once(say):
    """The profiler says the same thing for every model (e.g. which backend `auto` chose): say it once."""
    seen: set[str] = set()

    def wrapped(msg: str) -> None:
        if msg not in seen:
            seen.add(msg)
            say(msg)

    return wrapped


def _command_line(baseline, candidates, devices, steps, backend, table, reference, settings, out_path,
                  as_json, app_floor_ms=None) -> str:
    """The command that reproduces this report, for its provenance section."""
    args = ["snapbench", "report", "--baseline", baseline]
    for c in candidates:
        args += ["--candidate", c]
    for d in devices:
        args += ["--device", d]
    for s in steps:
        args += ["--steps", s]
    args += ["--backend", backend]
    if table:
        args += ["--table", table]
    if reference:
        args += ["--reference", reference]
    for key, default in (("attention", "original"), ("weight_bits", 16), ("precision", "fp16"),
                         ("compute_units", "cpu_and_ne"), ("batch", 2), ("latent", None)):
        if settings[key] != default:
            args += [f"--{key.replace('_', '-')}", str(settings[key])]
    if app_floor_ms is not None:
        args += ["--app-floor-ms", f"{app_floor_ms:g}"]
    if out_path:
        args += ["--out", out_path]
    if as_json:
        args.append("--json")
    return shlex.join(args)


def register(app: typer.Typer) -> None:
    app.command("report")(report_command)
