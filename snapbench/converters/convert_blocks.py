"""`convert_model`: every block of a UNet to its own Core ML package, with a manifest, a cache and resume.

1. Cut the model on the meta device (shapes, MACs, signatures; no weights, a second for SD-v1.5).
2. Plan: one package per signature (profile mode) or per block (deploy mode); a package whose cache key
   is already in the folder is reused, not converted.
3. Convert the rest, biggest first, in worker processes (`jobs`), writing the manifest as each lands.
4. Blocks that fail are recorded with their error; the others go on.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from snapbench.backbones import backbone_for
from snapbench.blocks.cut import CutBlock, InputShapes
from snapbench.blocks.signature import Signature
from snapbench.converters import workers
from snapbench.converters.cache import cache_key, source_fingerprint, weights_hash
from snapbench.converters.checks import require_prediction
from snapbench.converters.compression import compression_info
from snapbench.converters.convert_package import is_complete_package, package_files, remove_tree
from snapbench.converters.manifest import Manifest, ManifestBlock, claimed, inspect_out_dir, remove_orphans
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.converters.progress import reporter
from snapbench.converters.result import ConvertResult
from snapbench.interrupts import stop_pool
from snapbench.model.loading import ModelSource
from snapbench.versions import tool_versions

# Below this much work (test-sized models) a pool's start-up (each worker imports torch, diffusers and
# coremltools) costs more than it saves; SD-v1.5 is about 800 GMACs.
SMALL_WORK_MACS = 10_000_000_000


# -- the model and its blocks ---------------------------------------------------------------------------


def build_checked(source: ModelSource, *, device: str, seed: int = 0):
    """The backbone's elastic model (the backbone names the model in any failure of its spec)."""
    return backbone_for(source).build(source, device=device, seed=seed)


def cut(source: ModelSource, opts: ConvertOptions) -> tuple[torch.nn.Module, list[CutBlock]]:
    meta = build_checked(source, device="meta")
    shapes = InputShapes(latent=opts.latent, batch=opts.batch, tokens=opts.tokens)
    return meta, backbone_for(source).cut(meta, shapes, precision=opts.precision, attention=opts.attention)


def weight_files(source: ModelSource) -> list[Path]:
    files: list[Path] = []
    if source.weights_dir is not None:
        files += sorted(p for p in source.weights_dir.iterdir() if p.suffix in (".safetensors", ".json"))
    files += [f for f in (source.copies_file, source.variants_file) if f is not None]
    return files


# -- planning -------------------------------------------------------------------------------------------


def _io(b: CutBlock) -> PackageIO:
    return PackageIO(tuple(b.inputs), (("out", tuple(b.output)),))


def _entry(b: CutBlock, state: str) -> ManifestBlock:
    io = _io(b).to_dict()
    return ManifestBlock(
        id=b.block_id, file_id=b.unit.file_id, stage=b.unit.slot.stage, kind=b.kind, status=b.unit.status,
        module=b.unit.slot.module_path, signature=b.signature.key() if b.signature else None,
        signature_digest=b.signature.digest() if b.signature else None, package=None,
        inputs=io["inputs"], outputs=io["outputs"], params=b.params, macs=b.macs,
        macs_no_attention=b.macs - b.attention_macs, state=state,
    )


@dataclass
class _Package:
    """One package to have: the blocks it serves and where it is (or will be)."""

    key: str
    owner: CutBlock
    signature: Signature  # the owner's: only blocks that run get a package
    blocks: list[CutBlock]
    name: str
    weights_hash: str | None = None
    reused_from: str | None = None  # relative path of a cached package


def _plan(blocks: list[CutBlock], opts: ConvertOptions, versions: dict[str, str],
          hashes: dict[str, str]) -> list[_Package]:
    packages: dict[str, _Package] = {}
    for b in blocks:
        sig = b.signature
        if sig is None:
            continue
        what: dict[str, object] = {"signature": sig.key()}
        if opts.mode == "deploy":
            what.update(block=b.unit.file_id, weights=hashes[b.unit.file_id])
        key = cache_key(what, opts, versions)
        if key in packages:
            packages[key].blocks.append(b)
        else:
            packages[key] = _Package(key, b, sig, [b], f"{b.unit.file_id}.mlpackage",
                                     hashes.get(b.unit.file_id) if opts.mode == "deploy" else None)
    return list(packages.values())


def _cached(previous: Manifest | None, folder: Path) -> dict[str, str]:
    """cache key -> relative package path, for packages of the previous run that are complete on disk."""
    if previous is None:
        return {}
    found = {}
    for b in previous.blocks:
        if b.state == "done" and b.package and b.cache_key and is_complete_package(folder / b.package, b.files):
            found[b.cache_key] = b.package
    return found


