"""`snapbench profile`: per-block latency on a device into the lookup table, stage and component totals.

Import format for `--backend import --from FILE`: see `snapbench.latency.importer` (columns `block` or
`signature`, `latency_ms`, optional `p90_ms`, `samples`, `device` and settings columns).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from snapbench.choices import check_choice
from snapbench.commands.common import (
    JsonOpt,
    LatentOpt,
    ModelOpt,
    RevisionOpt,
    SubfolderOpt,
    TokensOpt,
    VariantOpt,
    model_source,
    out,
    print_json,
    resolved_latent,
)
from snapbench.console import say
from snapbench.devices.catalog import Device
from snapbench.interrupts import on_interrupt_keep
from snapbench.latency.table import ATTENTIONS, COMPUTE_UNITS, LatencyTable, Settings, merge_into_file
from snapbench.profilers.backends import BACKEND_CHOICES
from snapbench.profilers.coreml_api import DEFAULT_REQUEST_TIMEOUT_S
from snapbench.profilers.readiness import TEAM_ID_ENV

if TYPE_CHECKING:
    from snapbench.converters.options import ConvertOptions
    from snapbench.latency.model_latency import ProfileRun, ProfileTools
    from snapbench.latency.profile_run import Measuring, ProfileRequest
    from snapbench.model.loading import ModelSource

def profile_command(
    ctx: typer.Context,
    devices: list[str] = typer.Option(..., "--device", "-d", help="Catalog id or name (see `snapbench devices`), or "
                                      "auto: the attached iPhone's (or this Mac's) own id, with --backend iphone or "
                                      "mac. Repeat it with --ray-address to measure on several devices at once."),
    model: str = ModelOpt,
    variant: str | None = VariantOpt,
    subfolder: str | None = SubfolderOpt,
    revision: str | None = RevisionOpt,
    component: list[str] | None = typer.Option(
        None, "--component", "-c", help="unet, text_encoder, vae_decoder; repeat for several (default: all three)."),
    attention: str = typer.Option("original", "--attention", help=f"Attention implementation: {', '.join(ATTENTIONS)}."),
    weight_bits: int = typer.Option(16, "--weight-bits", help="Weight bits: 16 (fp16), 8, 6 or 4 (palettized)."),
    batch: int = typer.Option(2, "--batch", min=1, help="UNet batch (2 = classifier-free guidance)."),
    latent: int | None = LatentOpt,
    tokens: int = TokensOpt,
    compute_units: str = typer.Option("cpu_and_ne", "--compute-units", help=f"{', '.join(COMPUTE_UNITS)}."),
    backend: str = typer.Option("auto", "--backend", "-b", help=f"{' | '.join(BACKEND_CHOICES)}."),
    table: Path | None = typer.Option(None, "--table", help="Table CSV to update (default <tables>/<device>/<model>.csv)."),
    tables: Path | None = typer.Option(
        None, "--tables", envvar="SNAPBENCH_TABLES",
        help="Folder of your tables, read before the shipped ones [default: ./latency_tables]."),
    repeats: int = typer.Option(20, "--repeats", min=1, help="Timed runs per package (iphone, mac)."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed runs first (iphone, mac)."),
    team_id: str | None = typer.Option(None, "--team-id", envvar=TEAM_ID_ENV,
                                          help="Apple Developer team id that signs coremltools' runner app (iphone)."),
    bundle_id: str | None = typer.Option(None, "--bundle-id", help="Bundle id for the runner app (iphone; "
                                            "default dev.snapbench.modelrunner.<team id>)."),
    request_timeout: float = typer.Option(DEFAULT_REQUEST_TIMEOUT_S, "--request-timeout", min=1,
                                          help="Seconds each request to the phone may take (the first load "
                                               "compiles for the Neural Engine)."),
    rebuild_runner: bool = typer.Option(False, "--rebuild-runner", help="Build coremltools' runner app again "
                                        "(iphone; it is rebuilt by itself when the team, bundle id, Xcode, "
                                        "coremltools or its profile's expiry changed)."),
    trust_wait: float = typer.Option(300.0, "--trust-wait", min=0, help="Seconds to wait for you to trust the "
                                     "developer on the phone when the runner app cannot start (iphone)."),
    from_file: Path | None = typer.Option(None, "--from", help="Measurements to import (CSV or JSON; format below)."),
    packages: Path | None = typer.Option(None, "--packages", help="A `snapbench convert` folder to time instead of converting."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="A device farm: the Ray cluster whose "
                                              "nodes hold the --device phones and Macs (`snapbench farm join`)."),
    input_shape: str | None = typer.Option(None, "--input", help="Input shape of a timm:/torchvision:/open_clip:/"
                                              "hf:/synthetic: network, e.g. 1x3x224x224 (one whole program)."),
    app_floor_ms: float | None = typer.Option(
        None, "--app-floor-ms", help="Your app's per-prediction floor in ms (`snapbench calibrate --app-floor "
        "FILE` measures it): adds end_to_end_ms beside the engine's model_ms, which it never changes."),
    as_json: bool = JsonOpt,
) -> None:
    """Latency of every block (and the text encoder and VAE decoder) on a device: table + stage summary."""
    from snapbench.latency.app_floor import check_floor_ms
    from snapbench.profile_route import named_device, profile_devices, profile_route

    devs = profile_devices(devices, ray_address)  # each --device resolved once
    app_floor_ms = check_floor_ms(app_floor_ms)
    route = profile_route(model, input_shape=input_shape, components=component, attention=attention,
                          compute_units=compute_units)
    if route == "network":  # any network (or a Core ML package): one whole program, estimated
        _profile_network(model, input_shape, named_device(devs[0], model), weight_bits, backend, as_json, app_floor_ms)
        return
    from snapbench.latency.model_latency import ProfileTools
    from snapbench.latency.profile_run import Measuring, run_profile

    tools = ctx.obj if isinstance(ctx.obj, ProfileTools) else ProfileTools()
    measuring = Measuring(warmup=warmup, repeats=repeats, request_timeout_s=request_timeout,
                          rebuild_runner=rebuild_runner, trust_wait_s=trust_wait, team_id=team_id, bundle_id=bundle_id)
    if route == "dit":
        _profile_dit(model, devs, backend=backend, compute_units=compute_units, table=table, tables=tables,
                     from_file=from_file, packages=packages, ray_address=ray_address, measuring=measuring, tools=tools,
                     as_json=as_json, latent=latent, batch=batch, tokens=tokens, attention=attention,
                     weight_bits=weight_bits)
        return
    request = _request(model, devs[0], variant=variant, subfolder=subfolder, revision=revision,
                       component=component, compute_units=compute_units, weight_bits=weight_bits,
                       attention=attention, batch=batch, latent=latent, tokens=tokens, backend=backend, table=table,
                       tables=tables, from_file=from_file, packages=packages, measuring=measuring)
    if ray_address is not None:
        _profile_farm(tools, request, devs, ray_address=ray_address, as_json=as_json, app_floor_ms=app_floor_ms)
        return
    outcome = run_profile(request, tools, say=say)
    show(outcome.run, str(outcome.table_path), as_json, app_floor_ms)
    report_failures(outcome.run)


def _profile_dit(model: str, devs: list[Device | None], *, backend: str, compute_units: str, table: Path | None,
                 tables: Path | None, from_file: Path | None, packages: Path | None, ray_address: str | None,
                 measuring: Measuring, tools: ProfileTools, as_json: bool, latent: int | None, batch: int,
                 tokens: int, attention: str, weight_bits: int) -> None:
    """A DiT's blocks: measured (or imported) through profiling's seam when `dit_backend` says so, else
    estimated by the DiT's own path."""
    from snapbench.commands import dit_commands
    from snapbench.profile_route import dit_backend

    chosen = dit_backend(backend, devs[0], import_file=from_file, ray_address=ray_address, machine=tools.machine)
    if chosen is None:
        dit_commands.profile(model, devs[0], packages=packages, table=table, tables=tables, as_json=as_json,
                             latent=latent, batch=batch, tokens=tokens, attention=attention, weight_bits=weight_bits)
        return
    source, opts = dit_commands.dit_options(model, latent=latent, batch=batch, tokens=tokens, attention=attention,
                                            weight_bits=weight_bits)
    measure_dit(source, model, opts, devs[0], backend=chosen,
                compute_units=check_choice("--compute-units", compute_units, COMPUTE_UNITS), table=table,
                tables=tables, import_file=from_file, packages=packages, measuring=measuring, tools=tools,
                ray_devices=devs, ray_address=ray_address, as_json=as_json)


