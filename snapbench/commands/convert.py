"""`snapbench convert`: Core ML packages per block (or whole UNet / pipeline part) + manifest.json."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from snapbench.commands.common import (
    BatchOpt,
    JsonOpt,
    LatentOpt,
    ModelOpt,
    RevisionOpt,
    SubfolderOpt,
    TokensOpt,
    VariantOpt,
    WeightsOpt,
    err,
    messages,
    model_source,
    out,
    print_json,
    resolved_latent,
)
from snapbench.errors import SnapbenchError
from snapbench.interrupts import on_interrupt_keep
from snapbench.settings import COMPONENTS, check_choice

if TYPE_CHECKING:
    from snapbench.commands.dit_commands import OptionKw
    from snapbench.converters.entry import ConvertRequest, Part
    from snapbench.converters.result import ConvertResult


def convert_command(
    model: str = ModelOpt,
    weights: str | None = WeightsOpt,
    variant: str | None = VariantOpt,
    subfolder: str | None = SubfolderOpt,
    revision: str | None = RevisionOpt,
    out_dir: str = typer.Option(..., "--out", "-o", help="Folder for the packages and manifest.json (new, or one of ours)."),
    mode: str = typer.Option("profile", "--mode", help="profile: one package per block signature; deploy: one per block, real weights."),
    attention: str = typer.Option("original", "--attention", help="original | split_einsum | split_einsum_v2 (Neural-Engine rewrites)."),
    weight_bits: int = typer.Option(16, "--weight-bits", help="16 | 8 (int8 linear) | 6 | 4 (palettized)."),
    target: str = typer.Option("iOS16", "--target", help="Minimum deployment target: iOS16 | iOS17 | iOS18."),
    precision: str = typer.Option("fp16", "--precision", help="Compute precision: fp16 | fp32."),
    latent: int | None = LatentOpt,
    batch: int = BatchOpt,
    tokens: int = TokensOpt,
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="Worker processes (default: the cores available)."),
    whole: bool = typer.Option(False, "--whole", help="Convert the whole UNet into one package."),
    chunks: int = typer.Option(1, "--chunks", help="With --whole: 2 splits the UNet in two packages (iOS)."),
    component: str | None = typer.Option(None, "--component", help="A pipeline part: text_encoder | vae_decoder | unet."),
    check: bool = typer.Option(False, "--check", help="Run each package against PyTorch, PSNR >= 35 dB (macOS only)."),
    pipeline: bool = typer.Option(False, "--pipeline", help="The whole app pipeline for Apple's Swift StableDiffusion package: TextEncoder, Unet (or 2 chunks), VAEDecoder, tokenizer."),
    vae_encoder: bool = typer.Option(False, "--vae-encoder", help="With --pipeline: also VAEEncoder (image-to-image)."),
    compile_: bool = typer.Option(False, "--compile", help="With --pipeline: also write the .mlmodelc folders (macOS only)."),
    drop_text_encoder: list[str] = typer.Option([], "--drop-text-encoder", help="With --pipeline of a DiT: leave "
                                                "this text encoder out (clip-l, clip-g, t5, gemma; repeatable)."),
    input_shape: str | None = typer.Option(None, "--input", help="Input shape of a timm:/torchvision:/open_clip:/"
                                              "hf:/synthetic: network (converted whole, one package)."),
    recipe: str | None = typer.Option(None, "--recipe", help="A mixed-bit recipe JSON (`compress analyze`): each "
                                         "UNet layer palettized at its own bit width (deploy): per block, --whole "
                                         "or --pipeline."),
    as_json: bool = JsonOpt,
) -> None:
    """Convert a UNet into Core ML packages, one per block (default), whole, or a pipeline part."""
    from snapbench.locks import refuse_if_locked

    refuse_if_locked(out_dir, "convert")  # in a second, not after the model is built and cut
    from snapbench.converters.entry import convert
    from snapbench.zoo.specs import is_network_spec

    if is_network_spec(model):  # any network: one whole package under --out
        _convert_network(model, input_shape, out_dir, weight_bits=weight_bits, attention=attention, as_json=as_json)
        return
    part = _part(whole=whole, component=component, pipeline=pipeline, chunks=chunks)
    options: OptionKw = {"mode": mode, "attention": attention, "weight_bits": weight_bits, "target": target,
                         "precision": precision, "jobs": jobs, "check": check, "chunks": chunks}
    request = _request(model, part, Path(out_dir), weights=weights, variant=variant, subfolder=subfolder,
                       revision=revision, latent=latent, batch=batch, tokens=tokens, options=options,
                       vae_encoder=vae_encoder, compile_=compile_, as_json=as_json, recipe=recipe,
                       drop_text_encoders=tuple(drop_text_encoder))
    on_interrupt_keep(f"every finished package and manifest.json in {out_dir}")
    result = convert(request)
    report(result, out_dir, as_json)
    for note in result.notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if result.missing:
        # bad input, but everything that was there is converted and kept
        raise SnapbenchError(f"{model if weights is None else weights}: missing {'; '.join(result.missing)}; "
                             f"converted the rest into {out_dir}")


def _part(*, whole: bool, component: str | None, pipeline: bool, chunks: int) -> Part:
    """What --whole, --component and --pipeline ask for, refused in one line when they conflict."""
    if pipeline and (whole or component is not None):
        raise SnapbenchError("--pipeline converts every part; it cannot be combined with --whole or --component")
    if whole and component not in (None, "unet"):
        raise SnapbenchError(f"--whole converts the UNet; it cannot be combined with --component {component}")
    if chunks != 1 and not (whole or pipeline or component == "unet"):
        raise SnapbenchError("--chunks needs --pipeline, --whole or --component unet")
    if pipeline:
        return "pipeline"
    if whole:
        return "unet"
    return check_choice("--component", component, COMPONENTS) if component is not None else "blocks"


def _request(model: str, part: Part, out_dir: Path, *, weights: str | None, variant: str | None,
             subfolder: str | None, revision: str | None, latent: int | None, batch: int, tokens: int,
             options: OptionKw, vae_encoder: bool, compile_: bool, as_json: bool,
             recipe: str | None = None, drop_text_encoders: tuple[str, ...] = ()) -> ConvertRequest:
    """The model resolved once (a DiT's shapes default to its own pipeline's), and the options checked,
    before anything slow."""
    from snapbench.converters.checks import require_prediction
    from snapbench.converters.entry import ConvertRequest
    from snapbench.converters.options import ConvertOptions
    from snapbench.dit.source import is_dit_ref
    from snapbench.model.loading import DEFAULT_LATENT

    if (vae_encoder or compile_ or drop_text_encoders) and part != "pipeline":
        raise SnapbenchError("--vae-encoder, --compile and --drop-text-encoder go with --pipeline")
    if recipe is not None and (part not in ("blocks", "unet", "pipeline") or is_dit_ref(model)):
        raise SnapbenchError("--recipe palettizes a UNet's layers: use it with per-block conversion, --whole or "
                             "--pipeline, not with --component text_encoder / vae_decoder or a DiT")
    if is_dit_ref(model) and part in ("blocks", "unet", "pipeline"):
        from snapbench.commands.dit_commands import dit_options

        source, opts = dit_options(model, latent=latent, batch=batch, tokens=tokens, **options)
    else:
        opts = ConvertOptions(latent=latent or DEFAULT_LATENT, batch=batch, tokens=tokens, **options)  # checked first
        # the text encoder's and the VAE's --weights are their own folders, not a UNet's
        source = model_source(model, None if part in ("text_encoder", "vae_decoder") else weights, variant,
                              subfolder, revision)
        if latent is None and part != "text_encoder":  # the model's own size (the text encoder has none)
            opts = replace(opts, latent=resolved_latent(source, None))
        if recipe is not None:  # checked against the model before anything is written
            from snapbench.converters.mixed_bit import load_recipe

            opts = replace(opts, mode="deploy", recipe=load_recipe(recipe, source).items())
    if opts.check:
        require_prediction()  # before anything slow
    return ConvertRequest(source, out_dir, opts, part, Path(weights) if weights is not None else None,
                          vae_encoder=vae_encoder, compile=compile_, drop_text_encoders=drop_text_encoders,
                          progress=not as_json or err.is_terminal,
                          say=messages(as_json))


def _convert_network(model: str, input_shape: str | None, out_dir: str, *, weight_bits: int, attention: str,
                     as_json: bool) -> None:
    """A timm: / torchvision: / open_clip: / hf: / synthetic: network: one whole package under --out."""
    from snapbench.zoo.programs import network_package
    from snapbench.zoo.specs import parse_model_spec, refuse_unet_only

    refuse_unet_only(model, attention=attention)
    spec = parse_model_spec(model)
    dest = network_package(spec, input_shape, Path(out_dir) / f"{spec.slug()}.mlpackage", weight_bits=weight_bits)
    if as_json:
        print_json({"model": spec.text, "input": input_shape, "weight_bits": weight_bits, "package": str(dest)})
    else:
        out.print(f"{spec.text}: {dest}")


def report(result: ConvertResult, out_dir: str, as_json: bool) -> None:
    """The result on stdout (table or JSON); failed blocks on stderr and exit 1 (the others are kept)."""
    if as_json:
        print_json(result.to_dict())
    else:
        render(result, out_dir)
    if result.failed:
        for block, error in result.failed:
            err.print(f"failed: {block}: {error}", markup=False, highlight=False)
        err.print(f"{len(result.failed)} failed; the others are done. Run the same command again to retry them.")
        raise typer.Exit(1)


def render(result: ConvertResult, out_dir: str) -> None:
    m = result.manifest
    converted, reused = set(result.converted), set(result.reused)
    t = Table(title=f"{m.spec}: {m.content} -> {out_dir}", title_justify="left", show_edge=False)
    for col, just in (("stage", "left"), ("block", "left"), ("status", "left"), ("package", "left"),
                      ("this run", "left"), ("seconds", "right"), ("MB", "right")):
        t.add_column(col, justify="right" if just == "right" else "left")
    for b in m.blocks:
        if b.id in converted or (b.package_owner == b.file_id and b.id in converted):
            run = "converted"
        elif b.package_owner and b.package_owner != b.file_id and b.state == "done":
            run = f"shares {b.package_owner}"
        elif b.id in reused:
            run = "cached"
        else:
            run = {"no_compute": "no compute", "failed": "FAILED"}.get(b.state, b.state)
        t.add_row(b.stage, b.id, b.status, b.package or "-", run,
                  f"{b.seconds:.1f}" if b.seconds is not None else "",
                  f"{b.bytes / 1e6:.1f}" if b.bytes else "",
                  style="red" if b.state == "failed" else ("dim" if b.state == "no_compute" else None))
    out.print(t)
    packages = len({b.package for b in m.blocks if b.package})
    out.print(f"{packages} packages for {len(m.blocks)} blocks: {len(result.converted)} converted, "
              f"{len(reused)} blocks from the cache, {len(result.failed)} failed; manifest: {out_dir}/manifest.json")


def register(app: typer.Typer) -> None:
    app.command("convert")(convert_command)
