"""Converting blocks, in this process or in worker processes: one task = one package.

Each worker builds the model once, on PyTorch's meta device (structure only, no memory), and for each
task materialises just that block: with the parent's real weights (deploy mode, sent as numpy arrays),
or seeded random ones (profile mode: latency does not depend on weight values, so no worker ever holds
a whole UNet's weights). After the package is saved the block is dropped, so memory is released block
by block.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import traceback
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from snapbench.converters.convert_package import PackageResult, convert_module, example_inputs
from snapbench.converters.options import ConvertOptions
from snapbench.converters.package_io import PackageIO
from snapbench.errors import first_line
from snapbench.interrupts import ignore_sigint
from snapbench.model.units import AttentionUnit, BlockUnit, names_in_root

if TYPE_CHECKING:
    from snapbench.model.loading import ModelSource


@dataclass(frozen=True)
class BlockTask:
    file_id: str  # the block whose unit is converted (profile mode: the first block with the signature)
    block_id: str
    dest: str  # absolute path of the .mlpackage to write
    io: PackageIO
    is_attention: bool
    metadata: Mapping[str, object]
    description: str
    weights: Mapping[str, np.ndarray] | None = field(default=None, repr=False)  # deploy mode
    macs: int = 0  # to schedule big blocks first


@dataclass(frozen=True)
class TaskResult:
    file_id: str
    result: PackageResult | None
    error: str | None = None
    check_psnr_db: float | None = None


# -- the per-process model -------------------------------------------------------------------------------

_UNITS: dict[str, BlockUnit] = {}
_ROOT_NAMES: dict[str, dict[str, str]] = {}  # with a recipe: unit file_id -> {its parameter: name in the UNet}
_OPTS: ConvertOptions | None = None


def init_worker(source: ModelSource, opts: ConvertOptions, threads: int | None = None) -> None:
    """Pool initializer (and the in-process set-up): build the meta model once for this process."""
    from snapbench.backbones import backbone_for
    from snapbench.converters.runtime import coremltools

    global _OPTS
    if threads is not None:  # a pool worker: Ctrl-C is the parent's to handle
        ignore_sigint()
    coremltools()  # import it once, quietly
    if threads is not None:
        torch.set_num_threads(max(1, threads))  # N workers x all cores each would oversubscribe the CPU
    model = backbone_for(source).build(source, device="meta")
    _UNITS.clear()
    _UNITS.update({u.file_id: u for u in model.units})
    _ROOT_NAMES.clear()
    if opts.recipe:
        root_names = names_in_root(cast(torch.nn.Module, model))
        _ROOT_NAMES.update({u.file_id: root_names(u) for u in model.units})
    _OPTS = opts
    if threads is not None:  # a pool worker: its heap lives as long as the process
        gc.collect()
        gc.freeze()


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Hide the objects alive now (torch, diffusers, coremltools, the meta model) from the cyclic GC.

    ct.convert runs gc.collect() on every call; with those libraries loaded a full collection walks
    millions of long-lived objects, about 0.8 s per package, more than converting a small block takes.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def materialize(unit: BlockUnit, weights: Mapping[str, np.ndarray] | None, seed: int) -> BlockUnit:
    """A real-memory copy of one meta-device block: given weights, or seeded random ones."""
    block = copy.deepcopy(unit)
    if weights is not None:
        state = {k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()}
        block.load_state_dict(state, strict=True, assign=True)
    else:
        block = block.to_empty(device="cpu")
        with torch.random.fork_rng(devices=[]):
            # a seed per block, so a block's random weights do not depend on which worker got it
            torch.manual_seed(seed * 1_000_003 + zlib.crc32(unit.file_id.encode()))
            for module in block.modules():
                if module is not block and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
    return block.eval()


def query_chunk(tokens: int) -> int:
    """split_einsum_v2's query chunk for a block with `tokens` spatial positions.

    Capped at the token count: a chunk longer than the sequence traces to a split that coremltools 9
    lowers to a `tile` with zero repetitions and refuses ("reps parameter must be greater than 0"),
    which hits SD-v1.5's Down-3 / Mid / Up-1 blocks (256 and 64 tokens < 512). One chunk of all the
    tokens is the same computation.
    """
    from snapbench.converters.ane_attention import DEFAULT_QUERY_CHUNK_SIZE

    return max(1, min(DEFAULT_QUERY_CHUNK_SIZE, tokens))


def rewrite_attention(transformer: torch.nn.Module, attention: str, tokens: int, *,
                      fixed_chunks: bool = False, consume: bool = False) -> torch.nn.Module:
    """`fixed_chunks`: split_einsum_v2 cuts the queries into tokens // chunk chunks whatever length it
    runs at (when the chunk divides `tokens`), so it can be traced at a smaller size (unet_chunks).
    `consume`: the result takes `transformer`'s tensors (ane_attention.rewrite_transformer)."""
    from snapbench.converters.ane_attention import rewrite_transformer

    chunk = query_chunk(tokens)
    chunks = tokens // chunk if fixed_chunks and attention == "split_einsum_v2" and tokens % chunk == 0 else None
    return rewrite_transformer(transformer, attention, query_chunk_size=chunk, query_chunks=chunks, consume=consume)


def block_module(unit: BlockUnit, attention: str, tokens: int | None = None) -> torch.nn.Module:
    """What goes into the package: the block, with its attention rewritten for the Neural Engine if asked.

    `tokens`: the block's spatial positions (H*W of its hidden input), for split_einsum_v2's chunking.
    """
    if isinstance(unit, AttentionUnit) and attention != "original":
        # forward(hidden, context), same weights
        return rewrite_attention(unit.transformer, attention, tokens or 10**9)
    return unit


def run_task(task: BlockTask) -> TaskResult:
    """Convert one block; any failure is returned (with its message), never raised, so the rest go on."""
    assert _OPTS is not None, "init_worker was not called"
    opts = _OPTS
    try:
        unit = materialize(_UNITS[task.file_id], task.weights, opts.seed)
        recipe_bits = None
        if opts.recipe:  # which weights get which table: found by content once converted (mixed_bit.py)
            from snapbench.converters.mixed_bit import package_bits

            recipe_bits = package_bits(unit, _ROOT_NAMES[task.file_id], dict(opts.recipe),
                                       opts.attention if task.is_attention else "original")
        hidden = dict(task.io.inputs)["hidden"] if task.is_attention else None
        tokens = hidden[-1] * hidden[-2] if hidden else None
        module = block_module(unit, opts.attention if task.is_attention else "original", tokens)
        # A rewritten attention block holds its own copy of the weights: drop the original before
        # converting (SDXL's ten-layer block is 1.4 GB in fp32; two copies of it would be 2.8 GB).
        del unit
        inputs = example_inputs(task.io, seed=opts.seed)
        result = convert_module(module, task.io, opts, Path(task.dest), metadata=task.metadata,
                                description=task.description, inputs=inputs, recipe_bits=recipe_bits)
        db = None
        if opts.check:
            from snapbench.converters.checks import check_prediction

            db = check_prediction(Path(task.dest), module, inputs, task.io)
        return TaskResult(task.file_id, result, check_psnr_db=db)
    except Exception as e:  # noqa: BLE001 - reported per block; the run goes on and exits non-zero
        where = traceback.extract_tb(e.__traceback__)[-1]
        detail = f"{type(e).__name__}: {first_line(e)}"
        return TaskResult(task.file_id, None, error=f"{detail} (at {Path(where.filename).name}:{where.lineno})")
