"""`convert --pipeline`: a whole Stable-Diffusion pipeline, ready for Apple's Swift `StableDiffusion` package.

    from snapbench.converters.entry import ConvertRequest, convert
    result = convert(ConvertRequest(resolve_model("sd15"), Path("build/sd15-app"),
                                    ConvertOptions(attention="split_einsum_v2", chunks=2), "pipeline"))

One folder: TextEncoder [/ TextEncoder2: SDXL-class UNets] / Unet (or UnetChunk1 + UnetChunk2) / VAEDecoder
[/ VAEEncoder] .mlpackage, the tokenizer files, manifest.json. Parts are converted one after another in this process, each built with
only its own weights and freed before the next, so the peak is one part (one UNet chunk), not the model.
Each package has a cache key (its weights fingerprint, interface, options, tool versions); a package whose
key is already in the folder is kept, so a re-run converts only what changed and a killed run resumes.
"""

from __future__ import annotations

import gc
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from snapbench.converters.app_parts import (
    TOKENIZER_FILES,
    AppPart,
    ModelFolder,
    check_tokenizer,
    model_folder,
    text_encoder_part,
    vae_decoder_part,
    vae_encoder_part,
    xl_text_encoder_parts,
)
from snapbench.converters.cache import cache_key, source_fingerprint
from snapbench.converters.checks import require_prediction
from snapbench.converters.compression import compression_info
from snapbench.converters.convert_blocks import _stamped_key, cut, weight_files
from snapbench.converters.convert_package import (
    convert_module,
    is_complete_package,
    package_bytes,
    package_files,
    package_scratch,
    remove_tree,
)
from snapbench.converters.manifest import Manifest, ManifestBlock, claimed, inspect_out_dir, remove_orphans
from snapbench.converters.options import ConvertOptions
from snapbench.converters.result import ConvertResult
from snapbench.converters.runtime import one_torch_thread, release_freed_memory
from snapbench.converters.swift_interface import XL_FAMILY, family_for, with_swift_dtypes
from snapbench.errors import SnapbenchError, first_line
from snapbench.model.loading import ModelSource
from snapbench.versions import tool_versions

CONTENT = "pipeline"
# Bytes per weight in a package, by --weight-bits (16: fp16, or fp32 with --precision fp32)
_BYTES_PER_WEIGHT = {16: 2.0, 8: 1.0, 6: 0.75, 4: 0.5}
DISK_MARGIN = 1.15  # model.mil, metadata and palettes on top of the weights, and rounding
# coremltools passes that change nothing in a UNet chunk with ANE attention (1x1 convs on (B, C, 1, S),
# one key transpose per attention, which no pass can cancel): skipped for those parts, ~2 s a chunk.
# SD-v1.5's two chunks convert to byte-identical packages with and without (checked once by hand, and
# for the tiny UNet by a test); not skipped for diffusers' own attention, whose transposes it does fold.
UNET_SKIPPED_PASSES = ("common::reduce_transposes",)
BACKBONE_KINDS = ("unet", "transformer")  # the denoising network's part: a UNet (or chunk), or a DiT


def is_dit(source: ModelSource) -> bool:
    from snapbench.backbones import DitBackbone, backbone_for

    return backbone_for(source).name == DitBackbone.name


# -- the parts ----------------------------------------------------------------------------------------------