def _request(model: str, device: Device | None, *, variant: str | None, subfolder: str | None, revision: str | None,
             component: list[str] | None, compute_units: str, weight_bits: int, attention: str, batch: int,
             latent: int | None, tokens: int, backend: str, table: Path | None, tables: Path | None,
             from_file: Path | None, packages: Path | None, measuring: Measuring) -> ProfileRequest:
    """The command line's inputs resolved once: the model, the device (None: auto), the settings."""
    from snapbench.latency.model_latency import ALL_COMPONENTS
    from snapbench.latency.profile_run import ProfileRequest

    source = model_source(model, None, variant, subfolder, revision)
    settings = Settings(compute_units=check_choice("--compute-units", compute_units, COMPUTE_UNITS),
                        weight_bits=weight_bits, attention=check_choice("--attention", attention, ATTENTIONS),
                        batch=batch, latent=resolved_latent(source, latent), tokens=tokens)
    return ProfileRequest(source, model, device, settings,
                          backend=backend, components=tuple(component or ALL_COMPONENTS), table=table, tables=tables,
                          import_file=from_file, packages=packages, measuring=measuring)


def show(run: ProfileRun, table_path: str, as_json: bool, app_floor_ms: float | None) -> None:
    """The run's document on stdout (--json), else its tables."""
    if as_json:
        from snapbench.latency.app_floor import with_floor
        from snapbench.latency.document import profile_document  # heavy (torch): imported when used

        print_json(with_floor(profile_document(run, table_path=table_path), app_floor_ms))
    else:
        render(run, app_floor_ms)


