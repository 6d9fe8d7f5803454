"""Where evolution's per-sample scores are kept and computed.

A score depends on the architecture, the weights (the checkpoint), the evaluator and the sample, nothing
else: evaluations are deterministic (seeded noise, eval mode). So each (architecture, sample) is computed
once per checkpoint and reused by every later decision that asks for it (the current architecture is
always the previous decision's winner; an A+ may restore an architecture seen before). Training steps
change the weights: `use_checkpoint` with the new folder drops every score, and all are recomputed.

What is missing is computed as `ScoreTask`s: candidates that need the same samples go together, as many
per task as the evaluator's batch holds and split over the executor's slots.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from snapbench.evolution.evaluators import EvalConfig
from snapbench.evolution.executors import Executor, ScoreTask, Task
from snapbench.specs.arch_spec import ArchSpec

R = TypeVar("R")


@dataclass
class Counts:
    """Sample scores computed (images generated) and reused from earlier decisions."""

    computed: int = 0
    reused: int = 0


def spec_key(spec: ArchSpec) -> str:
    """What a score depends on in a spec: the blocks' choices (names and notes are not run)."""
    return json.dumps(spec.to_dict()["stages"], sort_keys=True)


class Scorer:
    def __init__(self, evaluator: EvalConfig, executor: Executor, checkpoint: str, *, progress: bool = False) -> None:
        self.evaluator = evaluator
        self.executor = executor
        self.total = evaluator.sample_count()
        self.checkpoint = checkpoint
        self.progress = progress
        self._scores: dict[str, np.ndarray] = {}  # [total], NaN where not computed yet
        self._before: dict[str, int] = {}  # samples each spec had when the current count began
        self._asked: dict[str, int] = {}  # the most samples asked of each spec since then
        self._computed = 0

    def use_checkpoint(self, checkpoint: str) -> None:
        """New weights: no score computed on the old ones is valid any more."""
        if checkpoint != self.checkpoint:
            self.checkpoint = checkpoint
            self._scores.clear()
            self._before.clear()
            self._asked.clear()

    def take_counts(self) -> Counts:
        """What was computed and reused since the last call."""
        reused = sum(min(self._before.get(k, 0), n) for k, n in self._asked.items())
        out = Counts(self._computed, reused)
        self._computed = 0
        self._asked.clear()
        self._before = {k: int(np.count_nonzero(~np.isnan(v))) for k, v in self._scores.items()}
        return out

    def scores(self, specs: Sequence[ArchSpec], n: int, what: str = "") -> list[np.ndarray]:
        """Each spec's scores on samples 0 .. n-1, computing only those not computed before."""
        n = min(n, self.total)
        keys = [spec_key(s) for s in specs]
        todo: dict[tuple[int, ...], list[tuple[str, ArchSpec]]] = {}
        for key, spec in zip(keys, specs):
            row = self._scores.setdefault(key, np.full(self.total, np.nan))
            self._asked[key] = max(self._asked.get(key, 0), n)
            missing = tuple(int(i) for i in np.flatnonzero(np.isnan(row[:n])))
            group = todo.setdefault(missing, []) if missing else None
            if group is not None and all(k != key for k, _ in group):
                group.append((key, spec))
        tasks: list[ScoreTask] = []
        owners: list[tuple[list[str], tuple[int, ...]]] = []
        for missing, group in todo.items():
            per_task = max(1, min(math.ceil(len(group) / self.executor.slots),
                                  self.evaluator.batch // len(missing)))
            for start in range(0, len(group), per_task):
                part = group[start:start + per_task]
                tasks.append(ScoreTask(self.checkpoint, tuple(s.to_dict() for _, s in part), missing, self.evaluator))
                owners.append(([k for k, _ in part], missing))
        for (part_keys, missing), result in zip(owners, map_tasks(tasks, self.executor, self.progress, what)):
            for key, values in zip(part_keys, result):
                self._scores[key][list(missing)] = values
            self._computed += len(part_keys) * len(missing)
        return [self._scores[k][:n].copy() for k in keys]

    def known(self, specs: Sequence[ArchSpec]) -> np.ndarray:
        """[len(specs), total]: the scores computed so far on the current weights (NaN where none)."""
        return np.stack([self._scores.get(spec_key(s), np.full(self.total, np.nan)) for s in specs])

    def quality(self, spec: ArchSpec, what: str = "") -> float:
        """The mean score over every sample: the evaluator's quality of `spec`."""
        return float(self.scores([spec], self.total, what)[0].mean())


def map_tasks(tasks: Sequence[Task[R]], executor: Executor, progress: bool, what: str) -> list[R]:
    """executor.map with a progress bar (when there is more than one task to wait for)."""
    if not progress or len(tasks) <= 1:
        return executor.map(tasks)
    from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn

    from snapbench.console import err
    from snapbench.progress_log import label_column, make_progress

    with make_progress(f"evolve {what}", label_column(what, "evolve"), BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("", total=len(tasks))
        return executor.map(tasks, on_done=lambda: bar.update(task, advance=1))

