"""`compress analyze`: how much each layer's palettization costs, and mixed-bit recipes under a size or
latency budget.

    table = analyze_sensitivity(source, SensitivityOptions(latent=32))   # pandas DataFrame, one row per layer
    recipe = choose_bits(table, target_bits=4.5)                         # {layer: bits}
    recipe = choose_bits(table, budget_ms=700, prices=layer_prices(...))  # latency/recipe_price.py

The way Apple's mixed-bit recipes for SDXL on iOS were made (ml-stable-diffusion's
mixed_bit_compression_pre_analysis): palettize one layer at a time and measure the damage. Here the damage
is measured on the layer's own block, so the model never has to be in memory at once:
1. calibration inputs: `samples` denoising inputs (latents ~ N(0, 1), timesteps spread over [1, 999], a
   context and, for SDXL-class UNets, text_embeds ~ N(0, 1) and the time_ids of a square image) run
   through the UNet block by block, each block materialised alone (checkpoint weights, or the seeded
   random ones every conversion uses) and freed after; each block sees what the blocks before it made;
2. for each layer of the block a package would compress (mixed_bit.compressible_layers) and each width
   in BITS: the layer's weight replaced by its k-means palette (palette.py, the same tables the packages
   get) or its fp16 rounding, the block run again, and the PSNR of its output against the fp32 block.
Random context instead of real text-encoder outputs: with random weights nothing better exists; with a
checkpoint the figures are for random prompts' statistics, which the table says.

Choosing the widths (`choose_bits`): every layer starts at fp16; the step that loses the fewest dB of its
block's PSNR per byte saved is taken (one layer one width down), until the compressible weights average
`target_bits` (or fit `budget_bytes`). dB lost are summed over layers as if independent: a heuristic, which
the recipe states; the packages it makes can be measured against the fp16 ones (`convert --check` on a Mac).
Under a latency budget (`budget_ms`) the step is valued per ms saved instead, from each layer's op priced by
the estimator at every width on one device (`LayerPrices`): a layer whose op is compute-bound saves (almost)
no time by reading fewer bytes, so it stays wide unless nothing cheaper is left.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import json
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, TypedDict

import numpy as np
import torch

from snapbench.converters.mixed_bit import compressible_weights, layer_name
from snapbench.errors import SnapbenchError
from snapbench.model.loading import ModelSource
from snapbench.profilers.estimate.stored_weights import palette_bytes

if TYPE_CHECKING:
    import pandas as pd
    from diffusers.configuration_utils import FrozenDict

BITS = (1, 2, 4, 6, 8, 16)
TIME_IDS_PER_IMAGE = 6  # original size, crop offset, target size (SDXL's micro-conditioning)


@dataclass(frozen=True)
class SensitivityOptions:
    latent: int = 32  # calibration latent size (SDXL's own is 128: the PSNR of a block barely depends on it)
    samples: int = 2  # calibration inputs (one batch)
    tokens: int = 77
    seed: int = 0
    widths: tuple[int, ...] = BITS  # the widths measured (fp16 always): fewer make a faster, coarser analysis

    def __post_init__(self) -> None:
        if not self.widths or any(w not in BITS for w in self.widths):
            raise SnapbenchError(f"--widths {','.join(map(str, self.widths))}: choose from {', '.join(map(str, BITS))}")
        if 16 not in self.widths:
            object.__setattr__(self, "widths", tuple(sorted({*self.widths, 16})))
        for name in ("latent", "samples", "tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SnapbenchError(f"--{name} must be a positive integer, got {v!r}")
        if self.samples > 16 or self.latent > 256:
            raise SnapbenchError(f"--samples {self.samples} / --latent {self.latent}: calibration runs every block "
                                 "once per layer and width; at most 16 samples of a 256 latent")


def bytes_at(elements: int, bits: int) -> float:
    """Stored bytes of one weight at `bits` (16: fp16): the indices plus one fp16 table of 2^bits entries,
    as the estimator counts them."""
    return palette_bytes(elements, bits)


def _psnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    from snapbench.converters.ane_attention import psnr

    return min(psnr(ref, got), 200.0)  # identical outputs: +inf, capped so that differences stay finite


def _palettized(weight: torch.Tensor, bits: int) -> torch.Tensor:
    from snapbench.converters.palette import palettize_fp16

    w16 = weight.detach().to(torch.float16)
    if bits == 16:
        return w16.float()
    lut, idx = palettize_fp16(w16.numpy(), bits)
    return torch.from_numpy(lut.astype(np.float32)[idx].reshape(tuple(weight.shape)))


class PricedOn(TypedDict):
    """Where and how a recipe's latency was priced (LayerPrices.describe)."""

    device: str
    label: str  # always "estimated"
    estimator_version: int
    settings: dict[str, str | int]
    fp16_ms: float


