"""Where one package is converted: a PyTorch module -> trace -> Core ML -> compress -> stamp -> save -> reload.

Every package snapbench writes (a block, the whole UNet, the text encoder, the VAE decoder) goes through
`convert_module`, so speed tricks, metadata, atomic saving and the reload check live in one place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from snapbench.converters.checks import check_reloaded
from snapbench.converters.compression import compress, nonfinite_weights
from snapbench.converters.fp16_folding import folding_fp16, release_tensors
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO, Shape  # noqa: F401  (Shape: part of this module's interface)
from snapbench.converters.runtime import conversion_context, coremltools
from snapbench.profilers.coreml_types import MLModel


@dataclass(frozen=True)
class PackageResult:
    path: Path
    seconds: float
    bytes: int
    io: PackageIO  # as read back from the saved package
    timings: Mapping[str, float] = field(default_factory=dict)


def example_inputs(io: PackageIO, *, seed: int = 0, int_high: int = 1000) -> tuple[torch.Tensor, ...]:
    """Inputs to trace with: random, except a timestep (981, a typical first DDIM step) and token ids."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape in io.inputs:
        if name in io.int_inputs:
            out.append(torch.randint(0, int_high, shape, generator=g, dtype=torch.int32))
        elif name == "timestep":
            out.append(torch.full(shape, 981.0))
        else:
            out.append(torch.randn(shape, generator=g))
    return tuple(out)


def trace(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.jit.ScriptModule:
    # check_trace=False: the default re-runs the module to compare traces, doubling the dominant cost.
    # TracerWarnings say shapes become constants: exactly what a fixed-shape Core ML package wants.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
        # coremltools 9 converts TorchScript (or torch.export); trace is the path that needs no rewrite
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=DeprecationWarning)
        return torch.jit.trace(module.eval(), inputs, check_trace=False)


# A pinned dtype for ct.TensorType; unpinned (None): coremltools' default, float16 for fp16 programs from iOS16
_NUMPY_DTYPES = {"float32": np.float32, "float16": np.float16, "int32": np.int32}


def to_coreml(traced: torch.jit.ScriptModule, io: PackageIO, opts: ConvertOptions,
              skip_passes: tuple[str, ...] = (), release: Callable[[], None] | None = None) -> MLModel:
    """`skip_passes`: MIL passes left out of coremltools' default pipeline, only ones that are known to
    change nothing in the caller's programs (see pipeline.UNET_SKIPPED_PASSES). `release`: called once
    the frontend has made the program, to empty the PyTorch tensors; the fp16 weights then replace the fp32
    ones one by one instead of all beside them (fp16_folding.py; the same program)."""
    ct = coremltools()
    pass_pipeline = ct.PassPipeline.DEFAULT
    if skip_passes:
        pass_pipeline.remove_passes(list(skip_passes))
    inputs = [ct.TensorType(name=n, shape=s, dtype=_NUMPY_DTYPES.get(io.dtype(n) or "")) for n, s in io.inputs]
    outputs = [ct.TensorType(name=n, dtype=_NUMPY_DTYPES.get(io.dtype(n) or "")) for n, _ in io.outputs]
    precision = ct.precision.FLOAT16 if opts.precision == "fp16" else ct.precision.FLOAT32
    folding = folding_fp16(pass_pipeline, release) if release is not None else contextlib.nullcontext(pass_pipeline)
    with conversion_context(), folding:
        return ct.convert(
            traced,
            convert_to="mlprogram",
            inputs=inputs,
            outputs=outputs,
            compute_precision=precision,
            minimum_deployment_target=getattr(ct.target, opts.target),
            pass_pipeline=pass_pipeline,
        )


def stamp(mlmodel: MLModel, metadata: Mapping[str, object], description: str) -> None:
    """Record what produced the package inside it (Xcode shows these; the estimator can read them)."""
    mlmodel.author = "snapbench"
    mlmodel.short_description = description
    for key, value in metadata.items():
        mlmodel.user_defined_metadata[f"snapbench.{key}"] = "" if value is None else str(value)


@contextlib.contextmanager
def package_scratch(dest: Path) -> Iterator[Path]:
    """The `.NAME.PID.partial` folder beside `dest` where its package is made; removed when done.

    coremltools keeps every program it converts or compresses as a temporary package (and its weights) under
    tempfile's folder, deleted only when the Python object is collected - which a killed run, or an object a
    traceback keeps alive, never does: each left its full weights in /tmp (a full-size SDXL chunk is GBs).
    tempfile points into this folder meanwhile, so those temporaries sit beside the output and go with it:
    here, or in the next run's clean-up of a killed run's `.partial` folders (manifest._TEMP)."""
    dest = Path(dest)
    scratch = dest.parent / f".{dest.name}.{os.getpid()}.partial"
    remove_tree(scratch)
    scratch.mkdir(parents=True)
    saved = tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved
        remove_tree(scratch)


