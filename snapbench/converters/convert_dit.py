"""`convert` for DiTs: one Core ML package per block signature (profile mode), with a manifest and resume.

1. Cut the DiT on the meta device (shapes, MACs, signatures; no weights).
2. Plan one package per signature: SD3 Medium's 28 blocks make 6 packages, Sana's 32 make 5. A package
   whose cache key is already in the folder (complete on disk) is reused.
3. Convert the rest one at a time in this process, biggest first: each block is materialised alone with
   seeded random weights (latency does not depend on weight values), converted, saved, and dropped, so
   the process never holds more than one block's weights.

Deploy mode (`--mode deploy`) makes one package per block with the model's own weights (a checkpoint
folder's, else the seeded random ones): it builds the whole model in memory first, so it refuses a model
whose fp32 weights would not fit in the memory available.

Transformer blocks take `opts.attention`: "original" converts diffusers' modules as they are; the
Neural Engine variants replace the block's attention (converters/dit_ane_attention.py).
"""

from __future__ import annotations

import copy
import gc
import zlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from snapbench.blocks.cut import CutBlock
from snapbench.converters.cache import cache_key, source_fingerprint, weights_hash
from snapbench.converters.convert_package import (
    convert_module,
    example_inputs,
    is_complete_package,
    package_files,
    remove_tree,
)
from snapbench.converters.manifest import Manifest, ManifestBlock, claimed, inspect_out_dir, remove_orphans
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.converters.result import ConvertResult
from snapbench.dit.cut import outputs_of
from snapbench.dit.units import DitUnit
from snapbench.errors import SnapbenchError, first_line
from snapbench.model.loading import ModelSource
from snapbench.settings import InputShapes
from snapbench.versions import tool_versions

Say = Callable[[str], None]


def shapes_of(opts: ConvertOptions) -> InputShapes:
    return InputShapes(latent=opts.latent, batch=opts.batch, tokens=opts.tokens)


def package_io(b: CutBlock) -> PackageIO:
    """Core ML refuses a name that is both an input and an output: a block's updated streams are `*_out`."""
    ins = {n for n, _ in b.inputs}
    return PackageIO(tuple(b.inputs), tuple((f"{n}_out" if n in ins else n, s) for n, s in outputs_of(b)))


def materialize(unit: DitUnit, seed: int) -> DitUnit:
    """A real-memory copy of one meta-device block with seeded random weights (N(0, 0.02), every tensor:
    constants such as positional tables too, so that no pass folds a zero away)."""
    block = copy.deepcopy(unit).to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(unit.file_id.encode()))
    with torch.no_grad():
        for t in [*block.parameters(), *block.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.02)
    return block.eval()


def check_memory(name: str, params: int, *, what: str = "--mode deploy builds the whole model",
                 instead: str = "use --mode profile (one block at a time)") -> None:
    """Deploy mode (and each pipeline part) holds a whole model in fp32: refuse before allocating what the
    machine cannot hold."""
    import psutil

    need, have = params * 4, psutil.virtual_memory().available
    if need > have:
        raise SnapbenchError(f"{name}: {what} ({need / 1e9:.1f} GB of fp32 weights) but {have / 1e9:.1f} GB is "
                             f"available; {instead}")


def block_module(unit: DitUnit, attention: str) -> torch.nn.Module:
    """What goes into the package: the block, with its attention rewritten for the Neural Engine if asked."""
    if unit.kind != "TB" or attention == "original":
        return unit
    from snapbench.converters.dit_ane_attention import rewrite_block

    return rewrite_block(unit, attention)


def _entry(b: CutBlock, state: str) -> ManifestBlock:
    io = package_io(b).to_dict()
    assert b.signature is not None
    return ManifestBlock(
        id=b.block_id, file_id=b.unit.file_id, stage=b.unit.slot.stage, kind=b.kind, status=b.unit.status,
        module=b.unit.module_path, signature=b.signature.key(), signature_digest=b.signature.digest(),
        package=None, inputs=io["inputs"], outputs=io["outputs"], params=b.params, macs=b.macs,
        macs_no_attention=b.macs - b.attention_macs, state=state)


