"""How much evaluation a decision gets: successive halving with a stated confidence (`--eval-budget`).

Algorithm 1 picks, each iteration, the action with the best value = d quality / d latency. Evaluating every
candidate on every sample (`exhaustive`, the paper's procedure) spends most of its time on candidates that
are clearly not the best. Successive halving (Jamieson & Talwalkar 2016) spends it where the decision is:

- round 1 scores every candidate on the first `first` samples; each later round doubles the samples
  (capped at all of them) for the better half of the survivors (never fewer than `want`), and for every
  candidate below that half whose value is still too uncertain to call worse than the leaders' (below);
- samples are common random numbers (the same prompt and starting noise for every candidate:
  snapbench.evolution.evaluators), so candidates are compared sample by sample: for two candidates the
  per-sample differences of their merit have a far smaller spread than the merits themselves;
- the search stops early when the ranking is settled: each of the `want` leaders beats every other
  survivor in a one-sided paired t-test at `confidence` (Bonferroni over the comparisons, so the stated
  confidence holds for all of them together); survivors a leader beats that way leave before the halving;
- otherwise it stops when one round's survivors number `want`, or after the round on all samples (there
  the ranking is the exhaustive one among the survivors).

A candidate's merit on one sample is what Algorithm 1 ranks by, per sample: for a removal -(q_c - q_p) / dl
(the least quality lost per ms saved is the best), for an addition (q_c - q_p) / dl, with q_p the current
architecture's score on the same sample. Its mean over samples is the candidate's value (sign aside).

Why the halving keeps uncertain candidates: the value is a quality difference divided by the latency the
action saves, so its noise grows as 1 / |dl|. A block that saves 0.009 ms where others save 0.1-0.3 ms has
a value 10-30 times noisier; on the first few samples its mean says little, and ranking by the mean alone
dropped such a block that all samples showed to be the best by far (the toy, benchmarks/bench_evolve.py).
So a candidate leaves a round below the better half only when the leaders beat it in the same paired
one-sided t-test, taken one comparison at a time at `confidence` (its value interval no longer reaches
theirs); settling the whole ranking still takes the Bonferroni-corrected test above.

Statistical ties (`tie_margin`, a quality): where the leading values cannot be told apart, more samples
buy nothing the final architecture needs. From the round holding a quarter of the samples on (before
that the sample spread that bounds the t-interval is too unreliable), when no survivor can be better than
the leader by more than `tie_margin` of quality over the ms the leader's action moves, at `confidence`
(one-sided paired t upper bound on each survivor's merit minus the leader's, Bonferroni over the
survivors, times the leader's |latency change|), the decision stops there and takes the leader: the best
mean so far. Every candidate the leader has not beaten is in the tie, so a candidate clearly worse than
the leader is never picked; a candidate better than the leader by more than the margin is excluded at
the stated confidence. Such a decision may differ from the exhaustive one exactly where that one is a
coin flip between near-equal values; the trajectory says which decisions were ties and on how many
samples. The bound is in quality, not value per ms: a block saving 0.009 ms has a value 10-30 times
noisier than one saving 0.1-0.3 ms, so no number of samples would make tiny savings' values equal within
a fixed per-ms margin, while the quality at stake in choosing between them is small.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

MIN_SAMPLES = 2  # a paired comparison needs a spread: one sample per candidate ranks nothing with confidence
AUTO_ROUNDS = 5  # auto: the first round sees 1/16 of the samples, so the fifth sees them all
TIE_FROM = 4  # ties are called from the round holding at least 1/TIE_FROM of the samples
# Off by default: on the toy the halving without ties already makes every exhaustive decision in under 5
# minutes, and ties trade quality for images (replay and whole runs: README, benchmarks/bench_evolve.py).
DEFAULT_TIE_MARGIN = 0.0


@dataclass(frozen=True)
class EvalBudget:
    """`exhaustive`, or successive halving from `first` samples per candidate (None: auto) at `confidence`,
    accepting statistical ties within `tie_margin` of quality (0: never; exhaustive: never)."""

    mode: str = "halving"  # halving | exhaustive
    first: int | None = None
    confidence: float = 0.95
    tie_margin: float = DEFAULT_TIE_MARGIN

    def __post_init__(self) -> None:
        if self.mode not in ("halving", "exhaustive"):
            raise SnapbenchError(f"eval budget mode {self.mode!r}: choose halving or exhaustive")
        if not 0.5 <= self.confidence < 1:
            raise SnapbenchError(f"--eval-confidence must be in [0.5, 1), got {self.confidence}")
        if not 0 <= self.tie_margin < math.inf:
            raise SnapbenchError(f"--eval-tie-margin must be a quality >= 0 (0: no ties), got {self.tie_margin}")
        if self.mode == "exhaustive":
            object.__setattr__(self, "tie_margin", 0.0)  # every candidate on every sample: nothing to stop early

    @classmethod
    def parse(cls, text: str, confidence: float = 0.95, tie_margin: float = DEFAULT_TIE_MARGIN) -> EvalBudget:
        """`exhaustive`, `auto` or the samples per candidate of the first round (>= MIN_SAMPLES)."""
        t = text.strip().lower()
        if t == "exhaustive":
            return cls("exhaustive", None, confidence)
        if t == "auto":
            return cls("halving", None, confidence, tie_margin)
        try:
            first = int(t)
        except ValueError:
            raise SnapbenchError(f"--eval-budget {text!r}: give exhaustive, auto, or the samples per candidate "
                                 f"of the first halving round (at least {MIN_SAMPLES})") from None
        if first < MIN_SAMPLES:
            raise SnapbenchError(f"--eval-budget {first}: cannot rank two candidates with a confidence from fewer "
                                 f"than {MIN_SAMPLES} samples each; the minimum is {MIN_SAMPLES} (or exhaustive)")
        return cls("halving", first, confidence, tie_margin)

    def rounds(self, total: int, what: str = "") -> list[int]:
        """Samples per candidate in each round, ending with `total` (all of the evaluator's samples)."""
        if self.mode == "exhaustive" or (self.first is None and total < MIN_SAMPLES):
            return [total]  # auto with too few samples to halve over: every candidate on all of them
        first = self.first if self.first is not None else max(MIN_SAMPLES, math.ceil(total / 2 ** (AUTO_ROUNDS - 1)))
        if first > total:
            raise SnapbenchError(f"--eval-budget {first}: the evaluator has only {total} samples per candidate"
                                 f"{what}; give at most {total}, or exhaustive")
        out = [first]
        while out[-1] < total:
            out.append(min(total, 2 * out[-1]))
        return out

    def describe(self, total: int) -> str:
        if self.rounds(total) == [total]:
            return f"every candidate on all {total} samples" + (" (exhaustive)" if self.mode == "exhaustive" else "")
        ties = f", ties within {self.tie_margin:g} quality from {self.tie_from(total)} samples" if self.tie_margin else ""
        return f"successive halving over {self.rounds(total)} samples, confidence {self.confidence}{ties}"

    def tie_from(self, total: int) -> int:
        """The fewest samples per candidate a tie is called on."""
        return max(MIN_SAMPLES, math.ceil(total / TIE_FROM))


@dataclass
class Decision:
    """A ranking and what it cost: `ranked` holds candidate indices, best first (the final round's
    survivors by their mean merit, then those dropped, the latest-dropped first)."""

    ranked: list[int]
    means: dict[int, float]  # each candidate's mean merit on the samples it was scored on
    samples: dict[int, int]  # samples each candidate was scored on
    rounds: list[tuple[int, int]] = field(default_factory=list)  # (samples per candidate, candidates) per round
    settled: str = ""  # how it stopped: confidence | tie | survivors | all samples | no rival
    tied: int = 0  # a tie: the candidates in it (the leader and every survivor it has not beaten)

    def to_dict(self) -> JSONObject:
        out: JSONObject = {"rounds": [list(r) for r in self.rounds], "settled": self.settled}
        if self.tied:
            out["tied"] = self.tied
        return out


def _beats(a: np.ndarray, b: np.ndarray, quantile: float) -> bool:
    """Whether merit samples `a` beat `b` (paired, one-sided) with t above the `quantile` critical value."""
    d = a - b
    mean = float(d.mean())
    if mean <= 0 or len(d) < 2:
        return False
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return True  # every sample agrees
    return mean / (sd / math.sqrt(len(d))) > _critical(quantile, len(d) - 1)


def _upper(d: np.ndarray, quantile: float) -> float:
    """One-sided upper confidence bound, at `quantile`, of the mean of paired differences `d`."""
    return float(d.mean()) + _critical(quantile, len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))