def report_failures(*runs: ProfileRun) -> None:
    """Packages a device could not measure, with their reasons; exit 1 (their figures are estimates)."""
    if not any(run.failures for run in runs):
        return
    for run in runs:
        if run.failures:
            say(f"{len(run.failures)} package(s) could not be measured on {run.device.id} (estimated and "
                "labelled estimate instead; run again to retry them):")
            for f in run.failures:
                say(f"  {f.reason}")
    raise typer.Exit(1)


def measure_dit(source: ModelSource, model: str, opts: ConvertOptions, device: Device | None, *, backend: str,
                compute_units: str, table: Path | None, tables: Path | None, import_file: Path | None,
                packages: Path | None, measuring: Measuring | None, tools: ProfileTools | None,
                ray_devices: list[Device | None] | None, ray_address: str | None, as_json: bool) -> None:
    """A DiT's blocks measured on a phone or Mac (or a farm of them), or imported: the UNet's path (one
    package per signature, a row saved after each, resume, failures estimated and labelled), printed as
    the DiT document."""
    from snapbench.commands import dit_commands
    from snapbench.latency.dit_profile import settings_of
    from snapbench.latency.model_latency import ProfileTools
    from snapbench.latency.profile_run import Measuring, ProfileRequest, run_profile

    tools = tools or ProfileTools()
    request = ProfileRequest(source, model, device, settings_of(opts, compute_units), backend=backend,
                             components=("unet",), table=table, tables=tables, import_file=import_file,
                             packages=packages, measuring=measuring or Measuring())

    def show_run(run: ProfileRun, path: str) -> Mapping[str, object]:
        doc = dit_commands.document(run, source, opts, path)
        if not as_json:
            dit_commands.render(doc)
        return doc

    if ray_address is not None:
        _profile_farm(tools, request, ray_devices or [device], ray_address=ray_address, as_json=as_json,
                      app_floor_ms=None, show_run=show_run)
        return
    outcome = run_profile(request, tools, say=say)
    doc = show_run(outcome.run, str(outcome.table_path))
    if as_json:
        print_json(doc)
    report_failures(outcome.run)


