"""coremltools as the converters use it: imported quietly, its progress bars off, one slow check made fast.

Quiet, not blind: only messages known to be harmless here are filtered, by their exact start; every
other warning and every error still reaches the user.
- "Torch version 2.13... has not been tested": conversion works (docs/where-it-ran.md).
- "scikit-learn version ... is not supported": only coremltools' sklearn *model converter* is disabled.
- "Failed to load _ML...Proxy: No module named 'coremltools.libcoremlpython'": Linux has no Core ML
  runtime; prediction needs macOS and `--check` says so itself.
- "Saving value type of int64 into a builtin type of int32": shape constants, always small.
- "Tuple detected at graph output": a module returning several tensors (app pipeline chunks, the text
  encoder); each gets the output name given to ct.convert.

During a conversion (`conversion_context`), coremltools' "ERROR - converting 'op' op (located at ...)"
record is not printed: coremltools logs it and re-raises the exception, which reaches snapbench, whose
caller reports the failure in its own line. The op and its location go onto the exception as a note
(shown with a traceback, kept for a bug report). Only that record, only inside a conversion.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType

import numpy as np

from snapbench.profilers.coreml_types import MilOp, MilProgram, PassPipeline

# coremltools' PassPipelineManager.apply_pipeline: runs a pass pipeline over a program in place
ApplyPipeline = Callable[[MilProgram, PassPipeline], None]

_HARMLESS: tuple[str, ...] = (
    "Torch version ",
    "scikit-learn version ",
    "Saving value type of int64 into a builtin type of int32",
    "Tuple detected at graph output",
)
if sys.platform != "darwin":
    # On macOS a missing Core ML runtime would be a real problem; on Linux there is none to load.
    _HARMLESS += ("Failed to load _ML",)


class _HarmlessFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_HARMLESS)


def _install_filters() -> None:
    # coremltools logs through loggers named after its modules and configures no handler, so its
    # records end at the root logger's handlers or, with none, at logging.lastResort: filter there.
    handlers = list(logging.getLogger().handlers)
    if logging.lastResort is not None:
        handlers.append(logging.lastResort)
    for h in handlers:
        if not any(isinstance(x, _HarmlessFilter) for x in h.filters):
            h.addFilter(_HarmlessFilter())


_CONVERTING_ERROR = "\n\nERROR - converting "  # coremltools' torch frontend, just before it re-raises


class _ConvertingErrors(logging.Filter):
    """Keeps coremltools' converting-error records out of the output; remembers the last one."""

    def __init__(self) -> None:
        super().__init__()
        self.last: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text.startswith(_CONVERTING_ERROR):
            self.last = text.strip()
            return False
        return True


@functools.lru_cache(maxsize=1)
def coremltools() -> ModuleType:
    """Import coremltools once, without its known-harmless import-time warnings."""
    _install_filters()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(Torch|scikit-learn) version")
        import coremltools as ct
    _install_filters()
    return ct


def _fast_fp16_overflow(op: MilOp) -> bool:
    """Same answer as coremltools' FP16ComputePrecision.fp16_overflow, without its copies.

    The original takes abs(), builds a boolean mask and an int64 index array of every weight on every op
    (about 60 ms per 30M-parameter tensor, 5 of the 8 seconds of converting a 1280-channel ResNet block).
    Here: the largest magnitude from max() and min() (no copy); only when it exceeds the fp16 range is
    the exact rule (ignore values >= 1e38, which are meant as infinities) applied.
    """
    for inputs in op.inputs.values():
        for var in inputs if isinstance(inputs, (list, tuple)) else (inputs,):
            if var.op is None or var.op.op_type != "const" or not var.is_tensor_or_scalar_of(dtype="fp32"):
                continue
            value = np.asarray(var.op.val.val)
            if value.size == 0:
                continue
            if max(float(value.max()), -float(value.min())) <= 65504:
                continue
            abs_value = np.abs(value)
            if np.max(abs_value, where=abs_value < 1e38, initial=0.0) > 65504:
                return True
    return False