def convert_dit(source: ModelSource, out_dir: Path, opts: ConvertOptions, *,
                say: Say | None = None) -> ConvertResult:
    folder = Path(out_dir)
    from snapbench.backbones.dit import DitBackbone

    if opts.attention != "original" and "attention_variant" in source.spec.notes:
        raise SnapbenchError(f"{source.spec.name} has an attention_variant, which computes its own attention; "
                             "convert it with --attention original")
    backbone = DitBackbone()
    meta = backbone.build(source, device="meta")
    # removed blocks (an evolved DiT) run nothing: no package
    blocks = [b for b in backbone.cut(meta, shapes_of(opts), precision=opts.precision, attention=opts.attention)
              if b.signature is not None]
    versions = tool_versions()
    previous = inspect_out_dir(folder, "blocks", str(source.ref), source.spec.name)
    weights = sorted(source.weights_dir.glob("*.safetensors")) if source.weights_dir is not None else []
    fingerprint = source_fingerprint(source.spec.to_dict(), weights, opts.seed, versions["torch"])

    real_units: dict[str, DitUnit] = {}
    hashes: dict[str, str] = {}
    if opts.mode == "deploy":
        check_memory(source.spec.name, sum(b.params for b in blocks))
        real = backbone.build(source, device="cpu", seed=opts.seed)
        real_units = {u.file_id: u for u in real.units}
        hashes = {fid: weights_hash(u) for fid, u in real_units.items()}
    plan: dict[str, list[CutBlock]] = {}
    for b in blocks:
        assert b.signature is not None
        what = {"signature": b.signature.key()}
        if opts.mode == "deploy":  # one package per block: its own weights
            what.update(block=b.unit.file_id, weights=hashes[b.unit.file_id])
        plan.setdefault(cache_key(what, opts, versions), []).append(b)
    manifest = Manifest(
        content="blocks", model=str(source.ref), spec=source.spec.name, options=opts.to_dict(), versions=versions,
        shapes={"latent": opts.latent, "batch": opts.batch, "tokens": opts.tokens, "backbone": "dit"},
        blocks=[_entry(b, "pending") for b in blocks], source_fingerprint=fingerprint,
        created_at=previous.created_at if previous else "", folder=folder)
    index = {b.unit.file_id: i for i, b in enumerate(blocks)}
    old = {e.cache_key: e for e in previous.blocks if e.package and e.state == "done"} if previous else {}
    result = ConvertResult(manifest)

    def land(key: str, group: list[CutBlock], package: str, seconds: float | None, nbytes: int | None) -> None:
        files = package_files(folder / package)
        for b in group:
            i = index[b.unit.file_id]
            manifest.blocks[i] = replace(manifest.blocks[i], package=package, state="done", cache_key=key,
                                         package_owner=group[0].unit.file_id, files=files,
                                         seconds=seconds if b is group[0] else None,
                                         bytes=nbytes if b is group[0] else None)

    meta_units = {u.file_id: u for u in meta.units}
    with claimed(folder):
        todo = []
        for key, group in plan.items():
            prior = old.get(key)
            if prior is not None and prior.package and is_complete_package(folder / prior.package, prior.files):
                land(key, group, prior.package, prior.seconds, prior.bytes)
                result.reused += [b.block_id for b in group]
            else:
                todo.append((key, group))
        manifest.write()
        try:
            for key, group in sorted(todo, key=lambda kg: -kg[1][0].macs):
                owner = group[0]
                name = f"{owner.unit.file_id}.mlpackage"
                if say:
                    say(f"converting {owner.block_id}" + (f" (shared by {len(group)} blocks)" if len(group) > 1 else ""))
                try:
                    unit = (real_units[owner.unit.file_id] if opts.mode == "deploy"
                            else materialize(meta_units[owner.unit.file_id], opts.seed))
                    module = block_module(unit, opts.attention)
                    io = package_io(owner)
                    assert owner.signature is not None
                    metadata = {"block": owner.block_id, "blocks": ",".join(b.unit.file_id for b in group),
                                "stage": owner.unit.slot.stage, "signature": owner.signature.key(),
                                "signature_digest": owner.signature.digest(), "mode": opts.mode,
                                "model": source.ref, "spec": source.spec.name, "cache_key": key,
                                "attention": opts.attention if owner.kind == "TB" else "-",
                                "weight_bits": opts.weight_bits, "target": opts.target,
                                "source_hash": hashes.get(owner.unit.file_id, f"random weights (seed {opts.seed})")}
                    res = convert_module(module, io, opts, folder / name, metadata=metadata,
                                         description=f"snapbench {opts.mode} package of {source.spec.name}: "
                                                     f"{owner.block_id}",
                                         inputs=example_inputs(io, seed=opts.seed))
                    land(key, group, name, round(res.seconds, 3), res.bytes)
                    result.converted.append(owner.block_id)
                except SnapbenchError:
                    raise
                except Exception as e:  # noqa: BLE001 - recorded per package; the others go on
                    remove_tree(folder / name)
                    for b in group:
                        i = index[b.unit.file_id]
                        manifest.blocks[i] = replace(manifest.blocks[i], state="failed",
                                                     error=f"{type(e).__name__}: {first_line(e)}")
                        result.failed.append((b.block_id, f"{type(e).__name__}: {first_line(e)}"))
                finally:
                    unit = module = None  # type: ignore[assignment]
                    gc.collect()
                manifest.write()
        finally:
            manifest.complete = all(b.state == "done" for b in manifest.blocks)
            manifest.write()
            remove_orphans(folder, previous, manifest)
    return result