def _profile_farm(tools: ProfileTools, request: ProfileRequest, devs: list[Device | None], *, ray_address: str,
                  as_json: bool, app_floor_ms: float | None,
                  show_run: Callable[[ProfileRun, str], Mapping[str, object]] | None = None) -> None:
    """`--ray-address`: every --device measured on the farm's nodes, one table per device (`show_run`: a
    family's own document and rendering, a DiT's)."""
    from snapbench.latency.farm_profile import farm_devices, profile_on_farm
    from snapbench.latency.packages import ConverterPackages
    from snapbench.latency.profile_run import counts, say_redirect, table_paths
    from snapbench.profilers.backends import EstimatePricer
    from snapbench.profilers.farm import NodeSettings, node_backend

    r, m = request, request.measuring
    farm = farm_devices(r, devs)  # the refusals, before any work
    paths = {d.id: table_paths(r, d) for d in farm}
    existing = {did: LatencyTable.load_or_empty(read) for did, (_, read) in paths.items()}  # corrupt: stops here
    say_redirect(r, say)  # a farm run measures: it always writes
    on_interrupt_keep("the packages converted so far (cached) and the rows measured so far, in each device's table")
    runs = profile_on_farm(
        r.source, farm, r.settings, address=ray_address, tables=existing, estimator=tools.estimator or EstimatePricer(),
        components=r.components,
        packages=tools.packages or (ConverterPackages(r.packages) if r.packages is not None else None),
        factory=tools.farm_backend or node_backend,
        node_settings=NodeSettings(compute_units=r.settings.compute_units, warmup=m.warmup, repeats=m.repeats,
                                   request_timeout_s=m.request_timeout_s, team_id=m.team_id, bundle_id=m.bundle_id),
        on_table=lambda did, t: merge_into_file(paths[did][0], t), progress=True, say=say)
    docs: list[Mapping[str, object]] = []
    for run in runs:
        path = paths[run.device.id][0]
        written = merge_into_file(path, run.table)
        say(f"{path}: wrote {len(run.new_rows)} row(s) ({counts(run) or 'none new'}); {len(written)} in the "
            f"table; measured on {len(run.farm_nodes)} node(s), {run.retried} package(s) sent again after a node "
            "went away")
        if show_run is not None:
            docs.append(show_run(run, str(path)))
        elif as_json:
            from snapbench.latency.app_floor import with_floor
            from snapbench.latency.document import profile_document

            docs.append(with_floor(profile_document(run, table_path=str(path)), app_floor_ms))
        else:
            render(run, app_floor_ms)
    if as_json:
        print_json(docs)
    report_failures(*runs)


def _profile_network(model: str, input_shape: str | None, device: Device, weight_bits: int, backend: str,
                     as_json: bool, app_floor_ms: float | None) -> None:
    from snapbench.zoo.profile import profile_network

    doc = profile_network(model, input_shape, device, weight_bits=weight_bits, backend=backend,
                          app_floor_ms=app_floor_ms)
    if as_json:
        print_json(doc)
        return
    est = doc["estimate"]
    out.print(Text.assemble(
        f"{doc['model']} ({doc['input'] or 'default input'}) on {doc['device']} ({doc['chip']}), "
        f"{doc['weight_bits']}-bit weights: ", (f"{doc['model_ms']:.3g} ms", "bold"), " (estimate, params "
        f"v{doc['params_version']}); {est['n_ops']} ops, {est['gflops']:.3g} GFLOP, {len(est['cpu_ops'])} on the CPU"))
    if "end_to_end_ms" in doc:
        out.print(f"  end to end in your app: {doc['end_to_end_ms']:.3g} ms (engine + your floor, "
                  f"{doc['app_floor_ms']:g} ms)")
    for note in doc["notes"]:
        out.print(f"  {note}")


