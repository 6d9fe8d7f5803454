"""The UNet of an app pipeline, in one piece or two chunks, built with only the weights it needs.

Memory is the point: a whole SD-v1.5 UNet traced and converted in one go needs 6-13 GB. Here the UNet is
cut on the meta device (nothing allocated), the chunk boundary is chosen from the blocks' weight sizes,
and each chunk is materialised block by block (weights read lazily from the checkpoint's safetensors,
or seeded random per block), traced and converted on its own, then freed before the next.

Where the boundary goes: apple/ml-stable-diffusion's `chunk_mlprogram` (coremltools' `bisect_model`)
walks the ops in program order, adds up the bytes of the weight constants, and cuts after the first
single-output, single-consumer op at which the running total reaches half of all weights. The same rule
is applied here to the blocks in execution order: chunk 1 ends with the block whose weights take the
running total to half. Apple's cut falls inside that same block, so the two differ by less than one
block's weights; what crosses the boundary here is the hidden state, the time embedding and the skips
still waiting for the up stage (Apple's chunks pass the same tensors, named after MIL variables).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from snapbench.blocks.cut import CutBlock
from snapbench.converters.ane_attention import psnr
from snapbench.converters.package_io import PackageIO
from snapbench.converters.runtime import release_freed_memory
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.model.units import (
    AttentionUnit,
    BlockUnit,
    ResnetUnit,
    TextTimeEmbeddingUnit,
    TimeEmbeddingUnit,
    names_in_root,
)

# Apple's names: what the Swift StableDiffusion package feeds the UNet and reads back.
UNET_INPUTS = ("sample", "timestep", "encoder_hidden_states")
UNET_OUTPUT = "noise_pred"
HIDDEN, TEMB = "hidden_states", "time_embedding"


def split_after(params: list[int]) -> int:
    """Index of the last block of chunk 1: the first whose running weight total reaches half of all.

    Chunk 2 is never empty: with everything in the last block, chunk 1 ends one block earlier.
    """
    if len(params) < 2:
        raise SnapbenchError("--chunks 2 needs a UNet with at least two blocks")
    total = sum(params)
    running = 0
    for i, p in enumerate(params):
        running += p
        if running * 2 >= total:
            return min(i, len(params) - 2)
    return len(params) - 2  # unreachable: the running total ends at the total


@dataclass(frozen=True)
class ChunkPlan:
    """One package of the UNet: blocks [start, end) and the tensors that flow in and out."""

    index: int  # 0 for the whole UNet, else 1 or 2
    start: int
    end: int
    skips_in: int  # skip tensors waiting when the chunk starts
    skips_out: int  # skip tensors still waiting when it ends (passed on to the next chunk)
    io: PackageIO

    @property
    def name(self) -> str:
        return "Unet" if self.index == 0 else f"UnetChunk{self.index}"


def plan_chunks(blocks: list[CutBlock], closes_skip: list[bool], chunks: int, *, batch: int,
                sample: tuple[int, ...], context_dim: int, tokens: int,
                added: tuple[tuple[str, tuple[int, ...]], ...] = ()) -> list[ChunkPlan]:
    """`added`: SDXL-class UNets' text_embeds and time_ids, after the context (Apple's SDXL Unet inputs)."""
    ehs = (batch, context_dim, 1, tokens)  # (B, C, 1, S): the layout Apple's Swift package feeds
    inputs = (("sample", sample), ("timestep", (batch,)), ("encoder_hidden_states", ehs), *added)
    out_shape = tuple(blocks[-1].output)
    if chunks == 1:
        return [ChunkPlan(0, 0, len(blocks), 0, 0, PackageIO(inputs, ((UNET_OUTPUT, out_shape),)))]
    cut_at = split_after([b.params for b in blocks]) + 1
    skips = _skips_waiting(blocks, closes_skip, cut_at)
    temb_shape = next(tuple(b.output) for b in blocks if isinstance(b.unit, TimeEmbeddingUnit))
    boundary = ((HIDDEN, tuple(blocks[cut_at - 1].output)), (TEMB, temb_shape),
                *((f"skip_{i}", s) for i, s in enumerate(skips)))
    first = ChunkPlan(1, 0, cut_at, 0, len(skips), PackageIO(inputs, boundary))
    second = ChunkPlan(2, cut_at, len(blocks), len(skips), 0,
                       PackageIO((*boundary, inputs[2]), ((UNET_OUTPUT, out_shape),)))
    return [first, second]


def _skips_waiting(blocks: list[CutBlock], closes_skip: list[bool], end: int) -> list[tuple[int, ...]]:
    """Shapes of the skip tensors pushed and not yet consumed after blocks [0, end)."""
    stack: list[tuple[int, ...]] = []
    hidden: tuple[int, ...] = ()
    for b, closes in zip(blocks[:end], closes_skip[:end]):
        if isinstance(b.unit, ResnetUnit) and b.unit.takes_skip:
            stack.pop()
        if not isinstance(b.unit, (TimeEmbeddingUnit, TextTimeEmbeddingUnit)):
            hidden = tuple(b.output)
        if closes:
            stack.append(hidden)
    return stack


class UNetChunk(nn.Module):
    """Blocks [start, end) of an elastic UNet as one module with Apple's inputs / boundary tensors.

    forward(sample, timestep, encoder_hidden_states) for the first chunk (or the whole UNet);
    forward(hidden_states, time_embedding, skip_0.., encoder_hidden_states) for the second.
    Returns noise_pred for the last chunk, else (hidden_states, time_embedding, skip_0, ...).
    """

    def __init__(self, units: list[BlockUnit], closes_skip: list[bool], plan: ChunkPlan, attention: str,
                 recipe_bits: dict[str, tuple[int, str]] | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(units)  # registered: their weights are the traced module's parameters
        self.closes_skip = list(closes_skip)
        self.first = plan.start == 0
        self.last = plan.index in (0, 2)
        self.skips_in = plan.skips_in
        self.ane_layout = attention != "original"
        # with a mixed-bit recipe: {weight fingerprint: (bits, layer)} of the chunk's recipe layers, read
        # before the attention rewrites (mixed_bit.package_bits); Core ML's weights are matched by content
        self.recipe_bits = recipe_bits or {}

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor | None, ...]:
        added: list[torch.Tensor] = []
        timestep: torch.Tensor | None = None
        temb: torch.Tensor | None = None
        if self.first:
            hidden, timestep, ehs, *added = inputs
            skips: list[torch.Tensor] = []
        else:
            hidden, temb, *rest = inputs
            skips, ehs = list(rest[: self.skips_in]), rest[self.skips_in]
        # The ANE attention reads (B, C, 1, S) as it is; diffusers' own attention wants (B, S, C).
        context = ehs if self.ane_layout else ehs.squeeze(2).transpose(1, 2)
        for unit, closes in zip(self.blocks, self.closes_skip):
            hidden, temb = run_unit(unit, hidden, temb, skips, context, timestep, added)
            if closes:
                skips.append(hidden)
        if self.last:
            return hidden
        return (hidden, temb, *skips)


def run_unit(unit: BlockUnit, hidden: torch.Tensor, temb: torch.Tensor | None, skips: list[torch.Tensor],
             context: torch.Tensor, timestep: torch.Tensor | None,
             added: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One unit in the UNet's execution order: (hidden, time embedding) after it. A decoder ResNet pops
    the skip it takes from `skips`; pushing what a unit leaves for the up stage is the caller's."""
    if isinstance(unit, TimeEmbeddingUnit):
        return hidden, unit(timestep)
    if isinstance(unit, TextTimeEmbeddingUnit):
        return hidden, unit(temb, *added)
    if isinstance(unit, ResnetUnit):
        args = (hidden, skips.pop(), temb) if unit.takes_skip else (hidden, temb)
        return unit.run(*args, active=not unit.removed), temb
    if isinstance(unit, AttentionUnit):
        return unit.run(hidden, context, active=not unit.removed), temb
    return unit(hidden), temb


