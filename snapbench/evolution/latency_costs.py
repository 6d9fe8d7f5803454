"""What a candidate architecture costs on the phone, as a sum of dictionary lookups.

Evolution prices thousands of candidates, so nothing is converted or estimated per candidate. Because a
removed block is the identity (or its shortcut projection) and a copy keeps its original's output shape,
no block's input shapes depend on which other blocks run: every block has exactly three possible costs,

    kept     the block as it is (signature of the full model's block),
    removed  0, or its 1x1 shortcut projection alone ("RB-shortcut") for a ResNet that changes channels,
    copy     one weight copy run after it (an up-stage ResNet's copy is C_out -> C_out, no skip),

plus the auxiliary blocks, which every candidate runs. These are read once, from three variants of the
spec (all kept, all removed, all copied once), through either
- `snapbench.latency.profile_model` (what `block_latencies` runs: the latency table for --device, with
  estimates filled in for the signatures the table lacks, each labelled with its backend; the filled
  table is kept, so the three variants share their rows and a second run estimates nothing), or
- any `LatencySource` (`ms(signature_key) -> (ms, backend)`), e.g. a `FixedTable` for tests.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, NotRequired, Protocol, TypedDict

from snapbench.backbones import backbone_for
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSON, JSONObject
from snapbench.specs.arch_spec import ArchSpec, BlockChoice
from snapbench.specs.layout import Slot
from snapbench.specs.variants import Variant
from snapbench.user_files import read_user_text

if TYPE_CHECKING:  # heavy (torch): the types only
    from snapbench.devices.catalog import Device
    from snapbench.latency.model_latency import BlockLatency, ProfileRun
    from snapbench.latency.table import LatencyTable, Settings
    from snapbench.model.loading import ModelSource


class LatencySource(Protocol):
    def ms(self, signature_key: str) -> tuple[float, str]:
        """Latency in ms of one block signature and the backend it came from."""


@dataclass(frozen=True)
class FixedTable:
    """A fixed signature -> ms table (tests, or a CSV with `signature` and `latency_ms` columns)."""

    rows: Mapping[str, float]
    backend: str = "fixed"
    name: str = "fixed table"

    def ms(self, signature_key: str) -> tuple[float, str]:
        if signature_key not in self.rows:
            raise SnapbenchError(f"{self.name}: no latency for signature {signature_key}")
        return float(self.rows[signature_key]), self.backend

    @classmethod
    def from_csv(cls, path: str | Path) -> FixedTable:
        p = Path(path)
        reader = list(csv.DictReader(read_user_text(p, "latency table").splitlines()))
        if not reader or not {"signature", "latency_ms"} <= set(reader[0]):
            raise SnapbenchError(f"{p}: a fixed latency table needs 'signature' and 'latency_ms' columns")
        return cls({r["signature"]: float(r["latency_ms"]) for r in reader}, reader[0].get("backend") or "fixed",
                   str(p))


class BlockPricesDict(TypedDict):
    """A `BlockPrices` as saved in an evolution run's state (backends as a list)."""

    block_id: str
    stage: str
    kind: str
    kept_ms: float
    removed_ms: float
    copy_ms: float
    backends: list[str | None]


class PriceTableDict(TypedDict):
    """`BlockPriceTable.to_dict()`: the table as an evolution run's state keeps it, so a resumed run prices
    nothing again."""

    device: str
    aux_ms: float
    aux_backends: list[str]
    source: str
    settings: JSONObject
    blocks: list[BlockPricesDict]
    variant_blocks: NotRequired[dict[str, list[BlockPricesDict]]]


@dataclass(frozen=True)
class BlockPrices:
    block_id: str  # "CA[Up-1, 2]"
    stage: str
    kind: str  # CA | RB
    kept_ms: float
    removed_ms: float  # 0.0, or the shortcut projection's cost
    copy_ms: float
    backends: tuple[str, str | None, str]  # where kept / removed / copy came from (None: costs nothing)