def save_checked(mlmodel: MLModel, dest: Path, io: PackageIO, scratch: Path | None = None) -> PackageIO:
    """Save under a temporary name, reload from disk and check the interface, then rename into place.

    A package at `dest` is therefore always complete and checked; a killed run leaves only a
    `.NAME.PID.partial` folder, which the next run removes. `scratch`: the caller's `package_scratch`.
    """
    dest = Path(dest)
    with contextlib.nullcontext(scratch) if scratch is not None else package_scratch(dest) as folder:
        staged = folder / dest.name  # coremltools insists on the .mlpackage extension
        mlmodel.save(str(staged))
        found = check_reloaded(staged, io)
        remove_tree(dest)
        os.replace(staged, dest)
    return found


def convert_module(module: torch.nn.Module, io: PackageIO, opts: ConvertOptions, dest: Path, *,
                   metadata: Mapping[str, object], description: str,
                   inputs: tuple[torch.Tensor, ...] | None = None, release: bool = False,
                   skip_passes: tuple[str, ...] = (),
                   recipe_bits: Mapping[str, tuple[int, str]] | None = None) -> PackageResult:
    """`release`: empty the module's tensors in place as soon as coremltools' frontend is done with them, so
    that converting, compressing and saving a big part (a UNet chunk) never holds its fp32 and fp16 weights
    side by side (fp16_folding.py); the module is unusable afterwards."""
    start = time.perf_counter()
    timings: dict[str, float] = {}
    with package_scratch(Path(dest)) as scratch:
        example = inputs if inputs is not None else example_inputs(io, seed=opts.seed)
        traced = trace(module, example)
        timings["trace"] = time.perf_counter() - start
        del example
        # the traced module is released too: whether it shares the module's tensors is torch's business
        mlmodel = to_coreml(traced, io, opts, skip_passes, release=release_tensors(module, traced) if release else None)
        del traced
        if release:  # fp32 compute precision has no fp16 pass to release them in
            release_tensors(module)()
        timings["convert"] = time.perf_counter() - start - sum(timings.values())
        with conversion_context():  # compression runs MIL pass pipelines too: keep their tqdm bars off
            if opts.recipe:
                from snapbench.converters.mixed_bit import compress_mixed

                mlmodel = compress_mixed(mlmodel, recipe_bits or {})
            else:
                mlmodel = compress(mlmodel, opts)
        bad = nonfinite_weights(mlmodel)
        if bad:
            raise ValueError(f"weights hold NaN or inf after conversion ({len(bad)} constant(s), e.g. {bad[0]}); "
                             "nothing was saved")
        timings["compress"] = time.perf_counter() - start - sum(timings.values())
        stamp(mlmodel, metadata, description)
        found = save_checked(mlmodel, dest, io, scratch)
        timings["save"] = time.perf_counter() - start - sum(timings.values())
        del mlmodel  # (ct.convert runs gc.collect itself; another full collection costs ~0.5 s a block)
    return PackageResult(Path(dest), time.perf_counter() - start, package_bytes(dest), found, timings)


def package_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def package_files(path: Path) -> dict[str, int]:
    """Every file of a package with its size (relative paths): what a manifest records, to verify later."""
    root = Path(path)
    return {f.relative_to(root).as_posix(): f.stat().st_size for f in sorted(root.rglob("*")) if f.is_file()}


def package_problem(path: Path, files: Mapping[str, int] | None = None) -> str | None:
    """Why the package at `path` cannot be used (None: it can). A package is not trusted for having a
    Manifest.json: its model spec must be there, non-empty and readable, every item its Manifest.json
    lists must exist, and where the conversion recorded its files (`files`), each must have that size
    (an emptied model.mlmodel, a lost or replaced weight.bin, a missing Data/ folder)."""
    import json

    root = Path(path)
    if not root.is_dir():
        return "missing"
    try:
        info = json.loads((root / "Manifest.json").read_text())
        entries = info["itemInfoEntries"]
        spec_entry = entries[info["rootModelIdentifier"]]
    except (OSError, ValueError, KeyError, TypeError):
        return "no readable Manifest.json"
    for entry in entries.values():
        item = root / "Data" / str(entry.get("path", ""))
        if not item.exists():
            return f"Data/{entry.get('path')} is missing"
        if item.is_dir() and not any(f.is_file() and f.stat().st_size for f in item.rglob("*")):
            return f"Data/{entry.get('path')} holds no data (weight.bin lost?)"
    spec = root / "Data" / str(spec_entry.get("path", ""))
    if not spec.is_file() or spec.stat().st_size == 0:
        return f"its model spec Data/{spec_entry.get('path')} is empty"
    if files:
        for rel, size in files.items():
            f = root / rel
            if not f.is_file():
                return f"{rel} is missing"
            if f.stat().st_size != size:
                return f"{rel} has {f.stat().st_size} bytes, the conversion wrote {size}"
        return None
    # Nothing recorded (a folder from an older snapbench): the spec must at least parse.
    try:
        coremltools().utils.load_spec(str(root))
    except Exception as e:  # noqa: BLE001 - any failure to read it means: convert again
        return f"its model spec does not load ({type(e).__name__})"
    return None


def is_complete_package(path: Path, files: Mapping[str, int] | None = None) -> bool:
    """A package that can be reused as it is (see `package_problem`)."""
    return package_problem(path, files) is None


def remove_tree(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
