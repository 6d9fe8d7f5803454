"""Architecture evolving (SnapFusion 3.1.2, Algorithm 1): where evolution decides.

Each iteration evaluates every action from the current architecture (through an executor) and scores it
by value = d quality / d latency, latency from the per-block price table (the latency table for --device):
- remove phase, while latency > target: apply the A- with the smallest value, i.e. the least quality
  lost per ms saved (several per iteration with `removals_per_iteration`); with `moves` naming swaps
  (moves.py), swapping a block for a cheaper variant competes with removing one on that same value, the
  variant priced from the latency table when first met (its signature estimated on demand, labelled);
- add phase, once under the target: apply the A+ (restore a block or add a copy) with the largest
  value, i.e. the most quality gained per ms spent, among those that keep the target; stop when none
  gains more than `min_gain` per ms;
- between iterations, optionally, `train_steps` robust-training steps on the current architecture;
- after the last decision, optionally, `final_steps` training steps on the final architecture (robust
  unless `final_robust` is off).

Algorithm 1 in the paper is one training loop: robust training runs all the time, an architecture action
is taken every so many steps, and the network trains on after the last action until it converges. Here
that loop is `train_steps` between decisions plus `final_steps` at the end, each a fresh AdamW with the
training's warmup (the architecture changed, so moments of removed blocks mean nothing); the steps are
counted in `train_steps_done` so that a baseline can be given the same number (README, "Evolution").

How much evaluation each decision gets is `eval_budget` (snapbench.evolution.budget): successive halving
over common random numbers by default, every candidate on every sample with `exhaustive`. Per-sample
scores are computed in batches of candidates and reused until training steps change the weights
(snapbench.evolution.scoring). The winner is always scored on every sample, so each trajectory row's
quality is comparable whatever the budget; the row records the images its decision generated.

State is saved atomically after every iteration (out/.evolve/state.json, with the checkpoint it refers
to), so a killed run resumes where it stopped when the same command runs again. The finished folder
holds arch.json + unet/ (+ copies, scheduler, toy prompt encoder): a model `convert`, `profile` and
`report` accept; trajectory.csv (format in trajectory.py); result.json (what --json prints).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import numpy as np

from snapbench.atomic import atomic_write_bytes, atomic_write_text
from snapbench.errors import SnapbenchError
from snapbench.evolution.actions import Action, growing_actions, shrinking_actions
from snapbench.evolution.budget import Decision, EvalBudget, Ties, successive_halving
from snapbench.evolution.evaluators import EvalConfig, Quality
from snapbench.evolution.executors import Executor
from snapbench.evolution.latency_costs import BlockPriceTable, PriceTableDict
from snapbench.evolution.moves import DEFAULT_MOVES, check_moves_apply, parse_moves
from snapbench.evolution.robust_training import TrainConfig
from snapbench.evolution.scoring import Counts, Scorer
from snapbench.evolution.trajectory import TRAJECTORY_FILE, TrajectoryRow, write_trajectory
from snapbench.json_types import JSON, JSONObject, json_int
from snapbench.locks import FOLDER_LOCK, claimed_run_folder
from snapbench.resuming import Flag, differences, flat, mismatch_error
from snapbench.specs.arch_spec import ArchSpec

if TYPE_CHECKING:
    from snapbench.training.checkpoints import Elastic, ModelBundle

WORK_DIR = ".evolve"
STATE_FILE = "state.json"
RESULT_FILE = "result.json"
SCORES_DIR = "scores"  # per decision: every candidate's per-sample scores (numpy .npz)
STATE_FORMAT = "snapbench.evolve/1"


@dataclass(frozen=True)
class EvolveConfig:
    target_ms: float | None = None  # absolute target for one UNet step
    target_fraction: float | None = None  # or a fraction of the starting model's latency
    removals_per_iteration: int = 1
    max_iterations: int = 200
    add_phase: bool = True
    min_gain: float = 0.0  # an A+ must gain more than this much quality per ms spent
    train_steps: int = 0  # robust-training steps between iterations (0: weights stay as given)
    final_steps: int = 0  # training steps of the final architecture after the last decision
    final_robust: bool = True  # Algorithm 1 trains robustly to the end; off: the final net trains whole
    train: TrainConfig = field(default_factory=TrainConfig)
    data: str | None = None  # training data folder for non-toy models
    eval_budget: EvalBudget = field(default_factory=EvalBudget)  # how much evaluation each decision gets
    moves: tuple[str, ...] = DEFAULT_MOVES  # moves.MOVE_NAMES: remove, copy and the swaps

    def __post_init__(self) -> None:
        object.__setattr__(self, "moves", parse_moves(self.moves))
        if (self.target_ms is None) == (self.target_fraction is None):
            raise SnapbenchError("give exactly one of --target-ms and --target-fraction")
        if self.target_ms is not None and self.target_ms <= 0:
            raise SnapbenchError(f"--target-ms must be > 0, got {self.target_ms}")
        if self.target_fraction is not None and not 0 < self.target_fraction <= 1:
            raise SnapbenchError(f"--target-fraction must be in (0, 1], got {self.target_fraction}")
        if self.removals_per_iteration < 1 or self.max_iterations < 1 or self.train_steps < 0 or self.final_steps < 0:
            raise SnapbenchError("removals per iteration and max iterations must be >= 1, train steps and final "
                                 "steps >= 0")

    def target(self, initial_ms: float) -> float:
        if self.target_ms is not None:
            return self.target_ms
        assert self.target_fraction is not None  # __post_init__: exactly one of the two
        return initial_ms * self.target_fraction

    def to_dict(self) -> JSONObject:
        return asdict(self)


class StartingPoint(TypedDict):
    """The starting model as the state records it: what the result compares the final model with."""

    latency_ms: float
    quality: float
    details: JSONObject
    spec: JSONObject


@dataclass
class EvolutionState:
    """Everything a resumed run needs; written after every iteration."""

    settings: JSONObject  # what must match to resume (model, device, target, evaluator, training)
    costs: PriceTableDict  # BlockPriceTable.to_dict(): no conversion or estimation when resuming
    target_ms: float
    floor_ms: float
    iteration: int
    phase: str  # remove | add | done
    spec: JSONObject
    checkpoint: str  # the folder holding the current weights
    latency_ms: float
    quality: float
    initial: StartingPoint
    trajectory: list[JSONObject]  # TrajectoryRow.to_dict()s
    train_steps_done: int = 0
    final_trained: bool = False  # the final architecture's `final_steps` are done (saved with the state)
    seconds: float = 0.0
    evaluations: list[JSONObject] = field(default_factory=list)  # per iteration: samples, seconds, rounds
    format: str = STATE_FORMAT

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / STATE_FILE, json.dumps(asdict(self), indent=1, default=str) + "\n")

    @classmethod
    def load(cls, folder: Path) -> EvolutionState:
        p = folder / STATE_FILE
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise SnapbenchError(f"{p}: line {e.lineno}: not valid JSON ({e.msg}); remove {folder} to start over"
                                 ) from None
        if d.get("format") != STATE_FORMAT:
            raise SnapbenchError(f"{p}: not a snapbench evolution state")
        return cls(**d)


@dataclass(frozen=True)
class EvolutionResult:
    out: Path
    device: str
    latency_source: str
    target_ms: float
    floor_ms: float
    initial_latency_ms: float
    final_latency_ms: float
    initial_quality: float
    final_quality: float
    latency_backend: str
    iterations: int
    train_steps: int
    seconds: float
    arch_spec: JSONObject
    trajectory: list[JSONObject]  # TrajectoryRow.to_dict()s
    eval_budget: str = ""
    eval_samples: int = 0  # images generated by every evaluation of the run (resumed parts included)
    evaluations: list[JSONObject] = field(default_factory=list)  # per iteration: samples, reused, seconds

    def to_dict(self) -> JSONObject:
        d = asdict(self)
        d["out"] = str(self.out)
        return d


@dataclass(frozen=True)
class Scored:
    action: Action
    spec: ArchSpec
    latency_ms: float
    quality: Quality
    quality_delta: float
    latency_delta_ms: float

    @property
    def value(self) -> float:
        return self.quality_delta / self.latency_delta_ms


def evolve(model: str | Path, out: str | Path, config: EvolveConfig, *, evaluator: EvalConfig,
           costs: Callable[[ArchSpec], BlockPriceTable], executor: Executor,
           settings: Mapping[str, JSON] | None = None, progress: bool = True, say: Callable[[str], None] = lambda s: None,
           after_iteration: Callable[[EvolutionState], None] | None = None) -> EvolutionResult:
    """Run (or resume) Algorithm 1 from `model` into `out`.

    `costs(spec)` builds the per-block price table (called only when starting, not when resuming).
    `settings` are extra facts that must match to resume (the device, latency settings). `after_iteration`
    is called after each iteration's state is saved (tests use it to simulate a kill). One run at a time
    per `out` (a second is refused, naming the first's pid)."""
    with claimed_run_folder(out, "evolve") as folder:
        return _evolve(model, folder, config, evaluator=evaluator, costs=costs, executor=executor,
                       settings=settings, progress=progress, say=say, after_iteration=after_iteration)


def _evolve(model: str | Path, out: Path, config: EvolveConfig, *, evaluator: EvalConfig,
            costs: Callable[[ArchSpec], BlockPriceTable], executor: Executor, settings: Mapping[str, JSON] | None,
            progress: bool, say: Callable[[str], None],
            after_iteration: Callable[[EvolutionState], None] | None) -> EvolutionResult:
    work = out / WORK_DIR
    raw = {"model": str(model), "config": config.to_dict(), "evaluator": asdict(evaluator), **dict(settings or {})}
    fingerprint: JSONObject = json.loads(json.dumps(raw, default=str))  # as the state file will hold it
    t0 = time.time()
    if (work / STATE_FILE).is_file():
        st = EvolutionState.load(work)
        adopted = _check_same(st.settings, fingerprint, out)
        prices = BlockPriceTable.from_dict(st.costs)
        scorer = Scorer(evaluator, executor, st.checkpoint, progress=progress)
        _reopen(st, config, say)
        say(f"resuming {out} at iteration {st.iteration} ({st.phase} phase)")
        if adopted:
            st.settings = fingerprint  # from now on a resume checks the settings this run goes on with
        if "config.eval_budget.mode" in adopted:
            say(f"{out} was started before --eval-budget existed (every candidate on every sample); its "
                f"{len(st.trajectory)} trajectory rows are kept and its remaining decisions use "
                f"{config.eval_budget.describe(scorer.total)}")
        elif "config.eval_budget.tie_margin" in adopted and config.eval_budget.tie_margin:
            say(f"{out} was started before --eval-tie-margin existed (no decision stopped at a tie); its "
                f"{len(st.trajectory)} trajectory rows are kept and its remaining decisions use "
                f"{config.eval_budget.describe(scorer.total)}")
    else:
        if out.exists() and any(p.name not in (WORK_DIR, FOLDER_LOCK) for p in out.iterdir()):
            raise SnapbenchError(f"{out}: exists and holds no evolution state; pick another --out")
        scorer = Scorer(evaluator, executor, _initial_checkpoint(model), progress=progress)
        st, prices = _start(model, work, config, evaluator, costs, scorer, fingerprint)
    run = EvolutionRun(st, prices, config, scorer, out, say, costs)
    spent = st.seconds
    try:
        while st.phase != "done":
            if st.iteration >= config.max_iterations:
                # the phase stays as it is: the same command with a higher limit goes on from here
                say(f"stopped after --max-iterations {config.max_iterations}")
                break
            started = time.time()
            run.iteration()
            st.evaluations.append({**run.log, "seconds": round(time.time() - started, 2)})
            st.seconds = spent + time.time() - t0
            st.save(work)
            write_trajectory(st.trajectory, out / TRAJECTORY_FILE)
            if after_iteration is not None:
                after_iteration(st)
        if st.phase == "done" and config.final_steps and not st.final_trained:
            run.final_training()
            st.seconds = spent + time.time() - t0
            st.save(work)
            write_trajectory(st.trajectory, out / TRAJECTORY_FILE)
    finally:
        st.seconds = spent + time.time() - t0
    result = run.finish()
    st.save(work)
    return result


def _reopen(st: EvolutionState, config: EvolveConfig, say: Callable[[str], None]) -> None:
    """Let a run stopped by --max-iterations go on when the limit is raised: its "final" row (written when
    it stopped) is dropped, finish() writes it again at the new end. A state from the version that saved
    such a stop as phase "done" is recognised by its latency still above the target (nothing else ends the
    remove phase there); a stop in the add phase was indistinguishable from its end and stays done."""
    if st.iteration >= config.max_iterations:
        return
    if st.phase == "done" and st.latency_ms > st.target_ms + 1e-9:
        st.phase = "remove"
        say(f"the run stopped at --max-iterations {st.iteration} above the target; going on to "
            f"--max-iterations {config.max_iterations}")
    if st.phase != "done":
        st.trajectory = [r for r in st.trajectory if r["phase"] != "final"]


# Settings added after runs had been started with the version before them. A state without them was made
# by that version and resumes: its decisions so far were exhaustive (the old version knew no other; or,
# a state without eval_budget.tie_margin, halving that never stopped at a tie), and
# the evaluator's batch only groups candidates (a score does not depend on it), and its moves were
# remove and copy (the version before --moves knew no other): such a state resumes only with those; nor
# did its robust training sample variants (train.variant_moves; variant_p is then unused).
ADDED_SETTINGS: dict[str, JSON] = {"config.eval_budget.": None, "evaluator.batch": None,
                                  "config.moves": list(DEFAULT_MOVES), "config.train.variant_moves": [],
                                  "config.train.variant_p": None, "config.final_steps": 0,
                                  "config.final_robust": True}  # prefix: the value it must have now


def _budget_arg(stored: Mapping[str, object]) -> str:
    """--eval-budget as the run was started: exhaustive, auto or the first round's samples."""
    if stored.get("config.eval_budget.mode") == "exhaustive":
        return "exhaustive"
    return str(stored.get("config.eval_budget.first") or "auto")


# `evolve`'s option for each setting a resumed run must keep (the device by its catalog id; the rest no
# option sets: the evaluator's batch, for one).
RESUME_FLAGS = {
    "model": Flag("--model"), "device": Flag("--device"), "table": Flag("--table"),
    "fixed_table": Flag("--fixed-table"), "attention": Flag("--attention"),
    "config.target_ms": Flag("--target-ms"), "config.target_fraction": Flag("--target-fraction"),
    "config.removals_per_iteration": Flag("--removals-per-iteration"), "config.add_phase": Flag("--add", off="--no-add"),
    "config.min_gain": Flag("--min-gain"), "config.train_steps": Flag("--train-steps"),
    "config.final_steps": Flag("--final-steps"), "config.final_robust": Flag("--final-robust", off="--final-normal"),
    "config.train.batch_size": Flag("--batch-size"), "config.train.learning_rate": Flag("--lr"),
    "config.train.skip.ca": Flag("--skip-ca"), "config.train.skip.rb": Flag("--skip-rb"), "config.data": Flag("--data"),
    "config.moves": Flag("--moves"), "config.eval_budget.mode": Flag("--eval-budget", arg=_budget_arg),
    "config.eval_budget.first": Flag("--eval-budget", arg=_budget_arg),
    "config.eval_budget.confidence": Flag("--eval-confidence"),
    "config.eval_budget.tie_margin": Flag("--eval-tie-margin"), "evaluator.name": Flag("--evaluator"),
    "evaluator.samples_per_prompt": Flag("--samples-per-prompt"),
    "evaluator.images_per_prompt": Flag("--samples-per-prompt"), "evaluator.steps": Flag("--eval-steps"),
    "evaluator.guidance": Flag("--guidance"), "evaluator.seed": Flag("--eval-seed"),
    "evaluator.clip_weights": Flag("--clip-weights"), "evaluator.pipeline": Flag("--pipeline"),
    "evaluator.prompts": Flag("--prompts", arg=lambda stored: "<a file of the run's prompts>"),
}


def _check_same(before: Mapping[str, JSON], now: Mapping[str, JSON], out: Path) -> list[str]:
    """Refuse to resume under other settings (one line naming each and the options that resume the run);
    return the settings the run's state predates (adopted)."""
    a, b = flat(before), flat(now)
    adopted = []
    for k in sorted(set(b) - set(a)):
        added = next((v for p, v in ADDED_SETTINGS.items() if k.startswith(p)), ...)
        if added is not ... and (added is None or b.get(k) == added):
            adopted.append(k)
    # max_iterations may be raised to let a stopped run go on
    found = differences(a, b, same=lambda k: k == "config.max_iterations" or k in adopted)
    if found:
        raise mismatch_error(out, found, RESUME_FLAGS, a)
    return adopted


def _start(model: str | Path, work: Path, config: EvolveConfig, evaluator: EvalConfig,
           costs: Callable[[ArchSpec], BlockPriceTable], scorer: Scorer,
           fingerprint: JSONObject) -> tuple[EvolutionState, BlockPriceTable]:
    from snapbench.backbones import backbone_for, resolve_model

    spec = resolve_model(model).spec
    evaluator.check(spec)
    check_moves_apply(config.moves, spec, backbone_for(spec).removable(spec))
    config.eval_budget.rounds(evaluator.sample_count(), f" ({evaluator.describe_samples()})")
    prices = costs(spec).with_variants(spec, costs)
    initial_ms = prices.latency(spec)
    target = config.target(initial_ms)
    floor = prices.floor(spec)
    if target < floor:
        raise SnapbenchError(f"target {target:.3f} ms is below the floor {floor:.3f} ms (every CA and RB block "
                             f"removed; {spec.name} takes {initial_ms:.3f} ms on {prices.device}); "
                             "raise --target-ms / --target-fraction")
    checkpoint = scorer.checkpoint
    quality = scorer.quality(spec, "starting model")
    n = scorer.take_counts().computed
    start_row = TrajectoryRow(0, "start", "start", "", initial_ms, prices.backend(spec), quality, eval_samples=n,
                              eval_reused=0)
    st = EvolutionState(fingerprint, prices.to_dict(), target, floor, 0, "remove", spec.to_dict(), checkpoint,
                        initial_ms, quality,
                        {"latency_ms": initial_ms, "quality": quality, "details": {"samples": scorer.total},
                         "spec": spec.to_dict()}, [start_row.to_dict()], evaluations=[{"iteration": 0, "samples": n}])
    work.mkdir(parents=True, exist_ok=True)
    st.save(work)
    return st, prices


def _initial_checkpoint(model: str | Path) -> str:
    """The input itself when it is a folder (never modified); a preset is loaded from its name."""
    p = Path(str(model))
    return str(p.resolve()) if p.is_dir() else str(model)


@dataclass
class EvolutionRun:
    """One evolution run: its state and everything each step needs, instead of nine arguments per step."""

    state: EvolutionState
    prices: BlockPriceTable
    config: EvolveConfig
    scorer: Scorer  # per-sample scores of architectures on the current weights (holds the evaluator)
    out: Path
    say: Callable[[str], None]
    costs: Callable[[ArchSpec], BlockPriceTable]  # prices variants met on the way (swaps)
    log: JSONObject = field(default_factory=dict)  # this iteration's decision and what it cost
    decision: Decision | None = None  # this iteration's decision (how it was settled goes into its row)

    @property
    def work(self) -> Path:
        return self.out / WORK_DIR

    def spec(self) -> ArchSpec:
        return ArchSpec.from_dict(self.state.spec, source="state")

    def quality(self, spec: ArchSpec, what: str = "") -> float:
        """Quality of `spec` on the current checkpoint, over every sample."""
        return self.scorer.quality(spec, what)

    def counts(self) -> Counts:
        c = self.scorer.take_counts()
        self.log["samples"] = json_int(self.log, "samples") + c.computed
        self.log["reused"] = json_int(self.log, "reused") + c.reused
        return c

    def row(self, phase: str, action: str, block: str, latency: float, backend: str, quality: float | None,
            dq: float | None, dl: float | None, *, decided: bool = False) -> None:
        """One trajectory row; `decided`: the first row of a decision (it gets how the decision was settled)."""
        st, c, d = self.state, self.counts(), self.decision if decided else None
        st.trajectory.append(TrajectoryRow.of(st.iteration, phase, action, block, latency, backend, quality, dq, dl,
                                              st.train_steps_done, c.computed, c.reused,
                                              None if d is None else d.settled,
                                              None if d is None else (d.rounds[-1][0] if d.rounds else 0)).to_dict())

    def score(self, actions: list[Action], what: str, *, removal: bool, want: int = 1) -> list[Scored]:
        """Rank the actions from the current state by Algorithm 1's value within the evaluation budget and
        return the best `want`, best first, each scored on every sample. Actions that do not move latency
        the way the phase needs are dropped (a removal must save time, an addition spend it)."""
        st, parent = self.state, self.spec()
        cands = []
        for a in actions:
            new = a.apply(parent)
            self.price_variants(new)
            ms = self.prices.latency(new)
            dl = ms - st.latency_ms
            if not math.isclose(dl, 0.0, abs_tol=1e-9) and (dl < 0) == removal:
                cands.append((a, new, ms, dl))
        sign = -1.0 if removal else 1.0  # merit: higher is better (removals: the least loss per ms saved)

        def merits(alive: list[int], n: int) -> np.ndarray:
            got = self.scorer.scores([parent] + [cands[i][1] for i in alive], n,
                                     f"{what}: {len(alive)} on {n} samples")
            return np.stack([sign * (got[k + 1] - got[0]) / cands[i][3] for k, i in enumerate(alive)])

        budget, total = self.config.eval_budget, self.scorer.total
        ties = (Ties(budget.tie_margin, budget.tie_from(total), [abs(c[3]) for c in cands])
                if budget.tie_margin else None)
        decision = successive_halving(len(cands), merits, budget.rounds(total), want=want,
                                      confidence=budget.confidence, tiebreak=[c[3] for c in cands], ties=ties)
        self.note(decision, [cands[i][0].label for i in range(len(cands))], sign)
        self.keep_scores(parent, cands)
        out = []
        for i in decision.ranked[:want]:
            a, new, ms, dl = cands[i]
            q = self.quality(new, f"{what}: {a.label} on all samples")
            out.append(Scored(a, new, ms, Quality(q, {"samples": self.scorer.total}), q - st.quality, dl))
        return out

    def price_variants(self, spec: ArchSpec) -> None:
        """Price the swapped variants `spec` runs that the table lacks (their signatures estimated on demand,
        labelled); kept in the state so a resumed run estimates nothing again."""
        if self.prices.missing_variants(spec):
            self.say(f"pricing {', '.join(str(v.to_dict()) for _, v in self.prices.missing_variants(spec))}")
            self.prices = self.prices.with_variants(spec, self.costs)
            self.state.costs = self.prices.to_dict()

    def note(self, decision: Decision, labels: list[str], to_value: float) -> None:
        """This iteration's decision for the log: its rounds and every candidate, best first, with its
        value (trajectory sign) on the samples it was scored on (none where there was no rival)."""
        ranking: list[JSON] = [[labels[i], round(to_value * decision.means[i], 6) if i in decision.means else None,
                    decision.samples.get(i, 0)] for i in decision.ranked]
        self.decision = decision
        self.log.update({"candidates": len(labels), **decision.to_dict(), "ranking": ranking})

    def keep_scores(self, parent: ArchSpec, cands: list[tuple[Action, ArchSpec, float, float]]) -> None:
        """The per-sample scores this decision saw (row 0 the current architecture, NaN where not scored),
        in .evolve/scores/: what a different budget would have decided can be replayed from them without
        generating an image (benchmarks/bench_evolve.py --replay)."""
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, labels=np.array([a.label for a, *_ in cands]),
                            latency_delta_ms=np.array([c[3] for c in cands], dtype=float),
                            scores=self.scorer.known([parent] + [c[1] for c in cands]))
        atomic_write_bytes(self.work / SCORES_DIR / f"iteration-{self.state.iteration:04d}.npz", buf.getvalue())

    def iteration(self) -> None:
        st, target = self.state, self.state.target_ms
        st.iteration += 1
        self.log, self.decision = {"iteration": st.iteration}, None
        if st.phase == "remove" and st.latency_ms <= target:
            st.phase = "add" if self.config.add_phase else "done"
            self.say(f"target {target:.3f} ms met at {st.latency_ms:.3f} ms")
        if st.phase == "remove":
            self.remove_step()
        elif st.phase == "add":
            self.add_step()
        if self.config.train_steps and st.phase != "done":
            self.train_step()
        self.counts()  # what a decision without a row (the add phase's last) evaluated
        self.log["phase"] = st.phase

    def remove_step(self) -> None:
        st, target = self.state, self.state.target_ms
        actions = shrinking_actions(self.spec(), self.config.moves)
        # smallest quality loss per ms saved first; ties: the bigger saving
        scored = self.score(actions, f"iteration {st.iteration}: {len(actions)} removals", removal=True,
                            want=self.config.removals_per_iteration)
        if not scored:
            raise SnapbenchError(f"nothing left to remove and {st.latency_ms:.3f} ms is still above {target:.3f} ms")
        spec = self.spec()
        applied: list[Scored] = []
        for s in scored:
            if len(applied) >= self.config.removals_per_iteration or self.prices.latency(spec) <= target:
                break
            spec = s.action.apply(spec)
            self.price_variants(spec)  # two swaps of one block make a variant neither priced alone
            applied.append(s)
        q = applied[0].quality.quality if len(applied) == 1 else self.quality(spec, f"iteration {st.iteration}")
        # Rows: each applied removal with the latency after it. Quality is known after the first (its own
        # evaluation) and after the last (the combination, evaluated above); in between it is left empty.
        prev_q: float | None = st.quality
        for i, s in enumerate(applied):
            new_spec = s.action.apply(self.spec())
            ms = self.prices.latency(new_spec)
            last = i == len(applied) - 1
            quality = q if last else (s.quality.quality if i == 0 else None)
            dq = quality - prev_q if quality is not None and prev_q is not None else None
            self.row("remove", s.action.name, s.action.block_id, ms, self.prices.backend(new_spec), quality, dq,
                     ms - st.latency_ms, decided=i == 0)
            st.spec, st.latency_ms, prev_q = new_spec.to_dict(), ms, quality
            self.say(f"iteration {st.iteration}: {s.action.label}  {ms:.3f} ms  quality delta "
                     f"{s.quality_delta:+.4f} (alone)")
        st.quality = q

    def add_step(self) -> None:
        st, target, prices = self.state, self.state.target_ms, self.prices
        spec = self.spec()
        actions = [a for a in growing_actions(spec, self.config.moves) if prices.latency(a.apply(spec)) <= target + 1e-9]
        if not actions:
            st.phase = "done"
            self.say("no addition fits under the target")
            return
        # the most quality gained per ms spent; ties: the smaller spend
        scored = self.score(actions, f"iteration {st.iteration}: {len(actions)} additions", removal=False)
        best = scored[0] if scored else None
        if best is None or best.value <= self.config.min_gain:
            st.phase = "done"
            self.say("no addition gains quality; done")
            return
        self.row("add", best.action.name, best.action.block_id, best.latency_ms, prices.backend(best.spec),
                 best.quality.quality, best.quality_delta, best.latency_delta_ms, decided=True)
        st.spec, st.latency_ms, st.quality = best.spec.to_dict(), best.latency_ms, best.quality.quality
        self.say(f"iteration {st.iteration}: {best.action.label}  {best.latency_ms:.3f} ms  "
                 f"quality delta {best.quality_delta:+.4f}")

    def train_step(self) -> None:
        """Robust training between decisions (Algorithm 1's loop body)."""
        self.train(self.config.train_steps, self.config.train, f"ckpt-{self.state.iteration:04d}", "train")

    def final_training(self) -> None:
        """The final architecture trains on after the last decision (Algorithm 1: until it converges; here
        `final_steps`), robustly unless `final_robust` is off; written as one `train` row after the last."""
        config = self.config
        train = config.train if config.final_robust else replace(config.train, robust=False)
        self.train(config.final_steps, train, "ckpt-final", "final training")
        self.state.final_trained = True

    def train(self, steps: int, train: TrainConfig, name: str, what: str) -> None:
        from snapbench.evolution.executors import forget_cached
        from snapbench.evolution.robust_training import fine_tune
        from snapbench.training.checkpoints import derive, load_bundle, save_bundle

        st, config, work = self.state, self.config, self.work
        bundle = load_bundle(st.checkpoint)
        spec = self.spec()
        model = derive(bundle.model, spec)
        loss = fine_tune(bundle, model, train, start_step=st.train_steps_done, steps=steps, data=config.data)
        folder = work / name
        save_bundle(bundle, folder, model=model)
        old = Path(st.checkpoint)
        st.checkpoint = str(folder.resolve())
        st.train_steps_done += steps
        forget_cached()
        self.scorer.use_checkpoint(st.checkpoint)  # new weights: every score is recomputed
        q = self.quality(spec, f"iteration {st.iteration}: after {what}")
        self.row("train", "train", "", st.latency_ms, self.prices.backend(spec), q, q - st.quality, None)
        st.quality = q
        kind = "robust " if train.robust else ""
        self.say(f"iteration {st.iteration}: {steps} {kind}training steps{' (final)' if name == 'ckpt-final' else ''} "
                 f"(loss {loss:.4f}), quality {q:.4f}")
        if old.parent == work and old != folder:  # our own older checkpoint; never the input model
            shutil.rmtree(old, ignore_errors=True)

    def finish(self) -> EvolutionResult:
        from snapbench.training.checkpoints import derive, load_bundle

        st, prices, out = self.state, self.prices, self.out
        spec = self.spec()
        initial = st.initial
        notes = dict(spec.notes)
        notes["evolution"] = {"device": prices.device, "latency_source": prices.source,
                              "target_ms": round(st.target_ms, 4), "initial_latency_ms": round(initial["latency_ms"], 4),
                              "final_latency_ms": round(st.latency_ms, 4), "initial_quality": initial["quality"],
                              "final_quality": st.quality, "trajectory": TRAJECTORY_FILE}
        final_spec = spec.with_choices(out.name or spec.name, {}, notes=notes,
                                       description=f"{spec.name} evolved for {prices.device}: "
                                                   f"{initial['latency_ms']:.3f} -> {st.latency_ms:.3f} ms per UNet step")
        if not any(r["phase"] == "final" for r in st.trajectory):
            st.trajectory.append(TrajectoryRow.of(st.iteration, "final", "final", "", st.latency_ms,
                                                  prices.backend(spec), st.quality, None, None,
                                                  st.train_steps_done).to_dict())
        bundle = load_bundle(st.checkpoint)
        _publish(bundle, derive(bundle.model, final_spec), out)
        write_trajectory(st.trajectory, out / TRAJECTORY_FILE)
        result = EvolutionResult(out, prices.device, prices.source, st.target_ms, st.floor_ms, initial["latency_ms"],
                                 st.latency_ms, initial["quality"], st.quality, prices.backend(spec), st.iteration,
                                 st.train_steps_done, round(st.seconds, 1), final_spec.to_dict(), st.trajectory,
                                 self.config.eval_budget.describe(self.scorer.total),
                                 sum(json_int(e, "samples") for e in st.evaluations), st.evaluations)
        atomic_write_text(out / RESULT_FILE, json.dumps(result.to_dict(), indent=1, default=str) + "\n")
        return result


def _publish(bundle: ModelBundle, model: Elastic, out: Path) -> None:
    """Put the final model's files into `out` beside the run's state: each replaced by rename, the spec file
    (arch.json, a DiT's dit.json) last, so a reader that finds it finds the weights that go with it."""
    from snapbench.backbones import backbone_for
    from snapbench.model.loading import COPIES_FILE, VARIANTS_FILE
    from snapbench.training.checkpoints import save_bundle

    spec_file = backbone_for(model.spec).spec_file
    staging = out / WORK_DIR / "publish"
    save_bundle(bundle, staging, model=model)
    names = [p.name for p in staging.iterdir() if p.name != spec_file]
    for stale in (COPIES_FILE, VARIANTS_FILE):
        if stale not in names and (out / stale).exists():
            (out / stale).unlink()
    for name in [*names, spec_file]:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        (staging / name).replace(target)
    shutil.rmtree(staging, ignore_errors=True)
