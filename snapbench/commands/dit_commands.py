"""DiTs in `convert` and `profile`: their option defaults, and `profile`'s DiT path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, TypedDict, Unpack

import click
from rich.table import Table
from rich.text import Text

from snapbench.commands.common import err, fmt_count, messages, out, print_json

if TYPE_CHECKING:
    from snapbench.converters.options import ConvertOptions
    from snapbench.devices.catalog import Device
    from snapbench.latency.dit_profile import DitProfileDoc
    from snapbench.latency.model_latency import ProfileRun
    from snapbench.model.loading import ModelSource


class OptionKw(TypedDict, total=False):
    """The ConvertOptions fields `convert` and `profile` take from their flags (the shapes come apart)."""

    mode: str
    attention: str
    weight_bits: int
    target: str
    precision: str
    jobs: int | None
    check: bool
    chunks: int


def given(name: str) -> bool:
    """Whether the user typed option `name` (a DiT's defaults, such as its text length, differ from a UNet's)."""
    ctx = click.get_current_context(silent=True)
    return ctx is not None and ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)


def dit_options(model: str, *, latent: int | None, batch: int, tokens: int,
                **kw: Unpack[OptionKw]) -> tuple[ModelSource, ConvertOptions]:
    from snapbench.converters.options import ConvertOptions
    from snapbench.dit.cut import default_shapes
    from snapbench.dit.source import dit_spec, resolve_dit

    source = resolve_dit(model)
    shapes = default_shapes(dit_spec(source.spec), latent=latent, batch=batch,
                            tokens=tokens if given("tokens") else None)
    return source, ConvertOptions(latent=shapes.latent, batch=shapes.batch, tokens=shapes.tokens, **kw)


def profile(model: str, device: Device | None, *, packages: Path | None, table: Path | None, tables: Path | None,
            as_json: bool, latent: int | None, batch: int, tokens: int, **kw: Unpack[OptionKw]) -> None:
    """`profile` of a DiT, estimated (`latency/dit_profile.py`); `profile_route.dit_backend` chooses this."""
    from snapbench.atomic import check_writable
    from snapbench.errors import SnapbenchError
    from snapbench.latency.dit_profile import profile_dit
    from snapbench.latency.table import LatencyTable, merge_into_file
    from snapbench.paths import shipped_table_path, tables_hint, tables_redirect_note, user_table_path

    source, opts = dit_options(model, latent=latent, batch=batch, tokens=tokens, **kw)
    if device is None:
        raise SnapbenchError(f"--device auto files figures under the attached iPhone's (or this Mac's) own id: use "
                             f"it with --backend iphone or --backend mac ({model} is estimated on a device you name)")
    dev = device
    path = table if table is not None else user_table_path(dev.id, model, tables)
    existing = LatencyTable.load_or_empty(path)  # a corrupt table stops here, untouched
    if table is None and not path.is_file() and shipped_table_path(dev.id, model).is_file():
        existing = LatencyTable.load(shipped_table_path(dev.id, model))
    say = messages(as_json)
    run = profile_dit(source, dev, opts, table=existing, packages=packages, say=say,
                      before_writing=lambda: check_writable(path, tables_hint(table)))
    if run.new_rows:
        if say and table is None and (note := tables_redirect_note(tables)):
            say(note)
        written = merge_into_file(path, run.new_rows)
        if say:
            say(f"{path}: wrote {len(run.new_rows)} estimate row(s); {len(written)} in the table")
    elif say:
        say(f"{path}: every figure came from the table; nothing to write")
    show(run.to_dict(), str(path), as_json)


def document(run: ProfileRun, source: ModelSource, opts: ConvertOptions, table: str) -> DitProfileDoc:
    """The DiT document of a run through profiling's seam."""
    from snapbench.latency.dit_profile import from_run

    doc = from_run(run, source, opts).to_dict()
    doc["table"] = table
    return doc


def show(doc: DitProfileDoc, table: str, as_json: bool) -> None:
    """The DiT document on stdout (--json), else its tables."""
    doc["table"] = table
    if as_json:
        print_json(doc)
        return
    render(doc)


def render(doc: DitProfileDoc) -> None:
    s = doc["settings"]
    out.rule(Text.assemble((doc['model'], "bold"), f" on {doc['device']}: {doc['backend']}, {s['image']}x{s['image']} image "
             f"(latent {s['latent']}), batch {s['batch']}, {s['tokens']} tokens, attention {s['attention']}"))
    t = Table(title="per block (one denoising step)", title_justify="left", show_edge=False)
    for col in ("stage", "block", "ms", "MACs", "params", "signature"):
        t.add_column(col, justify="right" if col in ("ms", "MACs", "params") else "left")
    for b in doc["blocks"]:
        t.add_row(b["stage"], b["id"], f"{b['latency_ms']:.2f}", fmt_count(b["macs"]), fmt_count(b["params"]),
                  b["signature_digest"])
    out.print(t)
    t = Table(title="per stage", title_justify="left")
    for col in ("stage", "blocks", "ms", "TB ms", "aux ms", "share"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    total = doc["model_ms"]
    for st in doc["stages"]:
        t.add_row(st["stage"], str(st["blocks"]), f"{st['ms']:.1f}", f"{st['TB_ms']:.1f}", f"{st['aux_ms']:.1f}",
                  f"{st['ms'] / total:.0%}" if total else "-")
    t.add_row("step", str(len(doc["blocks"])), f"{total:.1f}", "", "", "", style="bold")
    out.print(t)
    out.print(f"{doc['packages']} block signatures priced ({doc['backend']}; an estimate is predicted from the "
              "package's Core ML program, not measured)")
    where = doc.get("measured_on")
    if where:
        out.print(f"measured on {where['name']} (OS {where['os_version']}, build {where['os_build']})")
    if doc.get("load_ms"):
        load = doc["load_ms"]["transformer"]
        out.print(f"loading the transformer's packages: first {load['first'] / 1000:.1f} s (Neural Engine compile), "
                  f"warm {load['warm'] / 1000:.1f} s")
    for note in doc["notes"]:
        err.print(f"note: {note}", markup=False, highlight=False)
