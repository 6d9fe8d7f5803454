"""Where blocks are cut: run the elastic UNet once and capture every block's inputs, output and cost.

The run happens on PyTorch's meta device, so even SD-v1.5 at batch 2 is cut in a fraction of a second
without allocating weights; it also matters for counting: on meta, attention decomposes into bmm ops
that FlopCounterMode sees, whereas CPU's fused scaled_dot_product_attention kernel goes uncounted. MACs come from torch's FlopCounterMode (FLOPs / 2), which counts
the attention matmuls too; they are also reported apart so BK-SDM's hook-based figures can be matched.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from snapbench.blocks.signature import Signature, make_signature, unique_params
from snapbench.model.elastic_unet import ElasticUNet
from snapbench.model.size_bound import check_activations, check_input_elements, limits_lifted
from snapbench.model.units import BlockUnit, ResnetUnit
from snapbench.settings import InputShapes  # re-exported: callers import it from here too
from snapbench.specs.layout import TEXT_TIME_IDS, text_embeds_dim

# aten ops that are the attention score / value matmuls (bmm on the math path, fused SDPA kernels else)
_ATTENTION_OPS = ("bmm", "baddbmm", "_scaled_dot_product")


@dataclass
class CutBlock:
    unit: BlockUnit
    inputs: tuple[tuple[str, tuple[int, ...]], ...]
    output: tuple[int, ...]
    params: int
    macs: int
    attention_macs: int
    signature: Signature | None  # None: removed without anything left to run
    outputs: tuple[tuple[str, tuple[int, ...]], ...] | None = None  # a DiT block's named outputs

    @property
    def block_id(self) -> str:
        return self.unit.block_id

    @property
    def kind(self) -> str:
        return self.unit.slot.kind  # CA | RB | aux


def example_inputs(model: ElasticUNet, shapes: InputShapes, *, device: str | torch.device = "meta",
                   dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """(sample, timestep, context), and for SDXL-class UNets (text_time) the pooled text embedding and the
    size / crop ids after them: the elastic UNet's positional inputs."""
    cfg = model.config
    c_in = shapes.in_channels or cfg.in_channels
    ctx = shapes.context_dim or cfg.cross_attention_dim
    if isinstance(ctx, (list, tuple)):
        ctx = ctx[0]
    sample_shape = (shapes.batch, c_in, shapes.latent, shapes.latent)
    context_shape = (shapes.batch, shapes.tokens, ctx)
    timestep = torch.full((shapes.batch,), 981.0, device=device)
    width = text_embeds_dim(cfg)  # SDXL-class: text_embeds [B, width] and time_ids [B, 6] after the context
    added_shapes = [] if width is None else [(shapes.batch, width), (shapes.batch, TEXT_TIME_IDS)]
    if torch.device(device).type == "meta":  # shapes only: nothing to draw (or allocate)
        return (torch.empty(sample_shape, dtype=dtype, device=device), timestep,
                torch.empty(context_shape, dtype=dtype, device=device),
                *(torch.empty(s, dtype=dtype, device=device) for s in added_shapes))
    for shape in (sample_shape, context_shape):
        check_input_elements(shape, f"{model.spec.name} at latent {shapes.latent}, {shapes.tokens} tokens")
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(*sample_shape, generator=g, dtype=dtype)
    context = torch.randn(*context_shape, generator=g, dtype=dtype)
    inputs = [sample.to(device), timestep, context.to(device)]
    if width is not None:
        inputs.append(torch.randn(shapes.batch, width, generator=g, dtype=dtype).to(device))
        # 1024x1024 original and target size, no crop: what SDXL pipelines pass by default
        ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]], dtype=dtype).repeat(shapes.batch, 1)
        inputs.append(ids.to(device))
    return tuple(inputs)


def cut_blocks(model: ElasticUNet, shapes: InputShapes = InputShapes(), *, precision: str = "fp16",
               attention: str = "original") -> list[CutBlock]:
    """Every block of the model in execution order, with shapes, params, MACs and signature.

    `model` may hold real weights; it is cut on a meta twin either way (see the module docstring). What a
    cut finds depends only on the architecture (config and spec), the shapes, the precision, the attention
    and the size limits, so a process that cuts the same again (a report after a profile, evolution's
    repeated candidates, the test suite) gets it from `_CUTS` instead of running the meta forward again.
    """
    key = _cut_key(model, shapes, precision, attention)
    if key is None:
        found = _cut(model, shapes, precision, attention)
    elif key in _CUTS:
        found = _CUTS[key]
        _CUTS.move_to_end(key)
    else:
        found = _CUTS[key] = _cut(model, shapes, precision, attention)
        while len(_CUTS) > _CUTS_KEPT:
            _CUTS.popitem(last=False)
    # The caller's own units (with their weights), not the meta twin's; new CutBlocks each time.
    blocks = []
    for (block_id, named, out, params, macs, attn, sig), real in zip(found, model.units):
        assert block_id == real.block_id
        blocks.append(CutBlock(real, named, out, params, macs, attn, sig))
    return blocks