@dataclass(frozen=True)
class Ties:
    """When a decision may stop at a statistical tie (module docstring): on rounds of at least `from_samples`
    per candidate, when no survivor's value can beat the leader's by more than `margin` quality over
    `worth[leader]` (each candidate's |latency change|, ms: quality per unit of merit)."""

    margin: float
    from_samples: int
    worth: Sequence[float]


# How a halving round picks who goes on: "overlap", the better half by mean merit and every other candidate
# the leaders have not beaten at `confidence` one comparison at a time; "mean", the better half by mean
# merit alone (plain successive halving, kept for benchmarks/bench_evolve.py --replay).
CUTS = ("overlap", "mean")


@functools.lru_cache(maxsize=1024)
def _critical(quantile: float, dof: int) -> float:
    """Student's t quantile (scipy's ppf costs more than the whole test; a decision asks a few values)."""
    from scipy.stats import t as student

    return float(student.ppf(quantile, dof))


def successive_halving(count: int, merits: Callable[[list[int], int], np.ndarray], rounds: Sequence[int], *,
                       want: int = 1, confidence: float = 0.95, tiebreak: Sequence[float] | None = None,
                       cut: str = "overlap", ties: Ties | None = None) -> Decision:
    """Rank `count` candidates by mean merit (higher is better) with as few samples as the ranking needs.

    `merits(alive, n)` returns an array [len(alive), n]: each alive candidate's merit on samples 0..n-1
    (the caller computes only what it has not computed before). `tiebreak`: lower first among equal means.
    `cut`: who goes on after a round (see CUTS); the others are kept so that a benchmark can replay what
    each would have decided. `ties`: stop at a statistical tie (one leader, `want` 1, only)."""
    if cut not in CUTS:
        raise ValueError(f"cut {cut!r}: one of {', '.join(CUTS)}")
    tie = list(tiebreak) if tiebreak is not None else [0.0] * count
    alive = list(range(count))
    means: dict[int, float] = {}
    samples: dict[int, int] = {}
    decision = Decision([], means, samples)
    if count <= want:
        decision.ranked, decision.settled = sorted(alive, key=lambda i: tie[i]), "no rival"
        return decision
    dropped: list[list[int]] = []  # per round, better first
    final: list[int] = []
    for n in rounds:
        m = np.asarray(merits(alive, n), dtype=float)
        rows = {c: m[k] for k, c in enumerate(alive)}
        for c in alive:
            means[c], samples[c] = float(rows[c].mean()), n
        ranked = sorted(alive, key=lambda c: (-means[c], tie[c]))
        decision.rounds.append((n, len(alive)))
        top, rest = ranked[:want], ranked[want:]
        quantile = 1 - (1 - confidence) / (len(top) * len(rest))
        beaten = {o for o in rest if all(_beats(rows[t], rows[o], quantile) for t in top)}
        if len(beaten) == len(rest):
            decision.settled, final = "confidence", ranked
            break
        if n == rounds[-1]:
            decision.settled, final = "all samples", ranked
            break
        if ties is not None and want == 1 and ties.margin > 0 and n >= ties.from_samples:
            rivals = [o for o in rest if o not in beaten]
            q = 1 - (1 - confidence) / len(rivals)
            lead = top[0]
            if max(_upper(rows[o] - rows[lead], q) for o in rivals) * ties.worth[lead] <= ties.margin:
                decision.settled, decision.tied, final = "tie", 1 + len(rivals), ranked
                break
        half = ranked[:max(want, math.ceil(len(ranked) / 2))]
        unsure = [o for o in ranked[len(half):]
                  if cut == "overlap" and not all(_beats(rows[t], rows[o], confidence) for t in top)]
        alive = [c for c in half + unsure if c not in beaten]
        dropped.append([c for c in ranked if c not in alive])
        if len(alive) <= want:
            decision.settled, final = "survivors", alive
            break
    decision.ranked = final + [c for group in reversed(dropped) for c in group]
    return decision