def _stamped_key(path: Path) -> str | None:
    """The cache key stamped inside a package (one finished after the last manifest write of a killed run)."""
    from snapbench.converters.runtime import coremltools

    try:
        spec = coremltools().utils.load_spec(str(path))
    except Exception:  # noqa: BLE001 - unreadable: convert again
        return None
    return dict(spec.description.metadata.userDefined).get("snapbench.cache_key")


# -- running --------------------------------------------------------------------------------------------


def _run_tasks(tasks: list[workers.BlockTask], source: ModelSource, opts: ConvertOptions,
               on_start: Callable[[str], None]) -> Iterator[workers.TaskResult]:
    if not tasks:
        return
    n = min(opts.workers, len(tasks))
    if opts.jobs is None and sum(t.macs for t in tasks) < SMALL_WORK_MACS:
        n = 1  # default jobs only: starting workers (seconds of imports each) would cost more than it saves
    if n <= 1:
        # In this process: no start-up cost, which is what tiny models and single packages want.
        workers.init_worker(source, opts)
        with workers.frozen_heap():
            for t in tasks:
                on_start(t.block_id)
                yield workers.run_task(t)
        return
    threads = max(1, opts.workers // n)
    # spawn, not fork: forking a process that has started torch's thread pools can deadlock
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=workers.init_worker,
                             initargs=(source, opts, threads)) as pool:
        pending: dict[Future, workers.BlockTask] = {}
        try:
            for t in tasks:
                pending[pool.submit(workers.run_task, t)] = t
                on_start(t.block_id)
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    t = pending.pop(f)
                    try:
                        yield f.result()
                    except Exception as e:  # noqa: BLE001 - a worker died (e.g. out of memory)
                        yield workers.TaskResult(t.file_id, None, error=f"worker process failed: {type(e).__name__}: {e}")
        except BaseException:
            stop_pool(pool)
            raise