@dataclass(frozen=True)
class BlockPriceTable:
    """Every removable block's price in each state (kept, removed, copied) on one device, plus the
    auxiliary blocks': a candidate's latency is a sum of lookups. (The estimator in
    snapbench.profilers.estimate is the cost model; this only reads its, or a table's, figures.)"""

    device: str
    aux_ms: float  # conv_in, time embedding, samplers, conv_out: every candidate runs them
    aux_backends: tuple[str, ...]
    blocks: Mapping[str, BlockPrices]
    source: str  # what produced the numbers, for reports
    settings: Mapping[str, JSON] = field(default_factory=dict)

    # Swapped blocks (evolve --moves): per variant (variant_key), every block of its kind priced as that
    # variant; filled on demand (with_variants) as evolution meets new variants, and saved with the run.
    variant_blocks: Mapping[str, Mapping[str, BlockPrices]] = field(default_factory=dict)

    def price_of(self, slot: Slot, choice: BlockChoice) -> BlockPrices:
        if choice.variant.is_default:
            return self.blocks[slot.block_id]
        try:
            return self.variant_blocks[variant_key(choice.variant)][slot.block_id]
        except KeyError:
            raise SnapbenchError(f"{slot.block_id} as {variant_key(choice.variant)}: not priced yet "
                                 "(price it with with_variants first)") from None

    def missing_variants(self, spec: ArchSpec) -> list[tuple[str, Variant]]:
        """(kind, variant) pairs `spec` runs that this table has no prices for."""
        out: dict[str, tuple[str, Variant]] = {}
        for slot in backbone_for(spec).removable(spec):
            v = spec.choice(slot).variant
            key = variant_key(v)
            if not v.is_default and slot.block_id not in self.variant_blocks.get(key, {}):
                out[key] = (slot.kind, v)
        return list(out.values())

    def with_variants(self, spec: ArchSpec, costs: Callable[[ArchSpec], BlockPriceTable]) -> BlockPriceTable:
        """This table plus prices for every variant `spec` runs that it lacks: per variant, the model with
        every block of that kind swapped for it is priced by `costs` (new signatures estimated, labelled)."""
        missing = self.missing_variants(spec)
        if not missing:
            return self
        extra = dict(self.variant_blocks)
        for kind, v in missing:
            slots = [s for s in backbone_for(spec).removable(spec) if s.kind == kind]
            swapped = spec.with_choices(spec.name, {(s.stage, s.name): replace(spec.choice(s), variant=v)
                                                    for s in slots})
            priced = costs(swapped)
            extra[variant_key(v)] = {s.block_id: priced.price_of(s, swapped.choice(s)) for s in slots}
        return replace(self, variant_blocks=extra)

    def _parts(self, spec: ArchSpec) -> Iterable[tuple[float, str | None]]:
        yield self.aux_ms, None
        for slot in backbone_for(spec).removable(spec):
            c = spec.choice(slot)
            b = self.price_of(slot, c)
            yield (b.kept_ms, b.backends[0]) if c.keep else (b.removed_ms, b.backends[1])
            if c.copies:
                yield c.copies * b.copy_ms, b.backends[2]

    def latency(self, spec: ArchSpec) -> float:
        """One UNet step of this candidate, in ms."""
        return sum(ms for ms, _ in self._parts(spec))

    def backend(self, spec: ArchSpec) -> str:
        """Where the candidate's figure came from: one backend, or several joined by '+'."""
        used = set(self.aux_backends)
        used.update(be for ms, be in self._parts(spec) if be and ms > 0)
        return "+".join(sorted(used)) or "-"

    def floor(self, spec: ArchSpec) -> float:
        """The least any candidate can cost: every removable block removed."""
        return self.latency(remove_all(spec))

    def to_dict(self) -> PriceTableDict:
        def rows(blocks: Mapping[str, BlockPrices]) -> list[BlockPricesDict]:
            return [{"block_id": b.block_id, "stage": b.stage, "kind": b.kind, "kept_ms": b.kept_ms,
                     "removed_ms": b.removed_ms, "copy_ms": b.copy_ms, "backends": list(b.backends)}
                    for b in blocks.values()]

        d: PriceTableDict = {"device": self.device, "aux_ms": self.aux_ms,
                             "aux_backends": list(self.aux_backends), "source": self.source,
                             "settings": dict(self.settings), "blocks": rows(self.blocks)}
        if self.variant_blocks:
            d["variant_blocks"] = {k: rows(v) for k, v in self.variant_blocks.items()}
        return d

    @classmethod
    def from_dict(cls, d: PriceTableDict) -> BlockPriceTable:
        def blocks(rows: list[BlockPricesDict]) -> dict[str, BlockPrices]:
            return {b["block_id"]: BlockPrices(b["block_id"], b["stage"], b["kind"], b["kept_ms"], b["removed_ms"],
                                               b["copy_ms"], _backends(b["backends"])) for b in rows}

        return cls(d["device"], d["aux_ms"], tuple(d["aux_backends"]), blocks(d["blocks"]), d["source"],
                   d.get("settings", {}), {k: blocks(v) for k, v in d.get("variant_blocks", {}).items()})


