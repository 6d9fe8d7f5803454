"""Cheaper candidate evaluation with the same decisions: successive halving, common random numbers, score
reuse, candidates batched through one model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from evolution_helpers import (  # noqa: F401  (fixtures)
    CA_MS,
    RB_MS,
    TINY_EVAL,
    PenaltyEval,
    fixed_costs,
    fixed_table_csv,
    toy_folder,
)

from snapbench.errors import SnapbenchError
from snapbench.evolution.budget import EvalBudget, Ties, successive_halving
from snapbench.evolution.evolve import EvolveConfig, evolve
from snapbench.evolution.executors import ScoreTask, SerialExecutor
from snapbench.evolution.scoring import Scorer
from snapbench.specs.presets import load_preset


def test_budget_rounds_and_the_smallest_budget():
    assert EvalBudget().rounds(80) == [5, 10, 20, 40, 80]  # auto: the first round sees 1/16
    assert EvalBudget.parse("3").rounds(20) == [3, 6, 12, 20]
    assert EvalBudget.parse("exhaustive").rounds(80) == [80]
    assert EvalBudget().rounds(1) == [1]  # too few samples to halve over: all of them
    with pytest.raises(SnapbenchError, match="the minimum is 2"):
        EvalBudget.parse("1")
    with pytest.raises(SnapbenchError, match="at most 80"):
        EvalBudget.parse("100").rounds(80)
    with pytest.raises(SnapbenchError, match="exhaustive, auto"):
        EvalBudget.parse("lots")


def test_tie_margin_parsing():
    assert EvalBudget.parse("auto", tie_margin=0.01).tie_margin == 0.01
    assert EvalBudget.parse("exhaustive", tie_margin=0.01).tie_margin == 0.0  # every candidate on every sample
    assert EvalBudget().tie_from(80) == 20  # a quarter of the samples: auto's third round
    assert "ties within 0.005 quality from 20 samples" in EvalBudget.parse("auto", tie_margin=0.005).describe(80)
    assert "ties" not in EvalBudget(tie_margin=0.0).describe(80)
    with pytest.raises(SnapbenchError, match="--eval-tie-margin must be a quality >= 0"):
        EvalBudget(tie_margin=-0.1)


def _merits(truth: np.ndarray, noise: float, spread: float, total: int):
    """Per-sample merits: the truth, plus a draw every candidate shares per sample (common random
    numbers) and a smaller one of its own; records which (candidate, sample) pairs were asked for."""
    rng = np.random.default_rng(1)
    shared = rng.standard_normal(total) * noise
    own = rng.standard_normal((len(truth), total)) * spread
    asked: set[tuple[int, int]] = set()

    def merits(alive, n):
        asked.update((c, s) for c in alive for s in range(n))
        return np.stack([truth[c] + shared[:n] + own[c, :n] for c in alive])

    return merits, asked


def test_halving_picks_the_exhaustive_winner_for_fewer_samples():
    truth = np.zeros(27)
    truth[17] = 0.5  # clearly better: a tenth of the noise between samples
    merits, asked = _merits(truth, noise=5.0, spread=0.3, total=80)
    exhaustive = successive_halving(27, merits, [80])
    assert exhaustive.ranked[0] == 17
    merits, asked = _merits(truth, noise=5.0, spread=0.3, total=80)
    halving = successive_halving(27, merits, EvalBudget().rounds(80))
    assert halving.ranked[0] == 17 and sorted(halving.ranked) == list(range(27))
    assert halving.rounds[0] == (5, 27) and halving.settled in ("confidence", "survivors", "all samples")
    assert len(asked) < 27 * 80 / 2  # each (candidate, sample) scored once, most never
    # without common random numbers (each candidate its own noise of the same size) the leader is not
    # settled in the first rounds: the stated confidence is what stops early
    merits, _ = _merits(truth, noise=0.0, spread=5.0, total=80)
    assert successive_halving(27, merits, [10, 20, 40, 80]).settled != "confidence"


def test_halving_keeps_a_tiny_saving_until_its_value_is_known():
    """The toy's iteration 8: a block saving 0.009 ms has a value (quality change / ms saved) about 30
    times noisier than the others'. On its first samples its mean ranks last; on all of them it is the best
    by far. The plain halving (the better half by mean) drops it; the halving that keeps what the leader
    has not beaten with confidence takes it to the samples that show it."""
    rng = np.random.default_rng(3)
    shared = rng.standard_normal(80) * 0.05
    rows = np.stack([0.1 * c / 27 + shared + rng.standard_normal(80) * 0.01 for c in range(27)])
    tiny = np.r_[[-9.0, 8.0] * 5, [3.0] * 70]  # mean -2.2 on 5 samples, -0.5 on 10; 2.56 on all 80
    rows[4] = tiny
    asked: set[tuple[int, int]] = set()

    def merits(alive, n):
        asked.update((c, s) for c in alive for s in range(n))
        return rows[alive, :n]

    assert successive_halving(27, merits, [80]).ranked[0] == 4  # exhaustive
    rounds = EvalBudget().rounds(80)
    plain = successive_halving(27, merits, rounds, cut="mean")
    assert plain.ranked[0] != 4 and plain.samples[4] == 5
    asked.clear()
    kept = successive_halving(27, merits, rounds)
    assert kept.ranked[0] == 4 and kept.samples[4] > 10
    # the well-measured candidates still leave by halves: far fewer scores than exhaustive's 27 x 80
    assert kept.rounds[1][1] <= 14 + 1 and len(asked) < 27 * 80 / 4


def _tiny_savings(seed: int, worse: float = 0.0, better: float = 0.0):
    """The toy's early decisions: 20 removals that each save 0.009 ms and change quality by about the same
    small amount (per-sample quality differences with a 0.03 spread, so their values per ms are far noisier
    than the gaps between them). Candidate 5 loses `worse` quality more than the rest, candidate 7 gains
    `better` more. Returns merits(alive, n), the per-sample merit rows and the savings (ms)."""
    rng = np.random.default_rng(seed)
    saving = np.full(20, 0.009)
    dq = np.full(20, 0.002) + rng.standard_normal(20) * 0.0005
    dq[5] -= worse
    dq[7] += better
    shared = rng.standard_normal(80) * 0.03
    rows = (dq[:, None] + shared + rng.standard_normal((20, 80)) * 0.02) / saving[:, None]
    asked: set[tuple[int, int]] = set()

    def merits(alive, n):
        asked.update((c, s) for c in alive for s in range(n))
        return rows[alive, :n]

    return merits, rows, saving, asked


def test_a_tie_stops_early_and_never_picks_a_clearly_worse_candidate():
    """Near-equal tiny savings: the decision stops at a statistical tie (a quarter of the samples or more),
    on far fewer images than the halving without ties, and takes the leader, the best mean so far; the
    candidate that loses 0.05 more quality is beaten, not in the tie, and never picked, over many draws."""
    budget = EvalBudget(tie_margin=0.03)
    rounds = budget.rounds(80)
    picks_worse, ties_called = 0, 0
    for seed in range(30):
        merits, rows, saving, asked = _tiny_savings(seed, worse=0.05)
        ties = Ties(budget.tie_margin, budget.tie_from(80), list(saving))
        d = successive_halving(20, merits, rounds, ties=ties, tiebreak=list(-saving))
        picks_worse += d.ranked[0] == 5
        if d.settled == "tie":
            ties_called += 1
            n = d.rounds[-1][0]
            assert n >= 20 and d.samples[d.ranked[0]] == n and 1 < d.tied <= 20
            assert d.ranked[0] == max((c for c in d.samples if d.samples[c] == n), key=lambda c: d.means[c])
            assert d.samples[5] < n  # the clearly worse one left before the tie was called
            assert d.to_dict()["tied"] == d.tied
        no_ties_asked = len(asked)
        asked.clear()
        plain = successive_halving(20, merits, rounds, tiebreak=list(-saving))
        assert plain.settled != "tie" and not plain.tied
        if d.settled == "tie":
            assert no_ties_asked < len(asked)  # the tie saved images
    assert picks_worse == 0 and ties_called >= 25


def test_no_tie_where_one_candidate_is_better_by_more_than_the_margin():
    """One tiny saving gains 0.045 quality more than its rivals, 1.5 times the tie margin: no tie may hide
    it; the decision goes on until it leads, as without ties (the exhaustive winner)."""
    budget = EvalBudget(tie_margin=0.03)
    for seed in range(10):
        merits, rows, saving, _ = _tiny_savings(seed, better=0.045)
        exhaustive = successive_halving(20, merits, [80], tiebreak=list(-saving))
        assert exhaustive.ranked[0] == 7
        d = successive_halving(20, merits, budget.rounds(80), tiebreak=list(-saving),
                               ties=Ties(budget.tie_margin, budget.tie_from(80), list(saving)))
        assert d.ranked[0] == 7


def test_halving_stops_when_the_ranking_is_settled_and_keeps_want():
    truth = np.arange(8, dtype=float)  # 7 is best by a wide margin
    merits, asked = _merits(truth, noise=1.0, spread=0.01, total=64)
    d = successive_halving(8, merits, [4, 8, 16, 32, 64])
    assert d.settled == "confidence" and d.rounds == [(4, 8)] and d.ranked[:3] == [7, 6, 5]
    merits, _ = _merits(truth, noise=1.0, spread=0.01, total=64)
    two = successive_halving(8, merits, [4, 8, 16, 32, 64], want=2)
    assert two.ranked[:2] == [7, 6]
    one = successive_halving(1, merits, [4, 8])
    assert one.ranked == [0] and one.rounds == [] and one.settled == "no rival"


# RB[Mid, 2] loses least per ms among the cheap ones; the stub's per-sample noise is shared by every
# candidate (noise) plus a little of each one's own (spread).
PENALTIES = (("RB[Mid, 2]", 0.04), ("CA[Up-3, 1]", 0.10), ("CA[Down-1, 2]", 0.06), ("RB[Up-3, 3]", 0.06))


def _evolve(folder, out, target, evaluator, budget, **kw):
    return evolve(folder, out, EvolveConfig(target_ms=target, add_phase=False, eval_budget=budget, **kw),
                  evaluator=evaluator, costs=fixed_costs, executor=SerialExecutor(), progress=False)


def test_evolve_with_halving_makes_the_exhaustive_decisions(tmp_path, toy_folder):
    spec = load_preset("toy-digits")
    target = fixed_costs(spec).latency(spec) - 2 * CA_MS - RB_MS
    ev = PenaltyEval(PENALTIES, samples=32, noise=0.2, spread=0.002)
    full = _evolve(toy_folder, tmp_path / "full", target, ev, EvalBudget.parse("exhaustive"))
    cheap = _evolve(toy_folder, tmp_path / "cheap", target, ev, EvalBudget.parse("4"))
    removed = [r["block"] for r in full.trajectory if r["phase"] == "remove"]
    assert removed == ["CA[Down-1, 2]", "RB[Mid, 2]", "CA[Up-3, 1]"]
    assert [r["block"] for r in cheap.trajectory if r["phase"] == "remove"] == removed
    assert cheap.final_quality == pytest.approx(full.final_quality)
    # each row records the images its decision took; halving took far fewer
    spent = [r["eval_samples"] for r in cheap.trajectory if r["phase"] == "remove"]
    assert all(s > 0 for s in spent) and sum(spent) * 3 < full.eval_samples
    assert [e["rounds"][0] for e in cheap.evaluations[1:4]] == [[4, 38], [4, 37], [4, 36]]
    assert all(e["seconds"] >= 0 and e["samples"] > 0 for e in cheap.evaluations[1:4])
    # the current architecture's scores are the previous winner's: reused, not recomputed
    assert all(r["eval_reused"] > 0 for r in cheap.trajectory if r["phase"] == "remove")
    # each decision's per-sample scores are kept (replayable): all of them exhaustive, some with halving
    kept = [np.load(tmp_path / side / ".evolve" / "scores" / "iteration-0001.npz") for side in ("full", "cheap")]
    assert kept[0]["scores"].shape == (39, 32) and not np.isnan(kept[0]["scores"]).any()
    assert list(kept[0]["labels"]) == list(kept[1]["labels"]) and len(kept[0]["latency_delta_ms"]) == 38
    assert np.isnan(kept[1]["scores"]).any() and np.array_equal(kept[1]["scores"][0], kept[0]["scores"][0])


def test_evolve_records_ties_in_the_trajectory(tmp_path, toy_folder):
    """Every CA removal costs the same quality per ms (and every RB's the same, dearer): each decision is a
    tie among the CAs, called on a quarter of the samples and written to trajectory.csv. Which CA goes may
    differ from an exhaustive run's pick; the quality may not: any two CAs lose 2 x 0.05."""
    from snapbench.evolution.trajectory import read_trajectory

    spec = load_preset("toy-digits")
    target = fixed_costs(spec).latency(spec) - 2 * CA_MS
    ev = PenaltyEval((), default_penalty=0.05, samples=32, noise=0.2, spread=0.002)
    tied = _evolve(toy_folder, tmp_path / "tied", target, ev, EvalBudget.parse("4", tie_margin=0.02))
    rows = [r for r in read_trajectory(tmp_path / "tied" / "trajectory.csv") if r["phase"] == "remove"]
    assert [r["eval_settled"] for r in rows] == ["tie", "tie"] and [r["eval_decided_on"] for r in rows] == [8, 8]
    assert all(r["block"].startswith("CA") for r in rows)
    assert tied.final_quality - tied.initial_quality == pytest.approx(-0.10, abs=0.01)
    candidates = tied.evaluations[1]["candidates"]
    assert tied.eval_samples < 32 * candidates  # under one exhaustive decision's images for both decisions
    assert [e["settled"] for e in tied.evaluations[1:3]] == ["tie", "tie"] and tied.evaluations[1]["tied"] > 1


def test_reuse_recomputes_after_training_steps(toy_folder, tmp_path):
    from snapbench.evolution.robust_training import TrainConfig

    spec = load_preset("toy-digits")
    r = _evolve(toy_folder, tmp_path / "evo", fixed_costs(spec).latency(spec) - 2 * CA_MS - 0.01, TINY_EVAL,
                EvalBudget.parse("2"), train_steps=1, train=TrainConfig(batch_size=2), max_iterations=2)
    rows = {(row["iteration"], row["phase"]): row for row in r.trajectory}
    total = TINY_EVAL.sample_count()
    assert rows[(0, "start")]["eval_samples"] == total
    assert rows[(1, "remove")]["eval_reused"] > 0  # the starting model's scores, same weights
    # training changed the weights: the architecture is scored again on every sample, nothing reused
    assert rows[(1, "train")]["eval_samples"] == total and rows[(1, "train")]["eval_reused"] == 0
    # the next decision reuses the architecture's scores on the new weights (computed for the train row)
    assert 0 < rows[(2, "remove")]["eval_reused"] <= total


def test_scorer_reuses_until_the_checkpoint_changes(toy_folder, tmp_path):
    from snapbench.evolution.actions import Action

    spec = load_preset("toy-digits")
    cand = Action("-", "Up-3", "CA1").apply(spec)
    scorer = Scorer(TINY_EVAL, SerialExecutor(), str(toy_folder))
    first = scorer.scores([spec, cand], 4)
    assert scorer.take_counts().computed == 8
    again = scorer.scores([spec, cand], 6)  # only samples 4, 5 are new
    c = scorer.take_counts()
    assert (c.computed, c.reused) == (4, 8)
    assert np.array_equal(again[0][:4], first[0]) and np.array_equal(again[1][:4], first[1])
    scorer.use_checkpoint(str(tmp_path / "elsewhere"))  # new weights: nothing is kept
    assert scorer.take_counts().computed == 0 and not scorer._scores


def test_batched_toy_scores_equal_each_candidate_evaluated_alone(toy_folder):
    """Common random numbers across candidates and subsets: sample s is the same image in a batch of
    candidates as in evaluate(); the mean over all samples is evaluate()'s quality."""
    from snapbench.evolution.actions import Action
    from snapbench.training.checkpoints import derive, load_bundle

    torch.set_num_threads(1)
    spec = load_preset("toy-digits")
    cands = [spec, Action("-", "Up-3", "CA1").apply(spec), Action("-", "Mid", "RB2").apply(spec),
             Action("+", "Up-1", "CA2").apply(spec)]
    total = TINY_EVAL.sample_count()
    got = ScoreTask(str(toy_folder), tuple(c.to_dict() for c in cands), tuple(range(total)), TINY_EVAL).run()
    bundle = load_bundle(toy_folder)
    ev = TINY_EVAL.build()
    for c, row in zip(cands, got):
        assert np.mean(row) == pytest.approx(ev.evaluate(bundle, derive(bundle.model, c)).quality, abs=1e-5)
    part = ScoreTask(str(toy_folder), (cands[1].to_dict(),), (7, 2), TINY_EVAL).run()
    assert part[0] == pytest.approx([got[1][7], got[1][2]], abs=1e-5)
    assert len({round(float(np.mean(r)), 6) for r in got}) > 1


def test_cli_refuses_a_first_round_beyond_the_samples(tmp_path, toy_folder, capsys, fixed_table_csv):
    from snapbench.cli import main

    out = tmp_path / "evo"
    base = ["evolve", "--model", str(toy_folder), "--out", str(out), "--fixed-table", str(fixed_table_csv),
            "--target-fraction", "0.9"]
    assert main([*base, "--eval-budget", "81"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "at most 80" in err and "10 prompts x 8" in err
    assert not out.exists()


def test_cli_refuses_a_negative_tie_margin(tmp_path, capsys):
    from snapbench.cli import main

    out = tmp_path / "evo"
    assert main(["evolve", "--model", "toy-digits", "--out", str(out), "--target-fraction", "0.9",
                 "--eval-tie-margin", "-0.01"]) == 2
    err = capsys.readouterr().err
    assert "--eval-tie-margin" in err and "greater than or equal to 0" in err and "Traceback" not in err
    assert not out.exists()


def test_a_run_started_before_the_eval_budget_resumes(tmp_path, toy_folder):
    """A state written by the version before --eval-budget (no budget, no batch, no evaluation log, rows
    without image counts: as tried on a real folder of that version) resumes with the budget asked now;
    its rows are kept, one line says so, and from then on the budget is part of what a resume checks."""
    import json

    spec = load_preset("toy-digits")
    target = fixed_costs(spec).latency(spec) - 2 * CA_MS - RB_MS
    ev = PenaltyEval(PENALTIES, samples=32, noise=0.2, spread=0.002)

    class Killed(BaseException):
        pass

    def kill(st):
        raise Killed

    out = tmp_path / "old"
    with pytest.raises(Killed):
        evolve(toy_folder, out, EvolveConfig(target_ms=target, add_phase=False), evaluator=ev, costs=fixed_costs,
               executor=SerialExecutor(), progress=False, after_iteration=kill)
    path = out / ".evolve" / "state.json"
    state = json.loads(path.read_text())
    import shutil

    # the version before --eval-tie-margin: its halving called no ties; it resumes with the margin asked now
    no_ties = tmp_path / "no-ties"
    shutil.copytree(out, no_ties)
    older = json.loads(json.dumps(state))
    del older["settings"]["config"]["eval_budget"]["tie_margin"]
    (no_ties / ".evolve" / "state.json").write_text(json.dumps(older))
    said: list[str] = []
    evolve(toy_folder, no_ties, EvolveConfig(target_ms=target, add_phase=False,
                                             eval_budget=EvalBudget(tie_margin=0.01)),
           evaluator=ev, costs=fixed_costs, executor=SerialExecutor(), progress=False, say=said.append)
    assert [line for line in said if "started before --eval-tie-margin" in line and "ties within 0.01" in line]
    del state["settings"]["config"]["eval_budget"], state["settings"]["evaluator"]["batch"], state["evaluations"]
    del state["settings"]["config"]["moves"]  # older still: before --moves (remove and copy only)
    del state["settings"]["config"]["train"]["variant_moves"]  # and before robust training sampled variants
    del state["settings"]["config"]["train"]["variant_p"]
    for row in state["trajectory"]:
        del row["eval_samples"], row["eval_reused"]
    path.write_text(json.dumps(state))
    shutil.copytree(out, tmp_path / "old-moves")
    with pytest.raises(SnapbenchError, match=r"config.moves=None \(this command: .*leave out --moves"):  # no swaps
        _evolve(toy_folder, tmp_path / "old-moves", target, ev, EvalBudget(), moves=("remove", "mqa"))
    said: list[str] = []
    r = evolve(toy_folder, out, EvolveConfig(target_ms=target, add_phase=False), evaluator=ev, costs=fixed_costs,
               executor=SerialExecutor(), progress=False, say=said.append)
    assert [line for line in said if "started before --eval-budget" in line] and "successive halving" in said[1]
    assert r.trajectory[:2] == state["trajectory"] and r.final_latency_ms <= target
    assert [row["block"] for row in r.trajectory if row["phase"] == "remove"] == [
        "CA[Down-1, 2]", "RB[Mid, 2]", "CA[Up-3, 1]"]
    with pytest.raises(SnapbenchError, match=r"config.eval_budget.mode='halving' \(this command: 'exhaustive'\).*"
                                             "add `--eval-budget auto`"):
        _evolve(toy_folder, out, target, ev, EvalBudget.parse("exhaustive"))