def unet_parts(source: ModelSource, opts: ConvertOptions) -> list[AppPart]:
    from snapbench.converters.convert_package import example_inputs
    from snapbench.converters.unet_chunks import at_batch_one, build_chunk, chunk_identity, plan_chunks, trace_scale
    from snapbench.converters.whole_unet import added_inputs

    meta, blocks = cut(source, opts)
    cfg = meta.config
    ctx = cfg.cross_attention_dim[0] if isinstance(cfg.cross_attention_dim, (list, tuple)) else cfg.cross_attention_dim
    closes = meta.closes_skip
    sample = (opts.batch, cfg.in_channels, opts.latent, opts.latent)
    plans = plan_chunks(blocks, closes, opts.chunks, batch=opts.batch, sample=sample, context_dim=int(ctx),
                        tokens=opts.tokens, added=added_inputs(cfg, opts.batch))
    family = family_for(source.spec.base_config)
    versions = tool_versions()
    weights = source_fingerprint(source.spec.to_dict(), weight_files(source), opts.seed, versions["torch"])
    read = {"read": unet_weights_read(source)} if source.weights_dir is not None else {}
    parts = []
    for plan in plans:
        def build(plan=plan):
            built = build_chunk(meta, blocks, closes, plan, source, opts.attention, opts.seed, recipe=opts.recipe)
            return built.module, built.psnr_db

        def inputs(plan=plan):  # traced at batch 1 and 8 x 8: every op keeps those sizes symbolic (tests)
            scale = trace_scale(blocks, plan, opts.latent, opts.attention)
            return example_inputs(at_batch_one(plan.io, scale), seed=opts.seed)

        what = "UNet" if plan.index == 0 else f"UNet chunk {plan.index} of 2"
        parts.append(AppPart(
            plan.name, "unet", f"{what} of {source.spec.name}", with_swift_dtypes(plan.io, plan.name, family),
            {"spec": source.spec.to_dict(), "weights": weights, "attention": opts.attention,
             **chunk_identity(blocks, plan), **read},
            sum(b.params for b in blocks[plan.start:plan.end]), build, inputs))
    return parts


def unet_weights_read(source: ModelSource) -> str:
    """The UNet's weights files as a note names them: unet/diffusion_pytorch_model.fp16.safetensors (...)."""
    from snapbench.model.loading import _weight_files

    assert source.weights_dir is not None
    files = [f"{source.weights_dir.name}/{f.name}" for f in _weight_files(source.weights_dir, source.variant)]
    return ", ".join(files) + (f" ({source.variant} variant)" if source.variant else "")


def weights_note(parts: list[AppPart]) -> str | None:
    """Which file each part's weights come from, when a checkpoint folder was read: published pipelines ship
    plain and fp16 files side by side, or fp16 only, and the user should see which one went in."""
    read: dict[str, list[str]] = {}
    for p in parts:
        if "read" in p.identity:
            read.setdefault(str(p.identity["read"]), []).append(p.name)
    if not read:
        return None
    return "weights read: " + "; ".join(f"{' + '.join(names)} from {files}" for files, names in read.items())


def plan_parts(source: ModelSource, opts: ConvertOptions, folder: ModelFolder, *, vae_encoder: bool) -> list[AppPart]:
    family = family_for(source.spec.base_config)
    parts: list[AppPart] = []
    if family == XL_FAMILY:  # Apple's SDXL layout: TextEncoder + TextEncoder2, the Unet's text_embeds / time_ids
        parts += xl_text_encoder_parts(source, opts, folder)
    elif folder.root is None or folder.text_encoder is not None:
        parts.append(text_encoder_part(source, opts, folder))
    parts += unet_parts(source, opts)
    if folder.root is None or folder.vae is not None:
        parts.append(vae_decoder_part(source, opts, folder, family))
        if vae_encoder:
            parts.append(vae_encoder_part(source, opts, folder, family))
    return parts


# -- up-front checks ------------------------------------------------------------------------------------


def estimated_bytes(part: AppPart, opts: ConvertOptions) -> int:
    per_weight = 4.0 if opts.precision == "fp32" and opts.weight_bits == 16 else _BYTES_PER_WEIGHT[opts.weight_bits]
    return int(part.params * per_weight * DISK_MARGIN) + (1 << 20)


def _existing(path: Path) -> Path:
    p = path.resolve()
    while not p.exists():
        p = p.parent
    return p


def check_disk(folder: Path, todo: list[AppPart], opts: ConvertOptions) -> None:
    """Refuse up front when the output's disk is too small for the packages and, while the largest part is
    made, coremltools' temporary copy of its fp16 weights (convert_package.package_scratch puts that beside
    the output, not in the system's temporary folder)."""
    if not todo:
        return
    largest = max(int(p.params * 2 * DISK_MARGIN) for p in todo)
    need = sum(estimated_bytes(p, opts) for p in todo) + largest
    out_fs = _existing(folder)
    free = shutil.disk_usage(out_fs).free
    if free < need:
        raise SnapbenchError(f"{out_fs}: {free / 1e9:.2f} GB free, the packages (and the largest one's temporary "
                             f"copy while it is made) need about {need / 1e9:.2f} GB; free some space or choose "
                             "another --out")


