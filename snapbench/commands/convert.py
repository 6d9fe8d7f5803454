"""`snapbench convert`: Core ML packages per block (or whole UNet / pipeline part) + manifest.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.table import Table

from snapbench.interrupts import on_interrupt_keep
from snapbench.commands.common import (
    BatchOpt, JsonOpt, LatentOpt, ModelOpt, RevisionOpt, SubfolderOpt, TokensOpt, VariantOpt, WeightsOpt, err,
    model_source, out, print_json, resolved_latent,
)

if TYPE_CHECKING:
    from snapbench.converters.convert_blocks import ConvertResult


def convert_command(
    model: str = ModelOpt,
    weights: Optional[str] = WeightsOpt,
    variant: Optional[str] = VariantOpt,
    subfolder: Optional[str] = SubfolderOpt,
    revision: Optional[str] = RevisionOpt,
    out_dir: str = typer.Option(..., "--out", "-o", help="Folder for the packages and manifest.json (new, or one of ours)."),
    mode: str = typer.Option("profile", "--mode", help="profile: one package per block signature; deploy: one per block, real weights."),
    attention: str = typer.Option("original", "--attention", help="original | split_einsum | split_einsum_v2 (Neural-Engine rewrites)."),
    weight_bits: int = typer.Option(16, "--weight-bits", help="16 | 8 (int8 linear) | 6 | 4 (palettized)."),
    target: str = typer.Option("iOS16", "--target", help="Minimum deployment target: iOS16 | iOS17 | iOS18."),
    precision: str = typer.Option("fp16", "--precision", help="Compute precision: fp16 | fp32."),
    latent: Optional[int] = LatentOpt,
    batch: int = BatchOpt,
    tokens: int = TokensOpt,
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Worker processes (default: the cores available)."),
    whole: bool = typer.Option(False, "--whole", help="Convert the whole UNet into one package."),
    chunks: int = typer.Option(1, "--chunks", help="With --whole: 2 splits the UNet in two packages (iOS)."),
    component: Optional[str] = typer.Option(None, "--component", help="A pipeline part: text_encoder | vae_decoder | unet."),
    check: bool = typer.Option(False, "--check", help="Run each package against PyTorch, PSNR >= 35 dB (macOS only)."),
    pipeline: bool = typer.Option(False, "--pipeline", help="The whole app pipeline for Apple's Swift StableDiffusion package: TextEncoder, Unet (or 2 chunks), VAEDecoder, tokenizer."),
    vae_encoder: bool = typer.Option(False, "--vae-encoder", help="With --pipeline: also VAEEncoder (image-to-image)."),
    compile_: bool = typer.Option(False, "--compile", help="With --pipeline: also write the .mlmodelc folders (macOS only)."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="Input shape of a timm:/torchvision:/open_clip:/"
                                              "hf:/synthetic: network (converted whole, one package)."),
    as_json: bool = JsonOpt,
) -> None:
    """Convert a UNet into Core ML packages, one per block (default), whole, or a pipeline part."""
    from snapbench.zoo.specs import is_network_spec

    if is_network_spec(model):  # any network: one whole package under --out
        from pathlib import Path as _Path

        from snapbench.zoo.programs import network_package
        from snapbench.zoo.specs import parse_model_spec, refuse_unet_only

        refuse_unet_only(model, attention=attention)
        spec = parse_model_spec(model)
        dest = network_package(spec, input_shape, _Path(out_dir) / f"{spec.slug()}.mlpackage", weight_bits=weight_bits)
        if as_json:
            print_json({"model": spec.text, "input": input_shape, "weight_bits": weight_bits, "package": str(dest)})
        else:
            out.print(f"{spec.text}: {dest}")
        return
    from snapbench.locks import refuse_if_locked

    refuse_if_locked(out_dir, "convert")  # in a second, not after the model is built and cut
    from snapbench.dit.source import is_dit_ref

    if is_dit_ref(model) and not (whole or pipeline or component is not None):
        from snapbench.commands import dit_commands

        dit_result = dit_commands.convert(model, out_dir, as_json=as_json, latent=latent, batch=batch, tokens=tokens,
                                          mode=mode, attention=attention, weight_bits=weight_bits, target=target,
                                          precision=precision, check=check)
        report(dit_result, out_dir, as_json)
        return
    from snapbench.converters.options import ConvertOptions
    from snapbench.errors import SnapbenchError

    from dataclasses import replace

    from snapbench.model.loading import DEFAULT_LATENT

    opts = ConvertOptions(mode=mode, attention=attention, weight_bits=weight_bits, target=target,
                          precision=precision, latent=latent or DEFAULT_LATENT, batch=batch, tokens=tokens,
                          jobs=jobs, check=check, chunks=chunks)
    if pipeline and (whole or component is not None):
        raise SnapbenchError("--pipeline converts every part; it cannot be combined with --whole or --component")
    if (vae_encoder or compile_) and not pipeline:
        raise SnapbenchError("--vae-encoder and --compile go with --pipeline")
    if whole and component not in (None, "unet"):
        raise SnapbenchError(f"--whole converts the UNet; it cannot be combined with --component {component}")
    if chunks != 1 and not (whole or pipeline or component == "unet"):
        raise SnapbenchError("--chunks needs --pipeline, --whole or --component unet")
    if opts.check:
        from snapbench.converters.checks import require_prediction

        require_prediction()  # before anything slow
    on_interrupt_keep(f"every finished package and manifest.json in {out_dir}")
    progress = not as_json or err.is_terminal
    model = model_source(model, weights, variant, subfolder, revision)
    if latent is None and component != "text_encoder":  # the model's own size (the text encoder has none)
        opts = replace(opts, latent=resolved_latent(model, weights, None))
    result: ConvertResult  # or its subclass PipelineResult
    if pipeline:
        from snapbench.converters.pipeline import convert_pipeline

        result = convert_pipeline(model, out_dir, opts, weights=weights, vae_encoder=vae_encoder, compile=compile_,
                                  progress=progress)
    elif whole or component is not None:
        from snapbench.converters.components import convert_component

        result = convert_component(component or "unet", out_dir, opts, model=model, weights=weights,
                                   progress=progress)
    else:
        from snapbench.converters.convert_blocks import convert_model

        result = convert_model(model, out_dir, opts, weights=weights, progress=progress)
    report(result, out_dir, as_json)
    for note in getattr(result, "notes", []):
        err.print(f"note: {note}", markup=False, highlight=False)
    missing = getattr(result, "missing", None)
    if missing:
        # bad input, but everything that was there is converted and kept
        raise SnapbenchError(f"{model if weights is None else weights}: missing {'; '.join(missing)}; "
                             f"converted the rest into {out_dir}")


def report(result: Any, out_dir: str, as_json: bool) -> None:
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


def render(result, out_dir: str) -> None:
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
