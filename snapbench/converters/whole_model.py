"""Converting one whole model (UNet, text encoder, VAE decoder) into a folder: cache, manifest, chunks.

The model-specific parts (which module, which inputs) live in whole_unet.py and components.py; this
module only knows "one module -> one package (or two chunks) + manifest.json".
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from snapbench.converters.cache import cache_key
from snapbench.converters.checks import check_reloaded, require_prediction
from snapbench.converters.compression import compression_info
from snapbench.converters.convert_blocks import _up_to_date
from snapbench.converters.convert_package import (
    PackageIO,
    convert_module,
    is_complete_package,
    package_bytes,
    package_files,
    package_scratch,
    remove_tree,
)
from snapbench.converters.manifest import Manifest, ManifestBlock, claimed, inspect_out_dir
from snapbench.converters.options import ConvertOptions
from snapbench.converters.result import ConvertResult
from snapbench.converters.runtime import coremltools
from snapbench.errors import first_line
from snapbench.versions import tool_versions


@dataclass(frozen=True)
class SingleModel:
    """What to convert: a name, the interface, and how to build the module (called only on a cache miss)."""

    name: str  # unet | text_encoder | vae_decoder
    title: str  # for people: "UNet of sd15", "CLIP ViT-L/14 text encoder"
    model: str  # the --model it came from
    spec: str
    io: PackageIO
    build: Callable[[], torch.nn.Module]
    identity: Mapping[str, object]  # config + weights fingerprint: what the cache key hashes
    params: int = 0
    macs: int = 0
    macs_no_attention: int = 0
    # with a mixed-bit recipe: {weight fingerprint: (bits, layer)} of the module `build` made last
    # (mixed_bit.package_bits, read before attention rewrites change the module); None: no recipe
    recipe_bits: Callable[[], Mapping[str, tuple[int, str]]] | None = None


def convert_single(what: SingleModel, out_dir: str | os.PathLike, opts: ConvertOptions, *,
                   progress: bool = True) -> ConvertResult:
    if opts.check:
        require_prediction()
    folder = Path(out_dir)
    versions = tool_versions()
    key = cache_key({"component": what.name, **dict(what.identity), "io": what.io.to_dict(),
                     "attention": opts.attention, "chunks": opts.chunks}, opts, versions)
    previous = inspect_out_dir(folder, what.name, what.model, what.spec)
    if previous is not None and _up_to_date(previous, key, folder):
        return ConvertResult(previous, reused=[b.id for b in previous.blocks])

    manifest = Manifest(
        content=what.name, model=what.model, spec=what.spec, options=opts.to_dict(), versions=versions,
        shapes={"latent": opts.latent, "batch": opts.batch, "tokens": opts.tokens}, blocks=[],
        compression=compression_info(opts), source_fingerprint=str(what.identity.get("weights")), run_key=key,
        created_at=previous.created_at if previous else "", folder=folder,
    )
    result = ConvertResult(manifest)
    metadata = {"block": what.name, "mode": opts.mode, "model": what.model, "spec": what.spec,
                "version": versions["snapbench"], "cache_key": key, "attention": opts.attention,
                "weight_bits": opts.weight_bits, "target": opts.target,
                "source_hash": what.identity.get("weights")}
    from snapbench.converters.progress import reporter

    with claimed(folder):
        manifest.write()
        # the whole package, its two chunks, and coremltools' temporaries (ct.convert's, bisect_model's)
        with package_scratch(folder / what.name) as scratch:
            with reporter(1, enabled=progress) as bar:
                bar.start(what.title)
                try:
                    module = what.build()
                    whole = scratch / f"{what.name}.mlpackage"
                    bits = what.recipe_bits() if what.recipe_bits is not None else None
                    r = convert_module(module, what.io, opts, whole, metadata=metadata, description=what.title,
                                       recipe_bits=bits)
                    del module
                    pieces = _bisect(whole, scratch) if opts.chunks == 2 else [(whole, r.io)]
                except Exception as e:  # noqa: BLE001 - one line for the user, the folder stays consistent
                    result.failed.append((what.name, f"{type(e).__name__}: {first_line(e)}"))
                    pieces = []
                    r = None
                bar.done(what.title)
            for i, (path, io) in enumerate(pieces, 1):
                name = path.name
                remove_tree(folder / name)
                os.replace(path, folder / name)
                chunk = f" chunk {i}" if len(pieces) > 1 else ""
                d = io.to_dict()
                manifest.blocks.append(ManifestBlock(
                    id=f"{what.name}{chunk}", file_id=Path(name).stem, stage="-", kind=what.name, status="kept",
                    module="", signature=None, signature_digest=None, package=name, inputs=d["inputs"],
                    outputs=d["outputs"], params=what.params if not chunk else 0,
                    macs=what.macs if not chunk else 0,
                    macs_no_attention=what.macs_no_attention if not chunk else 0, state="done",
                    weights_hash=str(what.identity.get("weights")), cache_key=key,
                    seconds=round(r.seconds, 3) if r else None, bytes=package_bytes(folder / name),
                    files=package_files(folder / name)))
                result.converted.append(manifest.blocks[-1].id)
            manifest.complete = not result.failed
            manifest.write()
            if previous is not None:
                used = {b.package for b in manifest.blocks}
                for b in previous.blocks:
                    if b.package and b.package not in used and "/" not in b.package:
                        remove_tree(folder / b.package)
    return result


def _bisect(whole: Path, scratch: Path) -> list[tuple[Path, PackageIO]]:
    """Two packages of about equal weight size, the way ml-stable-diffusion ships the UNet on iOS.

    Output correctness is not compared here: that needs Core ML prediction (macOS); each chunk is
    reloaded from disk and its interface recorded instead.
    """
    ct = coremltools()
    chunks_dir = scratch / "chunks"
    chunks_dir.mkdir()
    from snapbench.converters.runtime import conversion_context

    with conversion_context():
        ct.models.utils.bisect_model(str(whole), str(chunks_dir), merge_chunks_to_pipeline=False,
                                     check_output_correctness=False)
    remove_tree(whole)
    out = []
    stem = whole.stem
    for i in (1, 2):
        path = chunks_dir / f"{stem}_chunk{i}.mlpackage"
        if not is_complete_package(path):
            raise RuntimeError(f"bisect_model did not write {path.name}")
        out.append((path, _read_io(path)))
    return out


def _read_io(path: Path) -> PackageIO:
    spec = coremltools().utils.load_spec(str(path))
    ins = tuple((i.name, tuple(int(d) for d in i.type.multiArrayType.shape)) for i in spec.description.input)
    outs = tuple((o.name, tuple(int(d) for d in o.type.multiArrayType.shape) or None) for o in spec.description.output)
    io = PackageIO(ins, outs)
    check_reloaded(path, io)
    return io