def _backends(saved: list[str | None]) -> tuple[str, str | None, str]:
    """A saved row's (kept, removed, copy) backends; only the removed state may cost nothing (None)."""
    kept, removed, copy = saved
    if kept is None or copy is None:
        raise SnapbenchError(f"a saved price row has backends {saved}; only the removed state may be null")
    return kept, removed, copy


def variant_key(v: Variant) -> str:
    """A variant's key in `variant_blocks`: its arch-spec fields as sorted JSON ('{"kv_heads": 1}')."""
    return json.dumps(v.to_dict(), sort_keys=True)


# -- the three variants -----------------------------------------------------------------------------
def _variant(spec: ArchSpec, keep: bool, copies: int, tag: str) -> ArchSpec:
    """`spec` with every elastic block in one state (kept / removed / copied `copies` times), each as the
    variant `spec` runs it (a swapped block is priced as what it is)."""
    changes = {(s.stage, s.name): BlockChoice(s.name, keep, copies, spec.choice(s).variant)
               for s in backbone_for(spec).removable(spec)}
    return spec.with_choices(f"{spec.name}-{tag}", changes, notes=spec.notes)


def remove_all(spec: ArchSpec) -> ArchSpec:
    return _variant(spec, False, 0, "floor")


@dataclass(frozen=True)
class Priced:
    """One block of one variant with its price."""

    block_id: str  # as the variant runs it: "CA[Up-1, 1]" or its copy "CA[Up-1, 1] (copy 1)"
    original_id: str  # the block it is, or copies: "CA[Up-1, 1]" for both
    status: str  # kept | removed | copy
    ms: float
    backend: str | None  # None: the block does not run (costs nothing)
    kind: str  # CA | RB | aux
    stage: str


def _assemble(device: str, variants: Mapping[str, list[Priced]], source: str, settings: Mapping[str, JSON],
              spec: ArchSpec | None = None) -> BlockPriceTable:
    """The table from the three variants' priced blocks; a block `spec` runs as a SnapGen-style variant is
    filed under that variant (variant_blocks), the others as base blocks."""
    kept = {b.block_id: b for b in variants["kept"] if b.status == "kept"}
    removed = {b.block_id: b for b in variants["removed"] if b.status == "removed"}
    copies = {b.original_id: b for b in variants["copied"] if b.status == "copy"}
    aux = [b for b in variants["kept"] if b.kind == "aux"]
    runs_as = {s.block_id: spec.choice(s).variant for s in backbone_for(spec).removable(spec)} if spec else {}
    blocks: dict[str, BlockPrices] = {}
    swapped: dict[str, dict[str, BlockPrices]] = {}
    for bid, k in kept.items():
        if k.kind == "aux":
            continue
        r, c = removed[bid], copies[bid]
        priced = BlockPrices(bid, k.stage, k.kind, k.ms, r.ms, c.ms, (k.backend or "-", r.backend, c.backend or "-"))
        v = runs_as.get(bid, Variant())
        if v.is_default:
            blocks[bid] = priced
        else:
            swapped.setdefault(variant_key(v), {})[bid] = priced
    return BlockPriceTable(device, sum(b.ms for b in aux), tuple(sorted({b.backend for b in aux if b.backend})),
                           blocks, source, dict(settings), swapped)


def costs_from_source(spec: ArchSpec, source: LatencySource, *, device: str = "fixed", latent: int | None = None,
                      batch: int = 2, tokens: int = 77, name: str = "fixed table") -> BlockPriceTable:
    """Price every block state with a LatencySource keyed by the blocks' signature keys."""
    from snapbench.blocks.cut import InputShapes
    from snapbench.model.loading import ModelSource

    latent = latent or int(spec.base_config.get("sample_size", 64))
    shapes = InputShapes(latent=latent, batch=batch, tokens=tokens)
    variants: dict[str, list[Priced]] = {}
    for tag, keep, copies in (("kept", True, 0), ("removed", False, 0), ("copied", True, 1)):
        variant = ModelSource(tag, _variant(spec, keep, copies, tag))
        backbone = backbone_for(variant)
        rows: list[Priced] = []
        for b in backbone.cut(backbone.build(variant, device="meta"), shapes):
            ms, be = source.ms(b.signature.key()) if b.signature is not None else (0.0, None)
            rows.append(Priced(b.block_id, b.unit.slot.block_id, b.unit.status, ms, be, b.kind, b.unit.slot.stage))
        variants[tag] = rows
    return _assemble(device, variants, name, {"latent": latent, "batch": batch, "tokens": tokens}, spec)


