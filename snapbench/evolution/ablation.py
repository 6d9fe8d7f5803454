"""Single-block ablation: the quality lost when one CA or RB block is removed, block by block (the
paper's Fig. 4 claim, as a table: compare a normally trained model with a robust-trained one).

Each block runs as removed through `disabled` on the model's own weights, from the same starting noise
as the full model, so `quality_drop = full quality - quality without the block` isolates the block.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from snapbench.backbones import backbone_for
from snapbench.evolution.evaluators import EvalConfig
from snapbench.evolution.executors import EvalTask, Executor
from snapbench.evolution.latency_costs import BlockPriceTable
from snapbench.json_types import JSONObject
from snapbench.specs.arch_spec import ArchSpec


@dataclass(frozen=True)
class AblationRow:
    model: str
    id: str
    stage: str
    kind: str
    latency_saved_ms: float | None  # None without a cost model
    latency_backend: str | None
    quality: float
    quality_drop: float  # full model's quality minus this one's: > 0 means the block mattered
    accuracy: float | None

    def to_dict(self) -> JSONObject:
        return asdict(self)


@dataclass(frozen=True)
class Ablation:
    model: str
    full_quality: float
    full_accuracy: float | None
    latency_ms: float | None
    rows: list[AblationRow]


def ablate(model: str | Path, evaluator: EvalConfig, executor: Executor, *, cost: BlockPriceTable | None = None,
           spec: ArchSpec | None = None, blocks: list[str] | None = None,
           on_done: Callable[[], None] | None = None) -> Ablation:
    """Evaluate the model, then the model without each running CA / RB block (or only `blocks`)."""
    from snapbench.backbones import resolve_model

    spec = spec or resolve_model(model).spec
    evaluator.check(spec)
    ref = str(Path(str(model)).resolve()) if Path(str(model)).is_dir() else str(model)
    slots = [s for s in backbone_for(spec).removable(spec) if spec.choice(s).keep]
    if blocks is not None:
        slots = [s for s in slots if s.block_id in blocks or s.file_id in blocks]
    tasks = [EvalTask(ref, None, (), evaluator)] + [EvalTask(ref, None, (s.block_id,), evaluator) for s in slots]
    results = executor.map(tasks, on_done=on_done)
    full = results[0]
    rows = []
    for s, q in zip(slots, results[1:]):
        saved = backend = None
        if cost is not None:
            b = cost.price_of(s, spec.choice(s))
            saved, backend = b.kept_ms - b.removed_ms, b.backends[0]
        rows.append(AblationRow(str(model), s.block_id, s.stage, s.kind, saved, backend, q.quality,
                                full.quality - q.quality, q.details.get("accuracy")))
    return Ablation(str(model), full.quality, full.details.get("accuracy"),
                    cost.latency(spec) if cost is not None else None, rows)