# What a cut found, per architecture and settings: (block id, inputs, output, params, MACs, attention MACs,
# signature) per block, all immutable. Most recently used last; the oldest dropped past _CUTS_KEPT.
_FoundBlock = tuple[str, tuple[tuple[str, tuple[int, ...]], ...], tuple[int, ...], int, int, int, Signature | None]
_CutFound = tuple[_FoundBlock, ...]
_CUTS: OrderedDict[tuple[str, ...], _CutFound] = OrderedDict()
_CUTS_KEPT = 64


def _cut_key(model: ElasticUNet, shapes: InputShapes, precision: str, attention: str) -> tuple[str, ...] | None:
    """What determines a cut, as text; None (not remembered) if the config or spec does not serialize."""
    try:
        config = json.dumps(dict(model.config), sort_keys=True)
        spec = json.dumps(model.spec.to_dict(), sort_keys=True)
    except (TypeError, ValueError):
        return None
    dtype = str(next(model.parameters()).dtype)
    return (type(model).__qualname__, config, spec, repr(shapes), precision, attention, dtype, str(limits_lifted()))


def _cut(model: ElasticUNet, shapes: InputShapes, precision: str, attention: str) -> _CutFound:
    if next(model.parameters()).device.type != "meta":
        model = _meta_twin(model)
    device = torch.device("meta")
    was_training = model.training
    model.eval()
    what = f"{model.spec.name} at latent {shapes.latent}, batch {shapes.batch}, {shapes.tokens} tokens"
    try:
        with torch.no_grad():
            inputs = example_inputs(model, shapes, device=device, dtype=next(model.parameters()).dtype)
            with FlopCounterMode(display=False) as counter:
                record = CountingRecord(counter)
                # the largest activation at these shapes, refused before any real run would allocate it
                check_activations(lambda: model(*inputs, record=record), what)
    finally:
        model.train(was_training)

    found: list[_FoundBlock] = []
    for (unit, args, out), (total, attn) in zip(record, record.macs):
        named = tuple((n, tuple(a.shape)) for n, a in zip(unit.input_names, args))
        if not unit.has_compute:
            found.append((unit.block_id, named, tuple(out.shape), 0, 0, 0, None))
            continue
        params = _block_params(unit)
        sig = make_signature(unit, named, tuple(out.shape), precision=precision, attention=attention)
        found.append((unit.block_id, named, tuple(out.shape), params, int(total), int(attn), sig))
    return tuple(found)


class CountingRecord(list):
    """A recording forward's `record` (one `(unit, inputs, output)` per unit) that also counts each unit's
    MACs, read off a FlopCounterMode's running totals as the unit is appended: between two units a forward
    runs nothing FlopCounterMode counts (only the units' own convolutions and matmuls are), so the difference
    is the unit's own. One forward instead of that forward plus each unit run again alone."""

    def __init__(self, counter: FlopCounterMode) -> None:
        super().__init__()
        self.counter = counter
        self.macs: list[tuple[int, int]] = []  # per unit: (MACs, attention MACs)
        self._before: dict[object, int] = {}

    def append(self, item: tuple) -> None:
        now = dict(self.counter.get_flop_counts().get("Global", {}))
        flops = {op: n - self._before.get(op, 0) for op, n in now.items()}
        self._before = now
        attention = sum(v for op, v in flops.items() if any(o in str(op) for o in _ATTENTION_OPS))
        self.macs.append((sum(flops.values()) // 2, attention // 2))  # FLOPs / 2, as BK-SDM counts MACs
        super().append(item)


def _meta_twin(model: ElasticUNet) -> ElasticUNet:
    """The same architecture on the meta device (weights are irrelevant to shapes and counts)."""
    from snapbench.model.loading import meta_unet

    return ElasticUNet(meta_unet(dict(model.config), model.spec.name), model.spec)


def _block_params(unit: BlockUnit) -> int:
    if isinstance(unit, ResnetUnit) and unit.removed:
        return unique_params(unit.resnet.conv_shortcut)
    return unique_params(unit)