def require_compile() -> None:
    if sys.platform != "darwin":
        raise SnapbenchError(f"--compile needs macOS: compiling .mlpackage to .mlmodelc uses Core ML's compiler, "
                             f"which exists only on macOS (this is {sys.platform}); convert here without "
                             "--compile, then compile on a Mac or let Xcode do it")


# -- the run --------------------------------------------------------------------------------------------


def _entry(part: AppPart, key: str, state: str, *, package: str | None = None, seconds: float | None = None,
           bytes: int | None = None, ane_psnr_db: float | None = None, files: dict[str, int] | None = None,
           timings: dict[str, float] | None = None) -> ManifestBlock:
    d = part.io.to_dict()
    read = part.identity.get("read")
    return ManifestBlock(
        id=part.name, file_id=part.name, stage="-", kind=part.kind, status="kept", module="", signature=None,
        signature_digest=None, package=package, inputs=d["inputs"], outputs=d["outputs"],
        params=part.params, macs=0, macs_no_attention=0, state=state, cache_key=key,
        weights_hash=str(part.identity.get("weights")), weights_read=None if read is None else str(read),
        seconds=seconds, bytes=bytes, ane_psnr_db=ane_psnr_db, files=files, timings=timings)


def skipped_passes(part: AppPart, opts: ConvertOptions) -> tuple[str, ...]:
    return UNET_SKIPPED_PASSES if part.kind == "unet" and opts.attention != "original" else ()


def _convert_part(part: AppPart, dest: Path, key: str, opts: ConvertOptions, source: ModelSource,
                  versions: dict[str, str]) -> tuple[float, int, dict[str, float], dict[str, float]]:
    with one_torch_thread():
        return _convert_part_now(part, dest, key, opts, source, versions)


def _convert_part_now(part: AppPart, dest: Path, key: str, opts: ConvertOptions, source: ModelSource,
                      versions: dict[str, str]) -> tuple[float, int, dict[str, float], dict[str, float]]:
    start = time.perf_counter()
    module, db = part.build()
    built = time.perf_counter() - start
    metadata = {"block": part.name, "kind": part.kind, "mode": opts.mode, "model": source.ref,
                "spec": source.spec.name, "version": versions["snapbench"], "cache_key": key,
                "attention": opts.attention if part.kind in BACKBONE_KINDS else "-", "weight_bits": opts.weight_bits,
                "target": opts.target, "source_hash": part.identity.get("weights")}
    inputs = part.inputs() if part.inputs is not None else None
    from snapbench.converters.unet_chunks import UNetChunk
    from snapbench.converters.workers import frozen_heap

    # a mixed-bit recipe names UNet layers: the other parts stay fp16 (see convert_pipeline's note)
    recipe_bits = module.recipe_bits if isinstance(module, UNetChunk) else None
    try:
        with frozen_heap():  # the collections ct.convert runs skip the libraries' objects
            r = convert_module(module, part.io, opts, dest, metadata=metadata, description=part.title,
                               inputs=inputs, release=not opts.check, skip_passes=skipped_passes(part, opts),
                               recipe_bits=recipe_bits)
        if opts.check:
            from snapbench.converters.checks import check_prediction
            from snapbench.converters.convert_package import example_inputs

            # at the interface's own shapes (the trace inputs may be smaller); token ids must be valid ids
            feed = inputs if part.kind == "text_encoder" and inputs else example_inputs(part.io, seed=opts.seed)
            check_prediction(dest, _FirstOutput(module), feed, part.io)
    finally:
        del module
        gc.collect()  # the part's weights go before the next part is built: the peak is one part
        release_freed_memory()  # and glibc hands back what it kept of them (runtime.release_freed_memory)
    timings = {"build": round(built, 2), **{k: round(v, 2) for k, v in r.timings.items()}}
    return built + r.seconds, r.bytes, db, timings