class RecipeMade(TypedDict):
    """One recipe `write_analysis` wrote: where, and what it comes to."""

    path: str
    average_bits: float
    bytes: int
    layers_by_bits: dict[str, int]  # bits -> layers at that width
    sum_db_lost: float
    latency_ms: NotRequired[float]  # with --device: the recipe's estimated ms per UNet step


class Analysis(TypedDict):
    """What `compress analyze` wrote (printed with --json)."""

    sensitivity: str  # the CSV's path
    layers: int
    recipes: list[RecipeMade]
    latency: NotRequired[PricedOn]  # with --device: where and how the recipes were priced


def calibration_inputs(config: FrozenDict, opts: SensitivityOptions) -> tuple[torch.Tensor, ...]:
    """(sample, timestep, context, *added) for `opts.samples` denoising steps; context as (B, S, C)."""
    from snapbench.specs.layout import text_embeds_dim

    g = torch.Generator().manual_seed(opts.seed)
    n, lat = opts.samples, opts.latent
    ctx = config.cross_attention_dim
    ctx = int(ctx[0] if isinstance(ctx, (list, tuple)) else ctx)
    sample = torch.randn(n, config.in_channels, lat, lat, generator=g)
    timestep = torch.linspace(999.0, 1.0, n) if n > 1 else torch.tensor([500.0])
    context = torch.randn(n, opts.tokens, ctx, generator=g)
    pooled = text_embeds_dim(config)
    if pooled is None:
        return sample, timestep, context
    side = float(lat * 8)
    time_ids = torch.tensor([[side, side, 0.0, 0.0, side, side]] * n)
    return sample, timestep, context, torch.randn(n, pooled, generator=g), time_ids


PARTIAL_FORMAT = "snapbench-sensitivity-partial"


def _partial_key(source: ModelSource, opts: SensitivityOptions) -> dict[str, object]:
    """What a partial table's rows depend on: the model's weights (converters/cache.source_fingerprint) and
    the calibration options."""
    from dataclasses import asdict

    from snapbench.converters.cache import source_fingerprint
    from snapbench.converters.convert_blocks import weight_files
    from snapbench.versions import tool_versions

    weights = source_fingerprint(source.spec.to_dict(), weight_files(source), opts.seed, tool_versions()["torch"])
    return json.loads(json.dumps({"weights": weights, "options": asdict(opts)}))  # tuples as JSON reads them