def _validated_once(apply_pipeline: ApplyPipeline) -> ApplyPipeline:
    """PassPipelineManager.apply_pipeline that validates the program once, after its last pass.

    coremltools re-validates the whole program after every pass (about 100 per pipeline): a read-only
    consistency walk over every op and var that costs a quarter of converting a UNet chunk. The passes
    make the same program either way; an invalid one still fails, at the end of the pipeline instead
    of right after the pass that broke it (set SNAPBENCH_VALIDATE_EVERY_PASS=1 to find that pass).
    """
    from coremltools.converters.mil.mil.program import Program

    @functools.wraps(apply_pipeline)
    def apply(prog: MilProgram, pass_pipeline: PassPipeline) -> None:
        original = Program.validate
        Program.validate = lambda self, *a, **k: None
        try:
            apply_pipeline(prog, pass_pipeline)
        finally:
            Program.validate = original
        prog.validate(check_essential_scope="common::dead_code_elimination" in pass_pipeline.passes)

    return apply


@contextlib.contextmanager
def conversion_context() -> Iterator[None]:
    """For one conversion: the fast overflow check, one validation per pass pipeline (not per pass), and
    coremltools' tqdm bars off (they would fight the rich progress bar; TQDM_DISABLE is read only when
    tqdm is imported, often before us). Everything patched is restored in `finally`."""
    from coremltools.converters.mil.frontend.torch import ops as torch_ops
    from coremltools.converters.mil.mil.passes import pass_pipeline
    from coremltools.converters.mil.mil.passes.defs.quantization import FP16ComputePrecision
    from coremltools.optimize.coreml import _post_training_quantization as ptq
    from coremltools.optimize.coreml import _quantization_passes as qpasses

    from snapbench.converters.mil_shortcuts import shortcuts
    from snapbench.converters.torch_ops import register

    register()  # ops coremltools lacks that the DiT pipelines' parts trace to
    original_check = FP16ComputePrecision.__dict__["fp16_overflow"]
    bar_owners = ((pass_pipeline, "tqdm"), (torch_ops, "_tqdm"), (ptq, "tqdm"), (qpasses, "tqdm"))
    original_bars = [getattr(mod, name) for mod, name in bar_owners]
    FP16ComputePrecision.fp16_overflow = staticmethod(_fast_fp16_overflow)
    manager = pass_pipeline.PassPipelineManager
    original_apply = manager.__dict__["apply_pipeline"]
    if not os.environ.get("SNAPBENCH_VALIDATE_EVERY_PASS"):
        manager.apply_pipeline = staticmethod(_validated_once(original_apply.__func__))
    for (mod, name), bar in zip(bar_owners, original_bars):
        setattr(mod, name, functools.partial(bar, disable=True))
    errors = _ConvertingErrors()
    ct_logger = logging.getLogger("coremltools")
    ct_logger.addFilter(errors)
    try:
        with warnings.catch_warnings(), shortcuts():
            # fp32 attention masks at float32's minimum become fp16 -inf, as intended (causal masks)
            warnings.filterwarnings("ignore", message="overflow encountered in cast", category=RuntimeWarning)
            yield
    except Exception as e:
        if errors.last:
            e.add_note(f"coremltools: {errors.last}")
        raise
    finally:
        ct_logger.removeFilter(errors)
        FP16ComputePrecision.fp16_overflow = original_check
        manager.apply_pipeline = original_apply
        for (mod, name), bar in zip(bar_owners, original_bars):
            setattr(mod, name, bar)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread while a part is built, checked and traced.

    Everything PyTorch computes here is small (attention checks at 16 x 16, UNet chunks traced at 8 x 8,
    the VAE at 8 x 8, the text encoder at batch 1): thousands of tiny ops, for which a second OpenMP
    thread buys nothing and costs a barrier per op, and when the CPU is shared each barrier waits for a
    descheduled thread (SD-v1.5's chunk 2 built in 44 s on two threads, 7 s on one, at load 5 on 2 cores).
    The rest of a conversion (coremltools) is single-threaded Python anyway.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None (macOS, musl: their allocators hand memory back by themselves)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    fn = getattr(ctypes.CDLL(None), "malloc_trim", None)  # the C library this process already runs on
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def release_freed_memory() -> None:
    """Hand the memory malloc has freed but kept back to the system (glibc's `malloc_trim(0)`).

    glibc serves tensors below its mmap threshold (which grows to 32 MB as big blocks are freed) from its
    heaps, and keeps what they free there: holes in a heap stay resident, so a part's freed weights and
    activations still count against the process while the next part is built. Trimming returns every whole
    free page (madvise); the next allocations fault fresh pages in. A few milliseconds; called between the
    steps that free gigabytes (after each block of a UNet chunk is built, after each app part)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
