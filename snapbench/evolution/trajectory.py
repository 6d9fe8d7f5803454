"""The evolution trajectory: one CSV row per step of the search, `trajectory.csv` in the evolve output
folder (beside arch.json; `snapbench report --candidate runs/x/arch.json` finds it there).

Columns (format "snapbench.trajectory/1"; units in the names):

    iteration         0 for the starting model, then the iteration that applied the row's action
    phase             start | remove | add | train | final
    action            start, A- (remove a block or one of its copies), A+ (restore a block or add a copy),
                      train (robust-training steps between iterations), final (the published model)
    block             paper-style block id, e.g. "CA[Up-1, 2]" ("" for start / train / final)
    latency_ms        one UNet step of the architecture after the row, on --device, from the latency table
    latency_backend   where that figure came from: iphone | mac | import | estimate | fixed, or several
                      joined by "+" when the blocks' rows came from different backends
    quality           the evaluator's score after the row (toy: mean classifier probability of the asked
                      digit; clip: CLIP score); empty where not evaluated
    quality_delta     change of quality caused by the action (vs the row before)
    latency_delta_ms  change of latency caused by the action
    value             quality_delta / latency_delta_ms: the action's score in Algorithm 1 (removals: the
                      smallest loss per ms saved wins; additions: the largest gain per ms spent)
    train_steps       robust-training steps done so far in this run
    eval_samples      images the row's evaluation generated: for a decision, every candidate's samples in
                      every successive-halving round plus the winner's top-up to all samples (empty in
                      files written before this column existed)
    eval_reused       sample scores the row's evaluation took from earlier ones instead (same weights,
                      same architecture, same sample)
    eval_settled      for a decision, how its ranking was settled (snapbench.evolution.budget): confidence
                      (the leader beat every rival), tie (the rivals left could not beat the leader by
                      more than --eval-tie-margin of quality: the leader, best mean so far, was taken),
                      survivors, all samples, no rival; empty for other rows and in older files
    eval_decided_on   samples per candidate of the round that decided (the winner is then scored on all)

Rows are in the order they happened; latency and quality of the last row are the final model's.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from snapbench.atomic import atomic_write_text
from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject
from snapbench.user_files import read_user_text

TRAJECTORY_FILE = "trajectory.csv"

# A cell of trajectory.csv as read back: a number where the column holds one, None where a number column
# is empty, the text otherwise.
Cell = str | int | float | None


@dataclass(frozen=True)
class TrajectoryRow:
    """One row of trajectory.csv (column meanings above)."""

    iteration: int
    phase: str
    action: str
    block: str
    latency_ms: float
    latency_backend: str
    quality: float | None
    quality_delta: float | None = None
    latency_delta_ms: float | None = None
    value: float | None = None
    train_steps: int = 0
    eval_samples: int | None = None
    eval_reused: int | None = None
    eval_settled: str | None = None
    eval_decided_on: int | None = None

    @classmethod
    def of(cls, iteration: int, phase: str, action: str, block: str, latency_ms: float, latency_backend: str,
           quality: float | None, quality_delta: float | None, latency_delta_ms: float | None,
           train_steps: int, eval_samples: int | None = None, eval_reused: int | None = None,
           eval_settled: str | None = None, eval_decided_on: int | None = None) -> TrajectoryRow:
        """A row with its value (quality_delta / latency_delta_ms) computed where both are known."""
        value = quality_delta / latency_delta_ms if quality_delta is not None and latency_delta_ms else None
        return cls(iteration, phase, action, block, latency_ms, latency_backend, quality, quality_delta,
                   latency_delta_ms, value, train_steps, eval_samples, eval_reused, eval_settled, eval_decided_on)

    def to_dict(self) -> JSONObject:
        return asdict(self)


TRAJECTORY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TrajectoryRow))
_FLOATS = frozenset({"latency_ms", "quality", "quality_delta", "latency_delta_ms", "value"})
_INTS = frozenset({"iteration", "train_steps", "eval_samples", "eval_reused", "eval_decided_on"})
# may be missing from files written before them
_ADDED = frozenset({"eval_samples", "eval_reused", "eval_settled", "eval_decided_on"})


def _cell(v: object) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def trajectory_csv(rows: Iterable[Mapping[str, object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(TRAJECTORY_COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in TRAJECTORY_COLUMNS])
    return buf.getvalue()


def write_trajectory(rows: Iterable[Mapping[str, object]], path: str | Path) -> Path:
    return atomic_write_text(path, trajectory_csv(rows))


def read_trajectory(path: str | Path) -> list[dict[str, Cell]]:
    """Rows with numbers parsed (None where empty): what the report's trajectory chart reads."""
    p = Path(path)
    text = read_user_text(p, "trajectory file")
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in TRAJECTORY_COLUMNS if c not in (reader.fieldnames or ()) and c not in _ADDED]
    if missing:
        raise SnapbenchError(f"{p}: not a snapbench trajectory (missing column {missing[0]})")
    out = []
    for r in reader:
        row: dict[str, Cell] = {}
        for c in TRAJECTORY_COLUMNS:
            v = r.get(c) or ""
            row[c] = (None if v == "" else float(v)) if c in _FLOATS else (int(v) if c in _INTS and v else v)
        out.append(row)
    return out
