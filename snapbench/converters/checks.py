"""Checks on converted packages.

- `check_reloaded` (everywhere): the saved package is read back from disk and its input / output names
  and shapes must be the block's. Reading the spec needs no Core ML runtime, so Linux runs it too.
- `check_prediction` (macOS only): run the package with Core ML and compare with PyTorch; Apple's
  acceptance bar is PSNR >= 35 dB. coremltools can predict only on macOS, so on Linux `--check` is
  refused up front by `require_prediction` instead of silently passing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from snapbench.errors import SnapbenchError
from snapbench.profilers.coreml_types import Predicts

if TYPE_CHECKING:
    from snapbench.converters.package_io import PackageIO

PSNR_BAR_DB = 35.0


class PackageCheckError(Exception):
    """A package that does not match its block (a conversion failure, reported per block)."""


def check_reloaded(path: Path, io: PackageIO) -> PackageIO:
    from snapbench.converters.package_io import PackageIO
    from snapbench.converters.runtime import coremltools

    ct = coremltools()
    spec = ct.utils.load_spec(str(path))
    got_in = tuple((i.name, tuple(int(d) for d in i.type.multiArrayType.shape)) for i in spec.description.input)
    got_out = tuple((o.name, tuple(int(d) for d in o.type.multiArrayType.shape) or None)
                    for o in spec.description.output)
    if got_in != tuple(io.inputs):
        raise PackageCheckError(f"{path.name}: reloaded inputs {_fmt(got_in)} != expected {_fmt(io.inputs)}")
    if [n for n, _ in got_out] != [n for n, _ in io.outputs]:
        raise PackageCheckError(f"{path.name}: reloaded outputs {_fmt(got_out)} != expected {_fmt(io.outputs)}")
    for (name, got), (_, want) in zip(got_out, io.outputs):
        if want is not None and got is not None and tuple(got) != tuple(want):
            raise PackageCheckError(f"{path.name}: output {name} has shape {list(got)}, the block gives {list(want)}")
    dtype_name = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
    for feature in (*spec.description.input, *spec.description.output):
        want_dtype = io.dtype(feature.name)
        got_dtype = dtype_name(feature.type.multiArrayType.dataType).lower()
        if want_dtype is not None and got_dtype != want_dtype:
            raise PackageCheckError(f"{path.name}: {feature.name} is {got_dtype}, the interface pins {want_dtype}")
    return PackageIO(got_in, tuple((n, s if s is not None else w) for (n, s), (_, w) in zip(got_out, io.outputs)),
                     io.int_inputs, io.dtypes)


def _fmt(items: Sequence[tuple[str, tuple[int, ...] | None]]) -> str:
    return ", ".join(f"{n}{list(s) if s is not None else ''}" for n, s in items)


def prediction_available() -> bool:
    return sys.platform == "darwin"


def require_prediction() -> None:
    if not prediction_available():
        raise SnapbenchError(
            f"--check needs macOS: it runs each package with Core ML prediction, which coremltools provides "
            f"only on macOS (this is {sys.platform}); convert here without --check and run it on a Mac"
        )


def check_prediction(path: Path, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...],
                     io: PackageIO, *, load: Callable[[str], Predicts] | None = None) -> float:
    """PSNR (dB) of the package's output against the module's; raises PackageCheckError under the bar.

    `load` defaults to coremltools' MLModel (macOS only); tests pass a fake with the same predict().
    """
    from snapbench.converters.ane_attention import psnr

    if load is None:
        from snapbench.converters.runtime import coremltools

        load = coremltools().models.MLModel
    with torch.no_grad():
        reference = module(*inputs)
    mlmodel = load(str(path))
    feed = {name: t.numpy().astype(np.int32 if name in io.int_inputs else np.float32)
            for (name, _), t in zip(io.inputs, inputs)}
    result = mlmodel.predict(feed)
    out_name = io.outputs[0][0]
    if out_name not in result:
        raise PackageCheckError(f"{path.name}: prediction has no output {out_name!r} (got {sorted(result)})")
    db = psnr(reference, np.asarray(result[out_name]))
    if not db >= PSNR_BAR_DB:
        raise PackageCheckError(f"{path.name}: Core ML vs PyTorch PSNR {db:.1f} dB < {PSNR_BAR_DB:.0f} dB")
    return db
