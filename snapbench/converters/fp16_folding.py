"""fp16 weights without the fp32 ones beside them: coremltools' `add_fp16_cast`, folding each weight's cast as
it is made, once the PyTorch module's tensors have been released.

Why (measured on an SDXL UNet chunk, benchmarks/probe_part_memory.py): ct.convert's torch frontend makes every
weight a MIL const that is a numpy *view* of the PyTorch tensor, no copy. The default pipeline's
`common::add_fp16_cast` then puts a cast to fp16 in front of every consumer of a weight, and the MIL builder
computes that cast's value on the spot, so when the pass ends every weight is held twice, fp32 (the module's
storage) and fp16, until `const_elimination` and `dead_code_elimination` drop the fp32 consts a few passes
later. For a 1.28 B-parameter chunk that is 5.1 + 2.6 GB at once: the pipeline's peak.

Here (`folding_fp16`): when the main pass pipeline starts, the frontend is done with the PyTorch tensors, so
the module's are emptied (`release`); each const's view still holds its own storage. Then
`add_fp16_cast_folding`, in `add_fp16_cast`'s place, does for each weight whose only consumer is its new cast
what `const_elimination` + `dead_code_elimination` would do later: a const of the cast's value under the
cast's name, then the cast and the fp32 const removed, which frees that weight's fp32 storage. The pass
never holds more than the fp32 weights it started with. Everything else is coremltools' own pass, and the
program that comes out is the default one: tests compare the packages byte for byte.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from snapbench.converters.runtime import coremltools

DEFAULT_PASS = "common::add_fp16_cast"
FOLDING_PASS = "snapbench::add_fp16_cast_folding"


@functools.lru_cache(maxsize=1)
def folding_pass() -> Any:
    """The registered pass's class (coremltools is imported, and the pass registered, on first use)."""
    coremltools()
    from coremltools.converters.mil.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.passes.defs.quantization import add_fp16_cast
    from coremltools.converters.mil.mil.passes.pass_registry import register_pass

    def fp32_weight(var: Any) -> bool:
        return (var.op is not None and var.op.op_type == "const" and isinstance(var.val, np.ndarray)
                and var.dtype == types.fp32)

    def fold(var: Any) -> None:
        """const(fp32) -> cast(fp16) -> consumer  becomes  const(fp16) -> consumer, as const_elimination
        (the new const is named after the cast's output, placed before the cast) and dead_code_elimination
        would make it. Only when the cast is the weight's one consumer: add_fp16_cast shares one cast
        among several consumers through a cache that must keep pointing at a live var."""
        if len(var.child_ops) != 1:
            return
        cast = var.child_ops[0]
        out = cast.outputs[0]
        block = cast.enclosing_block
        if cast.op_type != "cast" or out.val is None or out in block.outputs or var.op.enclosing_block is not block:
            return
        folded = mb.const(val=out.val, before_op=cast, name=out.name)
        if not block.try_replace_uses_of_var_after_op(anchor_op=cast, old_var=out, new_var=folded):
            block.remove_ops([folded.op])
            return
        out.set_name(out.name + "_ignored")
        const = var.op
        block.remove_ops([cast, const])
        # The removed const is still in add_fp16_cast's snapshot of the block's ops (list(block.operations),
        # already past it) until the whole block is done: drop its value, the last reference to the fp32
        # view, so that the view and with it the PyTorch storage go now.
        for v in (*const.outputs, *const.internal_inputs.values()):
            v._sym_val = None

    class add_fp16_cast_folding(add_fp16_cast):  # noqa: N801 - coremltools names a pass after its class
        # set on the class by folding_fp16 for one conversion: the registry makes a new instance per run
        release: Callable[[], None] | None = None

        def apply(self, prog: Any) -> None:
            release = type(self).release
            type(self).release = None
            if release is not None:
                release()
            super().apply(prog)

        def transform_op(self, op: Any) -> None:
            weights = [v for vs in op.inputs.values() for v in (vs if isinstance(vs, (list, tuple)) else [vs])
                       if fp32_weight(v)]
            super().transform_op(op)
            for var in weights:
                fold(var)

    register_pass(namespace="snapbench")(add_fp16_cast_folding)
    return add_fp16_cast_folding


@contextlib.contextmanager
def folding_fp16(pass_pipeline: Any, release: Callable[[], None] | None) -> Iterator[Any]:
    """`pass_pipeline` with `add_fp16_cast` replaced by the folding pass, which calls `release` (empty the
    PyTorch module's tensors) when the main pipeline reaches it. For one ct.convert with fp16 compute
    precision; the release hook is cleared afterwards whatever happens."""
    passes = list(pass_pipeline.passes)
    if DEFAULT_PASS not in passes:  # fp32 compute precision: nothing is cast
        yield pass_pipeline
        return
    p = folding_pass()  # registered before the pipeline names it
    where = passes.index(DEFAULT_PASS)
    pass_pipeline.remove_passes([DEFAULT_PASS])
    pass_pipeline.insert_pass(where, FOLDING_PASS)
    p.release = release
    try:
        yield pass_pipeline
    finally:
        p.release = None


def release_tensors(*modules: Any) -> Callable[[], None]:
    """A hook that empties every parameter and buffer of `modules` in place (`set_()`): the storage goes
    once nothing else holds it (a MIL const's numpy view holds its own reference). The modules are
    unusable afterwards."""
    import torch

    def release() -> None:
        with torch.no_grad():
            for m in modules:
                for t in (*m.parameters(), *m.buffers()):
                    t.set_()

    return release