def render(run: ProfileRun, app_floor_ms: float | None = None) -> None:
    from snapbench.latency.document import document_backend, stage_summary

    s = run.settings
    out.rule(Text.assemble((run.model, "bold"), f" on {run.device.name} ({run.device.chip})  batch {s.batch}, "
             f"latent {s.latent}, {s.attention}, {s.weight_bits}-bit weights, {s.compute_units}; "
             f"backend {document_backend(run)}"))
    if run.blocks:
        t = Table(title="UNet per stage (ms per denoising step)", title_justify="left")
        for col in ("stage", "CA ms", "RB ms", "aux ms", "total ms", "share", "params", "backend"):
            t.add_column(col, justify="left" if col in ("stage", "backend") else "right")
        total = sum(b.latency_ms for b in run.blocks) or 1.0
        for row in stage_summary(run):
            used = sorted({b.backend for b in run.blocks if b.stage == row["stage"] and b.backend})
            t.add_row(row["stage"], f"{row['ca_ms']:.1f}", f"{row['rb_ms']:.1f}", f"{row['aux_ms']:.1f}",
                      f"{row['ms']:.1f}", f"{row['ms'] / total:.0%}", f"{row['params'] / 1e6:.1f}M",
                      "+".join(used) or "-")
        out.print(t)
    loads = any(c.first_load_ms is not None for c in run.components.values())
    t = Table(title="components", title_justify="left")
    cols = ("component", "ms", "per", "backend") + (("first load s", "warm load s") if loads else ())
    for col in cols:
        t.add_column(col, justify="left" if col in ("component", "per", "backend") else "right")
    for c in run.components.values():
        extra = (_seconds(c.first_load_ms), _seconds(c.warm_load_ms)) if loads else ()
        t.add_row(c.name, f"{c.latency_ms:.1f}", c.per, c.backend, *extra)
    out.print(t)
    if run.measured_on is not None:
        out.print(f"measured on {run.measured_on.label()}"
                  + ("; first load = loading and compiling for the Neural Engine, warm load = loading again"
                     if loads else ""))
    comps = run.components
    if {"unet", "text_encoder", "vae_decoder"} <= comps.keys():
        from snapbench.latency.end_to_end import TEXT_ENCODER_RUNS, image_budget

        te, un, vae = comps["text_encoder"].latency_ms, comps["unet"].latency_ms, comps["vae_decoder"].latency_ms
        per = {steps: image_budget(te, un, vae, steps).total_s for steps in (50, 8)}
        out.print(f"per image: {TEXT_ENCODER_RUNS} x text encoder + steps x UNet + VAE decoder = {per[50]:.2f} s "
                  f"at 50 steps, {per[8]:.2f} s at 8 steps (engine time)")
    if app_floor_ms is not None and run.components:
        shown = ", ".join(f"{c.name} {c.latency_ms + app_floor_ms:.1f} ms" for c in run.components.values())
        out.print(f"end to end in your app (engine + your floor, {app_floor_ms:g} ms per prediction): {shown}")


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f}"


IMPORT_HELP = (
    "Import format (--from FILE, CSV or JSON): columns block (id as `snapbench inspect` prints it, its file id, "
    "text_encoder or vae_decoder) or signature; latency_ms (or latency_us, latency_s); optional p90_ms, samples, "
    "device, notes, and settings columns (compute_units, precision, weight_bits, attention, batch, latent) that "
    "must match this run's. Figures the file lacks are estimated and labelled estimate. More: docs/formats.md."
)


def register(app: typer.Typer) -> None:
    app.command("profile", epilog=IMPORT_HELP)(profile_command)