# -- materialising only a chunk's weights -----------------------------------------------------------------


class SafetensorsHandle(Protocol):
    """safetensors' `safe_open` handle (`user_files.open_safetensors`)."""

    def keys(self) -> list[str]: ...

    def get_tensor(self, name: str) -> torch.Tensor: ...


class LazyCheckpoint:
    """Tensors of a diffusers UNet checkpoint (and an elastic model's copies and variants files), read one
    at a time."""

    def __init__(self, source: ModelSource) -> None:
        from snapbench.model.loading import _weight_files
        from snapbench.user_files import open_safetensors

        self._handles: dict[str, SafetensorsHandle] = {}
        self._where: dict[str, tuple[SafetensorsHandle, str]] = {}  # name -> (file, its name there)
        files = ([("base.", f) for f in _weight_files(source.weights_dir, source.variant)]
                 if source.weights_dir else [])
        if source.copies_file is not None:
            files.append(("copies.", source.copies_file))
        if source.variants_file is not None:
            files.append(("variants.", source.variants_file))
        for prefix, f in files:
            h = open_safetensors(f)
            self._handles[str(f)] = h
            for k in h.keys():  # noqa: SIM118 (safe_open is not iterable)
                self._where[prefix + k] = (h, k)

    def has(self, name: str) -> bool:
        return name in self._where

    def get(self, name: str) -> torch.Tensor:
        if name not in self._where:
            raise SnapbenchError(f"checkpoint lacks {name.split('.', 1)[1]}")
        h, k = self._where[name]
        return h.get_tensor(k).float()  # fp16 checkpoints too: tracing runs in fp32 on the CPU