def convert_part_cached(part: AppPart, folder: Path, opts: ConvertOptions, source: ModelSource) -> Path:
    """One app part as a package in `folder`, named by its cache key (what it is, its interface, the options,
    the tools): a complete package of that name is reused, so pricing the same part on another device, or in
    another report, converts nothing. Made and checked in a `.NAME.PID.partial` folder, then renamed: never
    half there; a killed run's folder is removed by the next conversion into the same folder."""
    from snapbench.converters.manifest import remove_stale_temporaries

    versions = tool_versions()
    key = cache_key({"part": part.name, "identity": part.identity, "io": part.io.to_dict()}, opts, versions)
    dest = folder / f"{part.name}-{key[:12]}.mlpackage"
    if is_complete_package(dest):
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)
    with package_scratch(dest) as work:  # coremltools' temporaries go with it too
        staged = work / dest.name
        _convert_part(part, staged, key, opts, source, versions)
        remove_tree(dest)
        staged.rename(dest)
    return dest


class _FirstOutput:
    """check_prediction compares one output: the first (last_hidden_state, the chunk's hidden state)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        out = self.module(*args)
        return out[0] if isinstance(out, tuple) else out


def convert_pipeline(source: ModelSource, out_dir: Path, opts: ConvertOptions = ConvertOptions(), *,
                     weights: Path | None = None, vae_encoder: bool = False, compile: bool = False,
                     progress: bool = True, drop_text_encoders: tuple[str, ...] = ()) -> ConvertResult:
    """The app's parts (`weights`: a pipeline folder for the text encoder, VAE and tokenizer; else the
    source's folder when it is one; `drop_text_encoders`: a DiT's text encoders to leave out, by key).
    Called through `converters.entry.convert`."""
    if compile:
        require_compile()
    if opts.check:
        require_prediction()
    # Packages people ship: real weights, k-means palettes for 6 / 4 bits (see compression.py)
    opts = replace(opts, mode="deploy")
    folder = Path(out_dir)
    sizes: list[str] = []
    if is_dit(source):
        if vae_encoder:
            raise SnapbenchError("--vae-encoder: a DiT pipeline has no VAE encoder package yet; leave it out")
        from snapbench.converters.dit_app import dit_parts

        parts_folder = ModelFolder(None, None, None, None)  # dit_parts reads a pipeline folder's parts itself
        parts, sizes = dit_parts(source, opts, weights=weights, drop=drop_text_encoders)
    else:
        if drop_text_encoders:
            raise SnapbenchError("--drop-text-encoder applies to DiT pipelines (SD3, PixArt-Sigma, Sana)")
        parts_folder = model_folder(source, weights, xl=family_for(source.spec.base_config) == XL_FAMILY)
        parts = plan_parts(source, opts, parts_folder, vae_encoder=vae_encoder)
    for te in parts:  # SDXL: one tokenizer serves both encoders (StableDiffusionXL+Resources.swift)
        if te.vocab is not None:
            check_tokenizer(parts_folder, te.vocab)
    versions = tool_versions()
    keys = {p.name: cache_key({"part": p.name, "identity": p.identity, "io": p.io.to_dict()}, opts, versions)
            for p in parts}
    previous = inspect_out_dir(folder, CONTENT, str(source.ref), source.spec.name)  # one model per folder
    old = {b.id: b for b in previous.blocks} if previous else {}

    def cached(p: AppPart) -> bool:
        dest = folder / f"{p.name}.mlpackage"
        o = old.get(p.name)
        if not is_complete_package(dest, o.files if o is not None else None):  # verified, not trusted
            return False
        if o is not None and o.state == "done" and o.cache_key == keys[p.name]:
            return True
        return _stamped_key(dest) == keys[p.name]  # finished after the last manifest write of a killed run

    reuse = {p.name for p in parts if cached(p)}
    check_disk(folder, [p for p in parts if p.name not in reuse], opts)

    manifest = Manifest(
        content=CONTENT, model=str(source.ref), spec=source.spec.name, options=opts.to_dict(), versions=versions,
        shapes={"latent": opts.latent, "batch": opts.batch, "tokens": opts.tokens},
        blocks=[_entry(p, keys[p.name], "pending") for p in parts], compression=compression_info(opts),
        source_fingerprint=str(next(p.identity["weights"] for p in parts if p.kind in BACKBONE_KINDS)),
        run_key=cache_key({"parts": keys}, opts, versions), created_at=previous.created_at if previous else "",
        folder=folder, missing=parts_folder.missing(),
    )
    result = ConvertResult(manifest, missing=parts_folder.missing())
    result.notes += sizes
    note = weights_note(parts)
    if note:
        result.notes.append(note)
    if opts.recipe:
        others = ", ".join(p.name for p in parts if p.kind not in BACKBONE_KINDS)
        result.notes.append(f"the recipe's bit widths went into the UNet's packages; {others}: fp16")
    if parts_folder.root is None and source.weights_dir is not None and not is_dit(source):
        others = ", ".join(p.name for p in parts if p.kind not in BACKBONE_KINDS)
        result.notes.append(f"{others}: seeded random weights (the UNet's folder is not a pipeline folder with "
                            "text_encoder/, vae/, tokenizer/)")
    index = {p.name: i for i, p in enumerate(parts)}
    from snapbench.converters.progress import reporter

    with claimed(folder):
        for p in parts:
            if p.name in reuse:
                o = old.get(p.name)
                manifest.blocks[index[p.name]] = _entry(
                    p, keys[p.name], "done", package=f"{p.name}.mlpackage", seconds=o.seconds if o else None,
                    bytes=package_bytes(folder / f"{p.name}.mlpackage"), ane_psnr_db=o.ane_psnr_db if o else None,
                    files=package_files(folder / f"{p.name}.mlpackage"))
                result.reused.append(p.name)
        manifest.write()
        _copy_tokenizer(parts_folder, folder)
        todo = [p for p in parts if p.name not in reuse]
        try:
            with reporter(len(todo), enabled=progress) as bar:
                for p in todo:
                    bar.start(p.name)
                    i = index[p.name]
                    try:
                        seconds, nbytes, db, timings = _convert_part(p, folder / f"{p.name}.mlpackage", keys[p.name], opts,
                                                            source, versions)
                    except Exception as e:  # noqa: BLE001 - one line per part; the other parts go on
                        msg = first_line(e)
                        error = msg if isinstance(e, SnapbenchError) else f"{type(e).__name__}: {msg}"
                        remove_tree(folder / f"{p.name}.mlpackage")
                        manifest.blocks[i] = replace(manifest.blocks[i], state="failed", error=error)
                        result.failed.append((p.name, error))
                    else:
                        manifest.blocks[i] = _entry(p, keys[p.name], "done", package=f"{p.name}.mlpackage",
                                                    seconds=round(seconds, 3), bytes=nbytes,
                                                    ane_psnr_db=round(min(db.values()), 2) if db else None,
                                                    timings=timings,
                                                    files=package_files(folder / f"{p.name}.mlpackage"))
                        result.converted.append(p.name)
                    manifest.write()
                    bar.done(p.name)
        finally:
            manifest.complete = all(b.state == "done" for b in manifest.blocks) and not manifest.missing
            manifest.write()
            remove_orphans(folder, previous, manifest)  # e.g. Unet after switching to --chunks 2
        if compile and not result.failed:
            result.compiled = compile_packages(folder, [p.name for p in parts])
    return result


def _copy_tokenizer(parts_folder: ModelFolder, folder: Path) -> None:
    from snapbench.atomic import atomic_write_bytes

    if parts_folder.tokenizer is None:
        return
    for name in TOKENIZER_FILES:
        src = parts_folder.tokenizer / name
        dest = folder / name
        if not dest.is_file() or dest.read_bytes() != src.read_bytes():
            atomic_write_bytes(dest, src.read_bytes())


def compile_packages(folder: Path, names: list[str]) -> list[str]:
    """The .mlmodelc folders Swift loads (macOS: Core ML's compiler); written beside the packages."""
    from snapbench.atomic import atomic_path
    from snapbench.converters.runtime import coremltools

    ct = coremltools()
    done = []
    for name in names:
        dest = folder / f"{name}.mlmodelc"
        with atomic_path(dest) as tmp:
            ct.models.utils.compile_model(str(folder / f"{name}.mlpackage"), str(tmp))
        done.append(dest.name)
    return done
