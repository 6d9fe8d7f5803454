"""Run a saved package's ML program without Core ML: coremltools' own op-level evaluation, op by op.

Core ML prediction needs macOS. What runs anywhere is coremltools' MIL: the program read back from the
saved package (its milproto loader, the same one that turns a package into a pymil Program for passes),
and each op's `value_inference`, the numpy definition of the op that coremltools' constant folding uses.
Feeding the inputs as values and re-running type and value inference op by op, in program order, gives
the program's outputs, computed in the dtypes the program declares (fp16 ops in numpy float16). That is
not the Neural Engine's arithmetic, but every cast, gather index and dtype choice of the package acts as it
would: a token id that does not survive the package's input dtype picks the wrong embedding row here too.

Ops whose value_inference coremltools lacks get a numpy rule below (`_NUMPY_RULES`); any other op raises
MilEvalError naming it, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from snapbench.profilers.coreml_types import MilOp, MilProgram, MilVar


class MilEvalError(Exception):
    """The program cannot be evaluated here (an op with no numpy definition, a missing input)."""


def _gather_nd(op: MilOp) -> np.ndarray:
    # iOS15 gather_nd with batch_dims 0 (what CLIP's pooled output traces to): x[indices[..., 0], indices[..., 1], ...]
    if op.batch_dims.val != 0:
        raise MilEvalError(f"{op.name}: gather_nd with batch_dims {op.batch_dims.val} has no numpy rule here")
    x, indices = np.asarray(op.x.val), np.asarray(op.indices.val)
    return x[tuple(np.moveaxis(indices, -1, 0))]


_NUMPY_RULES: dict[str, Callable[[MilOp], np.ndarray]] = {"gather_nd": _gather_nd}


def load_program(path: str | Path) -> MilProgram:
    """The pymil Program of a saved .mlpackage (weights read from its Data folder)."""
    from coremltools.converters.mil.frontend.milproto.load import load

    from snapbench.converters.runtime import coremltools

    ct = coremltools()
    spec = ct.utils.load_spec(str(path))
    weights = Path(path) / "Data" / "com.apple.CoreML" / "weights"
    return load(spec, spec.specificationVersion, str(weights))


def _set_value(var: MilVar, value: np.ndarray) -> None:
    typed = var.sym_type()
    typed.val = value
    var._sym_val = typed  # what value inference reads as var.val


def evaluate_package(path: str | Path, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The package's outputs for `feeds` (input name -> array), each input first cast to the dtype the
    package declares for it, as Core ML does with an MLMultiArray of another type."""
    from coremltools.converters.mil.mil.types.type_mapping import nptype_from_builtin

    fn = load_program(path).functions["main"]
    for name, var in fn.inputs.items():
        if name not in feeds:
            raise MilEvalError(f"{Path(path).name}: no value for input {name}")
        value = np.asarray(feeds[name]).astype(nptype_from_builtin(var.dtype))
        if tuple(value.shape) != tuple(var.shape):
            raise MilEvalError(f"{Path(path).name}: input {name} has shape {list(var.shape)}, got {list(value.shape)}")
        _set_value(var, value)
    for op in fn.operations:
        if op.op_type == "const":
            continue
        try:
            op.type_value_inference(overwrite_output=True)
        except (IndexError, ValueError) as e:  # e.g. a gather index past the table: what the device would misread
            raise MilEvalError(f"{op.name} ({op.op_type}): {e}") from None
        if all(v.val is not None for v in op.outputs):
            continue
        rule = _NUMPY_RULES.get(op.op_type)
        if rule is None or len(op.outputs) != 1:
            raise MilEvalError(f"{op.name}: coremltools has no value inference for {op.op_type} and neither has "
                               "snapbench; the program cannot be evaluated here")
        out = op.outputs[0]
        _set_value(out, np.asarray(rule(op)).astype(nptype_from_builtin(out.dtype)))
    return {v.name: np.asarray(v.val) for v in fn.outputs}