def _read_partial(path: Path, key: dict[str, object]) -> dict[str, list[dict[str, str | int | float]]]:
    """{block id: its rows} from an interrupted run of the same model and options; {} if none (or another's:
    it is overwritten as this run goes)."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or doc.get("format") != PARTIAL_FORMAT or doc.get("key") != key:
        return {}
    blocks = doc.get("blocks")
    return blocks if isinstance(blocks, dict) else {}


def analyze_sensitivity(source: ModelSource, opts: SensitivityOptions = SensitivityOptions(),
                        progress: Callable[[str], None] | None = None, *, replay: bool = True,
                        partial: Path | None = None) -> pd.DataFrame:
    """One row per compressible layer: block, stage, elements, and the block's output PSNR (dB) with that
    layer alone palettized at each width in BITS (column psnr_<bits>). `replay`: a layer inside a deep
    transformer block reruns the block from its own transformer layer on (_replaying); False reruns every
    block whole (the same figures, slower; tests compare the two). `partial`: a file that holds each block's
    rows as it is finished; a run of the same model and options starts from what it holds (an interrupted
    full-size analysis resumes)."""
    import pandas as pd

    from snapbench.converters.convert_blocks import cut
    from snapbench.converters.options import ConvertOptions
    from snapbench.converters.unet_chunks import LazyCheckpoint, materialize_unit, run_unit
    from snapbench.model.units import TextTimeEmbeddingUnit, TimeEmbeddingUnit, names_in_root

    meta, blocks = cut(source, ConvertOptions(latent=opts.latent, batch=opts.samples, tokens=opts.tokens,
                                              seed=opts.seed))
    root_names = names_in_root(meta)
    checkpoint = LazyCheckpoint(source) if source.weights_dir is not None or source.copies_file else None
    sample, timestep, context, *added = calibration_inputs(meta.config, opts)
    key = _partial_key(source, opts)
    done = _read_partial(partial, key) if partial is not None else {}
    if partial is not None and progress is not None and (done or partial.exists()):
        progress(f"resuming from {partial}: {len(done)} block(s) measured before" if done else
                 f"{partial} holds rows of other options or weights: starting over (it is overwritten)")
    hidden, temb = sample, None
    skips: list[torch.Tensor] = []
    rows = []
    for b, closes in zip(blocks, meta.closes_skip):
        roots = root_names(b.unit)
        unit = materialize_unit(meta, b.unit, checkpoint, opts.seed)
        time_unit = isinstance(unit, (TimeEmbeddingUnit, TextTimeEmbeddingUnit))  # they change temb, not hidden

        def run(unit: torch.nn.Module = unit) -> tuple[torch.Tensor, torch.Tensor | None]:
            with torch.no_grad():
                return run_unit(unit, hidden, temb, list(skips), context, timestep, added)

        stack = _transformer_layers(unit) if replay else None
        with _recording(stack) as outputs:
            ref_hidden, ref_temb = run()
        ref = ref_temb if time_unit else ref_hidden
        assert ref is not None
        layers = [] if b.block_id in done else compressible_weights(unit)
        rows.extend(done.get(b.block_id, []))  # measured before the interruption: only its reference run again
        if progress is not None and layers:
            progress(f"{b.block_id}: {len(layers)} layers")
        for k, p in layers:
            original = p.data
            row: dict[str, str | int | float] = {"layer": layer_name(roots[k]), "block": b.block_id, "stage": b.unit.slot.stage,
                                   "elements": p.numel()}
            with _replaying(stack, k, outputs):
                for bits in opts.widths:
                    p.data = _palettized(original, bits)
                    h, t = run()
                    row[f"psnr_{bits}"] = round(_psnr(ref, t if time_unit else h), 3)
            p.data = original
            rows.append(row)
            done.setdefault(b.block_id, []).append(row)
        if partial is not None and layers:
            from snapbench.atomic import atomic_write_text

            atomic_write_text(partial, json.dumps({"format": PARTIAL_FORMAT, "key": key, "blocks": done}))
        hidden, temb = ref_hidden, ref_temb
        advance_skips(unit, closes, hidden, skips)
        del unit
    return pd.DataFrame(rows, columns=["layer", "block", "stage", "elements", *(f"psnr_{b}" for b in opts.widths)])


def advance_skips(unit: torch.nn.Module, closes: bool, output: torch.Tensor, skips: list[torch.Tensor]) -> None:
    """The skip stack after `unit` ran (every run popped from a copy of it): the block's own pop, then its
    output pushed where it closes a skip (UNetChunk's order)."""
    from snapbench.model.units import ResnetUnit

    if isinstance(unit, ResnetUnit) and unit.takes_skip:
        skips.pop()
    if closes:
        skips.append(output)


class _Replay(torch.nn.Module):
    """Stands in for a transformer layer before the one whose weight is palettized: its inputs and weights
    are the reference run's, so it returns what it returned there, without the work."""

    def __init__(self, output: object) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: object, **kwargs: object) -> object:
        return self.output


def _transformer_layers(unit: torch.nn.Module) -> tuple[str, torch.nn.ModuleList] | None:
    """(its name in the unit + ".", the list) of a cross-attention block's transformer layers, if over one."""
    for name, m in unit.named_modules():
        if name.endswith("transformer_blocks") and isinstance(m, torch.nn.ModuleList) and len(m) > 1:
            return f"{name}.", m
    return None


@contextlib.contextmanager
def _recording(stack: tuple[str, torch.nn.ModuleList] | None) -> Iterator[dict[int, object]]:
    """Each transformer layer's output in the run inside the block (the reference run)."""
    outputs: dict[int, object] = {}
    handles = [m.register_forward_hook(functools.partial(lambda i, _m, _a, out: outputs.__setitem__(i, out), i))
               for i, m in enumerate(stack[1])] if stack else []
    try:
        yield outputs
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _replaying(stack: tuple[str, torch.nn.ModuleList] | None, weight: str, outputs: dict[int, object]
               ) -> Iterator[None]:
    """While `weight` (a parameter name in the unit) is palettized, the transformer layers before its own
    return their reference outputs (_Replay): a layer in the 8th of SDXL's 10 runs 3 of them. The figures
    are the whole rerun's, bit for bit (the same ops on the same inputs)."""
    prefix, layers = stack if stack else ("", torch.nn.ModuleList())
    first = int(weight[len(prefix):].split(".", 1)[0]) if stack and weight.startswith(prefix) else 0
    kept = [layers[i] for i in range(first)]
    for i in range(first):
        layers[i] = _Replay(outputs[i])
    try:
        yield
    finally:
        for i, m in enumerate(kept):
            layers[i] = m