def unit_weights(root: nn.Module, unit: BlockUnit, checkpoint: LazyCheckpoint) -> dict[str, torch.Tensor]:
    """The unit's state dict (its own names), each tensor read from the checkpoint by its name in `root`."""
    return {k: checkpoint.get(name) for k, name in names_in_root(root)(unit).items()}


def materialize_unit(root: nn.Module, unit: BlockUnit, checkpoint: LazyCheckpoint | None, seed: int) -> BlockUnit:
    """A real-memory copy of one meta-device unit: checkpoint weights, or seeded random ones per block."""
    from snapbench.converters.workers import materialize

    if checkpoint is not None and unit.instance > 0 and not _has_own_weights(root, unit, checkpoint):
        return _copy_of_original(root, unit, checkpoint, seed)
    weights = unit_weights(root, unit, checkpoint) if checkpoint is not None else None
    return materialize(unit, weights, seed)


def _has_own_weights(root: nn.Module, unit: BlockUnit, checkpoint: LazyCheckpoint) -> bool:
    return all(checkpoint.has(name) for name in names_in_root(root)(unit).values())


def _copy_of_original(root: nn.Module, unit: BlockUnit, checkpoint: LazyCheckpoint, seed: int) -> BlockUnit:
    """A weight copy with no copies file (a UNet checkpoint given for an arch spec with copies): made from
    its original's weights the way the elastic UNet makes it (units.copy_resnet, or a deep copy)."""
    import copy

    from snapbench.model.units import copy_resnet

    original = next(u for u in root.units if u.slot is unit.slot and u.instance == 0)
    real = materialize_unit(root, original, checkpoint, seed)
    made = copy.deepcopy(unit)  # meta: structure only
    if isinstance(made, ResnetUnit):
        made.resnet = copy_resnet(real.resnet)
    else:
        made.transformer = copy.deepcopy(real.transformer)
    return made.eval()


CHECK_SIDE = 16


def checked_rewrite(original: nn.Module, rewrite: Callable[[nn.Module], nn.Module], hidden: tuple[int, ...],
                    context: tuple[int, ...], seed: int) -> tuple[nn.Module, float]:
    """`rewrite(original)` and the PSNR of it against diffusers' own attention, in fp32 PyTorch, batch 1.

    The original runs first and its output is kept, so the rewrite may take the original's tensors
    (rewrite_transformer's `consume`): the block's weights are never held twice.
    At most CHECK_SIDE x CHECK_SIDE positions: the rewritten module cuts its queries into the number of
    chunks it has at the real size (fixed_chunks), so at 16 x 16 SD's 64 x 64 blocks still run
    split_einsum_v2's chunked path (8 chunks of 32 instead of 512), the same maths at 1/256 of the cost.
    """
    g = torch.Generator().manual_seed(seed * 7919 + zlib.crc32(str(hidden).encode()))
    x = torch.randn((1, hidden[1], min(hidden[2], CHECK_SIDE), min(hidden[3], CHECK_SIDE)), generator=g)
    ctx = torch.randn((1, *context[1:]), generator=g)
    with torch.no_grad():
        ref = original(x, encoder_hidden_states=ctx, return_dict=False)[0]
        rewritten = rewrite(original)
        got = rewritten(x, ctx)
    return rewritten, psnr(ref, got)


@dataclass
class BuiltChunk:
    module: UNetChunk
    psnr_db: dict[str, float]  # block id -> PSNR of its rewritten attention (empty for "original")


