"""One whole Core ML program per network: converted once, its op records cached by content.

    records = network_records("timm:mobileone_s0", "1x3x224x224")        # minutes cold, milliseconds warm
    path = network_package("torchvision:resnet50", "1x3x224x224")        # the .mlpackage, for a real device

The cache key is the network's name, options and input shape, the versions of the libraries that build and
convert it, and the record format; weights are random (seed 0) and do not change a record.
Records live under `<cache>/zoo/` (`snapbench cache` says where: $SNAPBENCH_CACHE or the user cache folder).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate.program_ops import (
    RECORDS_VERSION,
    OpRecord,
    load_records,
    read_op_records,
    records_from_spec,
    save_records,
)
from snapbench.zoo.specs import ModelSpec, parse_model_spec, parse_shape

_LIBRARIES = ("torch", "coremltools", "timm", "open_clip_torch", "torchvision", "transformers")


def cache_dir() -> Path:
    from snapbench.paths import cache_root

    return cache_root() / "zoo"


def _versions() -> dict[str, str]:
    out = {}
    for lib in _LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = ""
    return out


def network_key(spec: ModelSpec, shape: tuple[int, ...] | None) -> str:
    doc = {"spec": spec.text, "shape": list(shape) if shape else None, "versions": _versions(),
           "records": RECORDS_VERSION, "target": "iOS16", "precision": "fp16"}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _shape_or_none(input_shape) -> tuple[int, ...] | None:
    if input_shape is None or input_shape == "":
        return None
    return parse_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)


def records_path(spec: ModelSpec, shape: tuple[int, ...] | None) -> Path:
    dims = "x".join(map(str, shape)) if shape else "default"
    return cache_dir() / f"{spec.slug()}-{dims}-{network_key(spec, shape)}.ops.json"


def cached_records(model: str | ModelSpec, input_shape=None) -> list[OpRecord] | None:
    """The cached op records, or None when this network has not been converted (no conversion here)."""
    spec = parse_model_spec(model) if isinstance(model, str) else model
    if spec.kind == "package":
        return read_op_records(spec.name)
    shape = _shape_or_none(input_shape)
    path = records_path(spec, shape)
    return load_records(path, key=network_key(spec, shape))


def _convert(spec: ModelSpec, shape: tuple[int, ...] | None):
    import torch

    from snapbench.converters.convert_package import example_inputs, to_coreml, trace
    from snapbench.converters.options import ConvertOptions
    from snapbench.zoo.builders import build_network

    net = build_network(spec, shape)
    # nn.MultiheadAttention's inference fast path traces to one fused op coremltools cannot convert;
    # the plain path traces to matmuls and softmax, which it can
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        traced = trace(net.module, example_inputs(net.io))
    except Exception as exc:  # the library's forward failed on this input: one line, not its traceback
        raise SnapbenchError(f"{spec.text}: tracing failed at input {shape} ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); check --input") from None
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    try:
        return net, to_coreml(traced, net.io, ConvertOptions())
    except NotImplementedError as exc:  # coremltools' torch frontend lacks an op this network uses
        m = re.search(r"op '([^']+)'", str(exc))
        op = m.group(1) if m else str(exc).splitlines()[0][:120]
        hint = "bilinear interpolation instead of bicubic" if "bicubic" in op else "an equivalent op"
        raise SnapbenchError(f"{spec.text}: coremltools cannot convert the PyTorch op {op!r}; change the network "
                             f"to use {hint}, or register a coremltools torch op for it") from None


def network_records(model: str | ModelSpec, input_shape=None) -> list[OpRecord]:
    """Op records of the whole network as one ML Program: cached, else converted in memory (no package
    is written) and cached. Package paths are read as they are."""
    spec = parse_model_spec(model) if isinstance(model, str) else model
    if spec.kind == "package":
        return _package_records(Path(spec.name))
    shape = _shape_or_none(input_shape)
    found = cached_records(spec, shape)
    if found is not None:
        return found
    _, mlmodel = _convert(spec, shape)
    records = records_from_spec(mlmodel.get_spec())
    save_records(records_path(spec, shape), records, key=network_key(spec, shape), source=spec.text)
    return records


def _package_records(path: Path) -> list[OpRecord]:
    if path.suffix == ".mlmodel":
        from snapbench.converters.runtime import coremltools

        try:
            spec = coremltools().models.MLModel(str(path), skip_model_load=True).get_spec()
        except Exception as exc:  # coremltools raises bare Exceptions for unreadable files
            raise SnapbenchError(f"{path} does not load as a Core ML model ({exc})") from None
        return records_from_spec(spec)
    try:
        return read_op_records(path)
    except SnapbenchError:
        raise
    except Exception as exc:
        raise SnapbenchError(f"{path} does not load as a Core ML package ({exc})") from None


def network_package(model: str | ModelSpec, input_shape=None, out: str | os.PathLike | None = None, *,
                    weight_bits: int = 16) -> Path:
    """The network as an `.mlpackage` (for a real device or Xcode), written once per key; weights stored as
    the converters store them (16: fp16, 8: int8, 6/4: palettized)."""
    spec = parse_model_spec(model) if isinstance(model, str) else model
    if spec.kind == "package":
        return Path(spec.name)
    from snapbench.converters.compression import compress
    from snapbench.converters.convert_package import (
        is_complete_package,
        package_scratch,
        save_checked,
        stamp,
    )
    from snapbench.converters.options import ConvertOptions
    from snapbench.converters.runtime import conversion_context

    opts = ConvertOptions(weight_bits=weight_bits)
    shape = _shape_or_none(input_shape)
    key = network_key(spec, shape) + (f"-w{weight_bits}" if weight_bits != 16 else "")
    dest = Path(out) if out else cache_dir() / f"{spec.slug()}-{key}.mlpackage"
    if is_complete_package(dest):
        return dest
    with package_scratch(dest) as scratch:  # coremltools' temporary packages go with it
        net, mlmodel = _convert(spec, shape)
        with conversion_context():
            mlmodel = compress(mlmodel, opts)
        stamp(mlmodel, {"model": spec.text, "input": "x".join(map(str, net.io.inputs[0][1]))}, net.title)
        save_checked(mlmodel, dest, net.io, scratch)
    return dest