@dataclass(frozen=True)
class LayerPrices:
    """Each compressible layer's time per UNet step at each width on one device (latency/recipe_price.py
    makes it from the estimator): what a latency budget is spent on. Estimated, never measured."""

    device: str  # catalog id
    device_name: str
    estimator_version: int
    settings: dict[str, str | int]  # what the packages were priced at: attention, latent, batch, tokens, precision
    fp16_ms: float  # per UNet step, every layer fp16
    layer_ms: dict[str, dict[int, float]]  # layer -> {bits: ms per step of the op(s) reading it}

    def cost(self, layer: str, bits: int) -> float:
        got = self.layer_ms.get(layer)
        return got[bits] if got else 0.0  # a layer no package runs (nothing priced) costs nothing

    def total_ms(self, bits: Mapping[str, int]) -> float:
        """The estimator's per-step figure for a recipe: fp16's plus each layer's change (ops price apart)."""
        return self.fp16_ms + sum(self.cost(layer, b) - self.cost(layer, 16) for layer, b in bits.items())

    def fastest(self, layers: Iterable[str]) -> dict[str, int]:
        """The quickest recipe there is: each layer at its quickest width priced. Not always the lowest: v9
        prices a palette's table as one DRAM fetch at latency, which outlasts a small layer's fp16 bytes."""
        return {layer: min(self.layer_ms.get(layer, {16: 0.0}).items(), key=lambda kv: (kv[1], kv[0]))[0]
                for layer in layers}

    def describe(self) -> PricedOn:
        return PricedOn(device=self.device, label="estimated", estimator_version=self.estimator_version,
                        settings=self.settings, fp16_ms=round(self.fp16_ms, 4))


def choose_bits(table: pd.DataFrame, *, target_bits: float | None = None, budget_bytes: float | None = None,
                budget_ms: float | None = None, prices: LayerPrices | None = None) -> dict[str, int]:
    """{layer: bits} under the budget: greedy, fewest dB lost per byte (or per ms, `budget_ms` with `prices`)
    saved first (see the module doc)."""
    if sum(b is not None for b in (target_bits, budget_bytes, budget_ms)) != 1:
        raise SnapbenchError("give one budget: --bits (average bits per weight), --size-mb or --latency-budget-ms")
    elements = dict(zip(table["layer"], table["elements"]))
    total = sum(elements.values())
    if target_bits is not None:
        if not 1 <= target_bits <= 16:
            raise SnapbenchError(f"--bits {target_bits}: an average between 1 and 16 bits per weight")
        budget_bytes = total * target_bits / 8
    widths = tuple(b for b in BITS if f"psnr_{b}" in table.columns)  # what was measured
    if budget_ms is not None:
        if prices is None:
            raise ValueError("a latency budget needs each layer's prices (latency/recipe_price.py)")
        lp = prices

        def cost(layer: str, b: int) -> float:
            return lp.cost(layer, b)

        budget = budget_ms

        def shown(x: float) -> str:
            return f"{x:.3f} ms per step"
    else:
        assert budget_bytes is not None

        def cost(layer: str, b: int) -> float:
            return bytes_at(elements[layer], b)

        budget = budget_bytes

        def shown(x: float) -> str:
            return f"{x / 1e6:.3f} MB"
    # the least any recipe spends: each layer at its cheapest width (for bytes, the lowest)
    floor = sum(min(cost(layer, b) for b in widths) - cost(layer, 16) for layer in elements)
    spent = prices.fp16_ms if budget_ms is not None and prices is not None else sum(cost(la, 16) for la in elements)
    if budget < spent + floor - 1e-9:
        raise SnapbenchError(f"a budget of {shown(budget)} is under the {shown(spent + floor)} that the smallest "
                             f"recipe of {', '.join(map(str, widths))} bits takes; give a larger budget")
    psnr = {row["layer"]: {b: float(row[f"psnr_{b}"]) for b in widths} for row in table.to_dict("records")}
    bits = {layer: 16 for layer in elements}
    heap: list[tuple[float, int, str, int]] = []

    def push(layer: str) -> None:
        """The layer's next step: down to the nearest width that saves anything (a compute-bound op saves no
        time at 8 bits but may at 4), valued at its dB lost per unit saved."""
        now = bits[layer]
        for lower in reversed(widths[:widths.index(now)]):
            saved = cost(layer, now) - cost(layer, lower)
            if saved > 1e-12:
                lost = psnr[layer][now] - psnr[layer][lower]
                heapq.heappush(heap, (max(lost, 0.0) / saved, zlib.crc32(layer.encode()), layer, lower))
                return

    for layer in elements:
        push(layer)
    while spent > budget and heap:
        _, _, layer, lower = heapq.heappop(heap)
        spent -= cost(layer, bits[layer]) - cost(layer, lower)
        bits[layer] = lower
        push(layer)
    return bits