def build_chunk(root: nn.Module, blocks: list[CutBlock], closes_skip: list[bool], plan: ChunkPlan,
                source: ModelSource, attention: str, seed: int, *, min_psnr_db: float = 35.0,
                recipe: tuple[tuple[str, int], ...] = (), in_place: bool = True) -> BuiltChunk:
    """Materialise blocks [start, end) one at a time, rewrite and check their attention, wrap them.
    `recipe`: a mixed-bit recipe's (layer, bits); the chunk records which of its weights get which width.
    `in_place`: ANE attention rewrites take the block's own tensors (False: copies, as before; tests compare)."""
    from snapbench.converters.mixed_bit import merge_bits, package_bits
    from snapbench.converters.whole_unet import _DiffusersCall
    from snapbench.converters.workers import rewrite_attention

    checkpoint = LazyCheckpoint(source) if source.weights_dir is not None or source.copies_file else None
    units: list[BlockUnit] = []
    db: dict[str, float] = {}
    bits: dict[str, tuple[int, str]] = {}
    root_names = names_in_root(root)
    for b in blocks[plan.start:plan.end]:
        unit = materialize_unit(root, b.unit, checkpoint, seed)
        if recipe:  # before the rewrite: the recipe names diffusers' layers
            merge_bits(bits, package_bits(unit, root_names(b.unit), dict(recipe), attention))
        if isinstance(unit, AttentionUnit) and unit.has_compute and attention != "original":
            hidden, ctx = dict(b.inputs)["hidden"], dict(b.inputs)["context"]

            def rewrite(t: nn.Module, tokens: int = hidden[-1] * hidden[-2]) -> nn.Module:
                # in place: the rewritten block takes the original's tensors, never a second copy
                return rewrite_attention(t, attention, tokens, fixed_chunks=True, consume=in_place)

            rewritten, db[b.block_id] = checked_rewrite(unit.transformer, rewrite, hidden, ctx, seed)
            if not db[b.block_id] >= min_psnr_db:
                raise SnapbenchError(f"{b.block_id}: the {attention} rewrite gives {db[b.block_id]:.1f} dB PSNR "
                                     f"against diffusers' attention in PyTorch (< {min_psnr_db:.0f} dB); "
                                     "use --attention original for this model")
            unit.transformer = _DiffusersCall(rewritten)  # the original's weights go with it (or live on in it)
            del rewritten
        units.append(unit)
        del unit
        release_freed_memory()  # the block's transient tensors (the check's activations) go back to the system
    return BuiltChunk(UNetChunk(units, closes_skip[plan.start:plan.end], plan, attention, bits).eval(), db)


def at_batch_one(io: PackageIO, scale: int = 1) -> PackageIO:
    """The interface with batch 1 and latent-sized tensors' height and width divided by `scale`: what a
    chunk is traced at (see trace_scale). The context (B, C, 1, tokens) keeps its tokens."""
    def small(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(shape) == 4 and name != "encoder_hidden_states":
            return (1, shape[1], shape[2] // scale, shape[3] // scale)
        return (1, *shape[1:])

    return PackageIO(tuple((n, small(n, s)) for n, s in io.inputs),
                     tuple((n, small(n, s) if s else s) for n, s in io.outputs), io.int_inputs, io.dtypes)


TRACE_LATENT = 8  # a chunk is traced at this latent size when its graph does not depend on the size


def trace_scale(blocks: list[CutBlock], plan: ChunkPlan, latent: int, attention: str) -> int:
    """How many times smaller than the interface's latent a chunk can be traced (1: at the real size).

    Tracing costs one forward pass, and at SD's 64 x 64 that pass is most of it. Every op of a UNet chunk
    takes its sizes from the tensors (convs, GroupNorm, nearest upsampling, reshapes from `.shape`), so
    the graph traced at 8 x 8 is the one traced at 64 x 64, and coremltools fills in the sizes from the
    package's input shapes. The exception is split_einsum_v2's query chunking, which is fixed at the real
    size here (fixed_chunks): usable when the chunk divides the block's positions and the traced size
    still gives each chunk the same share. Tests check that the package traced small is byte for byte
    the package traced at the real size.
    """
    from snapbench.converters.workers import query_chunk

    if latent <= TRACE_LATENT or latent % TRACE_LATENT:
        return 1
    scale = latent // TRACE_LATENT
    for b in blocks[plan.start:plan.end]:
        for shape in (*(s for _, s in b.inputs), tuple(b.output)):
            if len(shape) == 4 and shape[2] != 1 and (shape[2] % scale or shape[3] % scale):
                return 1
        if attention == "split_einsum_v2" and isinstance(b.unit, AttentionUnit) and b.unit.has_compute:
            hidden = dict(b.inputs)["hidden"]
            tokens = hidden[-1] * hidden[-2]
            chunk = query_chunk(tokens)
            chunks, traced = tokens // chunk, tokens // scale**2
            if tokens % chunk or (chunks > 1 and traced % chunks):
                return 1
    return scale


def chunk_identity(blocks: list[CutBlock], plan: ChunkPlan) -> dict[str, object]:
    """What a chunk package depends on besides the model's weights fingerprint and the options."""
    return {"blocks": [b.unit.file_id for b in blocks[plan.start:plan.end]], "io": plan.io.to_dict(),
            "index": plan.index}


def weight_bytes(blocks: list[CutBlock], plan: ChunkPlan) -> int:
    """fp16 bytes of the chunk's weights (for the disk estimate)."""
    return 2 * sum(b.params for b in blocks[plan.start:plan.end])