def convert_model(source: ModelSource, out_dir: Path, opts: ConvertOptions = ConvertOptions(), *,
                  progress: bool = True) -> ConvertResult:
    """Convert every block of a UNet into `out_dir` (one .mlpackage per block or signature + manifest.json).
    Called through `converters.entry.convert` (the backbone's `convert_blocks`)."""
    if opts.check:
        require_prediction()
    folder = Path(out_dir)
    versions = tool_versions()
    fingerprint = source_fingerprint(source.spec.to_dict(), weight_files(source), opts.seed, versions["torch"])
    run_key = cache_key({"source": fingerprint, "attention": opts.attention, "latent": opts.latent,
                         "batch": opts.batch, "tokens": opts.tokens}, opts, versions)
    # refuses foreign folders, and another model's, before anything is written
    previous = inspect_out_dir(folder, "blocks", str(source.ref), source.spec.name)
    if previous is not None and _up_to_date(previous, run_key, folder):
        # Same model, options and tools as a complete previous run: nothing to cut, build or convert
        # (this is what keeps a warm re-run of SD-v1.5 to about the cost of importing torch).
        return ConvertResult(previous, reused=[b.id for b in previous.blocks if b.package])
    _, blocks = cut(source, opts)

    real = None
    hashes: dict[str, str] = {}
    if opts.mode == "deploy":
        if previous is not None and previous.source_fingerprint == fingerprint:
            hashes = {b.file_id: b.weights_hash for b in previous.blocks if b.weights_hash}
        if any(b.signature is not None and b.unit.file_id not in hashes for b in blocks):
            real = build_checked(source, device="cpu", seed=opts.seed)
            real_units = {u.file_id: u for u in real.units}
            hashes = {b.unit.file_id: weights_hash(real_units[b.unit.file_id]) for b in blocks if b.signature}

    plan = _plan(blocks, opts, versions, hashes)
    cached = _cached(previous, folder)
    recorded = {b.package: b.files for b in previous.blocks if b.package and b.files} if previous else {}
    for p in plan:
        if p.key in cached:
            p.reused_from = cached[p.key]
        elif is_complete_package(folder / p.name, recorded.get(p.name)) and _stamped_key(folder / p.name) == p.key:
            p.reused_from = p.name

    manifest = Manifest(
        content="blocks", model=str(source.ref), spec=source.spec.name, options=opts.to_dict(),
        versions=versions, shapes={"latent": opts.latent, "batch": opts.batch, "tokens": opts.tokens},
        blocks=[_entry(b, "pending" if b.signature else "no_compute") for b in blocks],
        compression=compression_info(opts), source_fingerprint=fingerprint, run_key=run_key,
        created_at=previous.created_at if previous else "", folder=folder,
    )
    index = {b.unit.file_id: i for i, b in enumerate(blocks)}
    result = ConvertResult(manifest)

    def land(p: _Package, package: str, seconds: float | None, nbytes: int | None, io: PackageIO | None,
             files: dict[str, int] | None) -> None:
        for b in p.blocks:
            e = manifest.blocks[index[b.unit.file_id]]
            io_d = io.to_dict() if io else {"inputs": e.inputs, "outputs": e.outputs}
            manifest.blocks[index[b.unit.file_id]] = replace(
                e, package=package, state="done", package_owner=p.owner.unit.file_id, cache_key=p.key,
                weights_hash=hashes.get(b.unit.file_id) if opts.mode == "deploy" else None,
                # a shared package's seconds and bytes belong to its owner: summed over blocks they count once
                seconds=seconds if b is p.owner else None, bytes=nbytes if b is p.owner else None,
                inputs=io_d["inputs"], outputs=io_d["outputs"], error=None, files=files)

    old_by_key = {b.cache_key: b for b in previous.blocks if b.package_owner in (None, b.file_id)} if previous else {}
    with claimed(folder):
        todo: list[_Package] = []
        for p in plan:
            if p.reused_from is None:
                todo.append(p)
                continue
            old = old_by_key.get(p.key)
            files = old.files if old is not None and old.package == p.reused_from else None
            land(p, p.reused_from, old.seconds if old else None, old.bytes if old else None, None,
                 files or package_files(folder / p.reused_from))
            result.reused += [b.block_id for b in p.blocks]
        manifest.write()

        real_units = {u.file_id: u for u in real.units} if real is not None else {}
        tasks = [_task(p, folder, source, opts, real_units) for p in sorted(todo, key=lambda p: -p.owner.macs)]
        by_owner = {p.owner.unit.file_id: p for p in todo}
        try:
            with reporter(len(tasks), enabled=progress) as bar:
                for r in _run_tasks(tasks, source, opts, bar.start):
                    p = by_owner[r.file_id]
                    if r.result is not None:
                        land(p, p.name, round(r.result.seconds, 3), r.result.bytes, r.result.io,
                             package_files(folder / p.name))
                        result.converted.append(p.owner.block_id)
                    else:
                        remove_tree(folder / p.name)  # e.g. saved but failed --check: never reuse it
                        for b in p.blocks:
                            i = index[b.unit.file_id]
                            manifest.blocks[i] = replace(manifest.blocks[i], state="failed", error=r.error)
                            result.failed.append((b.block_id, r.error or "unknown error"))
                    manifest.write()
                    bar.done(p.owner.block_id)
        finally:
            manifest.complete = all(b.state in ("done", "no_compute") for b in manifest.blocks)
            manifest.write()
            remove_orphans(folder, previous, manifest)  # e.g. after changing --attention
    return result


def _task(p: _Package, folder: Path, source: ModelSource, opts: ConvertOptions,
          real_units: dict[str, torch.nn.Module]) -> workers.BlockTask:
    b = p.owner
    weights = None
    if opts.mode == "deploy":
        unit = real_units[b.unit.file_id]
        weights = {k: v.detach().cpu().numpy() for k, v in unit.state_dict().items()}
    shared = ",".join(x.unit.file_id for x in p.blocks)
    metadata = {
        "block": b.block_id, "blocks": shared, "stage": b.unit.slot.stage, "signature": p.signature.key(),
        "signature_digest": p.signature.digest(), "mode": opts.mode, "model": source.ref,
        "spec": source.spec.name, "version": tool_versions()["snapbench"], "cache_key": p.key,
        "attention": opts.attention if b.kind == "CA" else "-", "weight_bits": opts.weight_bits,
        "target": opts.target,
        "source_hash": p.weights_hash if opts.mode == "deploy" else f"random weights (seed {opts.seed})",
    }
    what = "shared by " + shared if len(p.blocks) > 1 else b.block_id
    description = f"snapbench {opts.mode} package of {source.spec.name}: {what}"
    return workers.BlockTask(b.unit.file_id, b.block_id, str((folder / p.name).resolve()), _io(b), b.kind == "CA",
                             metadata, description, weights, b.macs)


def _up_to_date(previous: Manifest | None, run_key: str, folder: Path) -> bool:
    return (previous is not None and previous.complete and previous.run_key == run_key
            and all(is_complete_package(folder / b.package, b.files) for b in previous.blocks if b.package))