def average_bits(table: pd.DataFrame, bits: dict[str, int]) -> float:
    elements = dict(zip(table["layer"], table["elements"]))
    total = sum(elements.values())
    return sum(bytes_at(n, bits[layer]) for layer, n in elements.items()) * 8 / total if total else math.nan


def recipe_name(spec: str, target_bits: float | None, budget_bytes: float | None, budget_ms: float | None = None,
                device: str = "") -> str:
    if target_bits is not None:
        return f"{spec}-{target_bits:g}bit.json"
    if budget_ms is not None:
        return f"{spec}-{budget_ms:g}ms-{device}.json"
    if budget_bytes is None:
        raise ValueError("a recipe is named after its average bit width, its size budget or its latency budget")
    return f"{spec}-{budget_bytes / 1e6:g}MB.json"


# (widths) -> every compressible layer's ms per step at those widths: latency/recipe_price.py's layer_prices,
# bound by the command to a model, device and settings (converters never import the latency package)
Pricer = Callable[[tuple[int, ...]], LayerPrices]


def write_analysis(source: ModelSource, out_dir: str | os.PathLike[str], opts: SensitivityOptions = SensitivityOptions(), *,
                   targets: tuple[float, ...] = (4.5,), budgets_mb: tuple[float, ...] = (),
                   budgets_ms: tuple[float, ...] = (), pricer: Pricer | None = None,
                   progress: Callable[[str], None] | None = None) -> Analysis:
    """`compress analyze`: the sensitivity table (CSV) and one recipe JSON per budget under `out_dir`.
    Budgets are checked before the (long) measurement (a latency budget against the fastest recipe's
    estimate, which `pricer` makes first); every file is written under a temporary name and renamed, so an
    interrupted run leaves none half-written, and the rows measured so far stay in
    `.<spec>-sensitivity.partial.json` for the same command to resume from (removed once the table is
    written). With a `pricer`, every recipe also states its estimated latency per UNet step."""
    from snapbench.atomic import atomic_write_bytes, check_writable
    from snapbench.backbones import backbone_for
    from snapbench.converters.mixed_bit import RECIPE_FORMAT, compressible_layers, layers_digest
    from snapbench.paths import choose_another

    if not targets and not budgets_mb and not budgets_ms:
        raise SnapbenchError("give at least one budget: --bits, --size-mb or --latency-budget-ms")
    for t in targets:
        if not 1 <= t <= 16:
            raise SnapbenchError(f"--bits {t}: an average between 1 and 16 bits per weight")
    for mb in budgets_mb:
        if not mb > 0:
            raise SnapbenchError(f"--size-mb {mb}: a positive size")
    for ms in budgets_ms:
        if not (ms > 0 and math.isfinite(ms)):
            raise SnapbenchError(f"--latency-budget-ms {ms}: a positive time per UNet step")
    if budgets_ms and pricer is None:
        raise SnapbenchError("--latency-budget-ms needs --device: the phone whose Neural Engine prices the recipe")
    with torch.device("meta"):
        layers = compressible_layers(backbone_for(source).build(source, device="meta"))
    lowest = min(opts.widths)  # every layer at the lowest width measured: the smallest recipe there is
    floor = sum(bytes_at(n, lowest) for n in layers.values())
    for t in targets:
        if t < lowest:
            raise SnapbenchError(f"--bits {t:g} is under the lowest width measured ({lowest} bits); "
                                 f"give --bits {lowest} or more, or add a lower width to --widths")
    for mb in budgets_mb:
        if mb * 1e6 < floor:
            raise SnapbenchError(f"--size-mb {mb:g} is under the {floor / 1e6:.3f} MB that every layer at {lowest} "
                                 "bits takes; give a larger budget")
    # the table and recipes are written after minutes of measuring: an unwritable --out refuses now
    check_writable(Path(out_dir) / f"{source.spec.name}-sensitivity.csv", choose_another(Path(out_dir)))
    prices = pricer(opts.widths) if pricer is not None else None
    if prices is not None:
        fastest = prices.total_ms(prices.fastest(layers))
        for ms in budgets_ms:
            if ms < fastest:
                more = "" if lowest == 1 else ", or add a lower width to --widths"
                raise SnapbenchError(
                    f"--latency-budget-ms {ms:g}: no recipe is that fast on {prices.device_name}; the fastest "
                    f"(each layer at its quickest of {', '.join(map(str, opts.widths))} bits) takes {fastest:.3f} ms "
                    f"per UNet step (fp16: {prices.fp16_ms:.3f} ms; estimated, estimator v{prices.estimator_version}); "
                    f"give --latency-budget-ms {math.ceil(fastest * 1000) / 1000:g} or more{more}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    spec = source.spec.name
    partial = folder / f".{spec}-sensitivity.partial.json"  # rows so far: a rerun resumes from them
    table = analyze_sensitivity(source, opts, progress, partial=partial)
    csv = folder / f"{spec}-sensitivity.csv"
    atomic_write_bytes(csv, table.to_csv(index=False).encode())
    partial.unlink(missing_ok=True)
    made: list[RecipeMade] = []
    written = Analysis(sensitivity=str(csv), layers=len(table), recipes=made)
    if prices is not None:
        written["latency"] = prices.describe()
    fp16_bytes = sum(bytes_at(n, 16) for n in table["elements"])
    budgets: list[tuple[float | None, float | None, float | None]] = [
        *((t, None, None) for t in targets), *((None, mb * 1e6, None) for mb in budgets_mb),
        *((None, None, ms) for ms in budgets_ms)]
    for target, budget, budget_ms in budgets:
        bits = choose_bits(table, target_bits=target, budget_bytes=budget, budget_ms=budget_ms, prices=prices)
        size = sum(bytes_at(n, bits[layer]) for layer, n in zip(table["layer"], table["elements"]))
        lost = sum(float(r["psnr_16"]) - float(r[f"psnr_{bits[r['layer']]}"]) for r in table.to_dict("records"))
        widths: dict[str, int] = {}
        for b in bits.values():
            widths[str(b)] = widths.get(str(b), 0) + 1
        per = "ms" if budget_ms is not None else "byte"
        doc = {
            "format": RECIPE_FORMAT, "version": 1, "model": str(source.ref), "spec": spec,
            "layers_digest": layers_digest(layers),
            "budget": ({"average_bits": target} if target is not None else {"megabytes": budget / 1e6}
                       if budget is not None else {"latency_ms": budget_ms, "device": prices.device if prices else ""}),
            "average_bits": round(average_bits(table, bits), 3), "bytes": int(size), "fp16_bytes": int(fp16_bytes),
            "layers_by_bits": widths,
            "sum_db_lost": round(lost, 2),
            "how": (f"bits per layer chosen greedily, fewest dB of the layer's block output PSNR lost per {per} saved "
                    "first; each layer measured alone (snapbench compress analyze), losses summed as if independent"),
            "calibration": {"latent": opts.latent, "samples": opts.samples, "tokens": opts.tokens, "seed": opts.seed,
                            "inputs": "latents, context and text_embeds ~ N(0, 1), timesteps spread over [1, 999]",
                            "weights": "checkpoint" if source.weights_dir is not None else f"seeded random ({opts.seed})"},
        }
        ms_per_step = round(prices.total_ms(bits), 4) if prices is not None else None
        if prices is not None:
            doc["latency"] = {**prices.describe(), "ms_per_step": ms_per_step}
        doc["layers"] = dict(sorted(bits.items()))
        path = folder / recipe_name(spec, target, budget, budget_ms, prices.device if prices else "")
        atomic_write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())
        entry = RecipeMade(path=str(path), average_bits=round(average_bits(table, bits), 3), bytes=int(size),
                           layers_by_bits=widths, sum_db_lost=round(lost, 2))
        if ms_per_step is not None:
            entry["latency_ms"] = ms_per_step
        made.append(entry)
    return written