def costs_from_table(spec: ArchSpec, dev: Device, *, table: str | Path | None = None, latent: int | None = None,
                     batch: int = 2, tokens: int = 77, attention: str = "original", precision: str = "fp16",
                     compute_units: str = "cpu_and_ne", weight_bits: int = 16, cache: Path | None = None,
                     progress: bool = False, say: Callable[[str], None] | None = None) -> BlockPriceTable:
    """Price every block state from the latency table for `dev` (snapbench.latency), estimating and
    labelling the signatures it lacks. The table with the estimates filled in is cached (`cache`), so a
    second run converts nothing."""
    from snapbench.latency.table import LatencyTable, Settings, merge_into_file
    from snapbench.model.loading import ModelSource

    latent = latent or int(spec.base_config.get("sample_size", 64))
    settings = Settings(compute_units=compute_units, precision=precision, weight_bits=weight_bits,
                        attention=attention, batch=batch, latent=latent, tokens=tokens)
    lt = LatencyTable.load(table) if table is not None else LatencyTable.empty()
    cache_file = None
    if cache is not None:
        key = json.dumps([spec.base_config, settings.table_dict(), tokens], sort_keys=True, default=str)
        cache_file = cache / f"{dev.id}-{hashlib.sha1(key.encode()).hexdigest()[:12]}.csv"
        if cache_file.is_file():
            lt = LatencyTable.load(cache_file).merge(lt)  # the user's table wins over cached estimates
    variants: dict[str, list[Priced]] = {}
    for tag, keep, copies in (("kept", True, 0), ("removed", False, 0), ("copied", True, 1)):
        src = ModelSource(tag, _variant(spec, keep, copies, tag))
        if backbone_for(spec).name == "dit":
            rows, lt = _profile_dit(src, dev, settings, lt, say)
            variants[tag] = rows
            continue
        run = _profile(src, dev, settings, lt, progress, say)
        lt = run.table
        variants[tag] = _priced(run.blocks)
    if cache_file is not None:
        merge_into_file(cache_file, lt)  # under its lock: two evolves may share the cache
    name = f"latency table{' ' + str(table) if table else ''} for {dev.id}"
    return _assemble(dev.id, variants, name, settings.to_dict(), spec)


def _priced(blocks: Iterable[BlockLatency]) -> list[Priced]:
    """Profiled blocks (snapbench.latency BlockLatency) as priced blocks; a copy runs right after the block
    it copies (arch spec semantics), so its original is the last block before it that is not a copy."""
    out: list[Priced] = []
    original = ""
    for b in blocks:
        if b.status != "copy":
            original = b.id
        out.append(Priced(b.id, original, b.status, b.latency_ms, b.backend, b.kind, b.stage))
    return out


def _profile_dit(src: ModelSource, dev: Device, settings: Settings, table: LatencyTable,
                 say: Callable[[str], None] | None) -> tuple[list[Priced], LatencyTable]:
    """A DiT variant's blocks priced by `latency/dit_profile.py` (the table's rows, else labelled estimates), and the
    table with the new rows merged in."""
    from snapbench.converters.options import ConvertOptions
    from snapbench.latency.dit_profile import profile_dit

    opts = ConvertOptions(latent=settings.latent, batch=settings.batch, tokens=settings.tokens,
                          precision=settings.precision, weight_bits=settings.weight_bits, attention=settings.attention)
    run = profile_dit(src, dev, opts, table=table, say=say)
    out: list[Priced] = []
    original = ""
    for b in run.blocks:
        if b["status"] != "copy":
            original = b["id"]
        out.append(Priced(b["id"], original, b["status"], b["latency_ms"], b["backend"], b["kind"], b["stage"]))
    return out, table.merge(run.new_rows)


def _profile(src: ModelSource, dev: Device, settings: Settings, table: LatencyTable, progress: bool,
             say: Callable[[str], None] | None) -> ProfileRun:
    from snapbench.latency.model_latency import profile_model

    return profile_model(src, dev, settings, table=table, backend="estimate", components=("unet",),
                         progress=progress, say=say)
