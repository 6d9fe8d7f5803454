"""Benchmark `snapbench evolve --eval-budget`: the default budget against the exhaustive one on the toy.

    .venv/bin/python benchmarks/bench_evolve.py [--model runs/toy] [--out runs/bench-evolve] [--json]
    .venv/bin/python benchmarks/bench_evolve.py --report-only      # the figures of runs already there

Both sides run `snapbench evolve --model M --device iphone14pro --target-fraction 0.6` (estimated
latency, 1 torch thread, no add phase so that both stop at the target) in their own process, one after
the other, into OUT/default and OUT/exhaustive; without --model a robust toy is trained first into
OUT/toy (`snapbench train --model toy-digits --robust`, 2,000 steps). Each side resumes where it stopped
when the benchmark runs again. The side that starts second starts from the first side's saved start
(price table, starting quality): the two differ in the budget alone. Printed: seconds, final quality and whether the target was reached per
side, then the two trajectories side by side and, where the decisions differ, why (each run's log
ranks every candidate of every decision with its value and the samples it was scored on). --report-only
reads what the folders hold, finished or not (an unfinished side is marked so). Other users of the CPU
slow both sides: the load average is printed with the figures, and each side's CPU seconds (its worker
processes' included, summed over resumes) beside its wall seconds.

--json prints {"default": {"seconds", "final_quality", "reached_target", ...}, "exhaustive": {...}}.

--replay [N] replays every decision of the exhaustive side (its per-sample scores, .evolve/scores/) under
each halving cut of snapbench.evolution.budget (plain: the better half by mean; overlap, what `auto`
does: also every candidate the leader has not beaten with confidence; ties: overlap, stopping at a
statistical tie within --replay-margin of quality), on the run's own sample order and on N random orders
of the samples: how often each picks the exhaustive winner, the quality it gives up when it does not
(value short of the winner's times the ms saved), how often it called a tie, and the images it takes.
No image is generated.

--tie-margin Q runs the default side with `--eval-tie-margin Q` (statistical ties; off by default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from snapbench.evolution.budget import DEFAULT_TIE_MARGIN

PY = sys.executable
SNAPBENCH = str(Path(PY).with_name("snapbench"))
SIDES = ("default", "exhaustive")


def _evolve_args(model: str, out: Path, budget: str, args: argparse.Namespace) -> list[str]:
    return [SNAPBENCH, "evolve", "--model", model, "--out", str(out), "--device", args.device,
            "--target-fraction", str(args.target_fraction), "--no-add", "--threads", str(args.threads),
            "--workers", str(args.workers), "--eval-budget", budget, "--eval-tie-margin", str(args.tie_margin),
            "--json",
            *(["--samples-per-prompt", str(args.samples_per_prompt)] if args.samples_per_prompt else [])]


def _train(out: Path, threads: int) -> str:
    folder = out / "toy"
    if not (folder / "arch.json").is_file():
        subprocess.run([SNAPBENCH, "train", "--model", "toy-digits", "--robust", "--out", str(folder),
                        "--threads", str(threads)], check=True, stdout=subprocess.DEVNULL)
    return str(folder)


def _start_like(folder: Path, other: Path, budget: str, tie_margin: float) -> bool:
    """Start `folder`'s run from the start `other`'s run saved (its price table, starting architecture and
    quality), with `budget`: the two sides then differ in the budget alone, also when the latency estimator
    changed between their runs (a resumed run keeps the prices it started with). False if either has begun
    or `other` has none."""
    from dataclasses import asdict

    from snapbench.evolution.budget import EvalBudget

    mine, theirs = folder / ".evolve" / "state.json", other / ".evolve" / "state.json"
    if mine.is_file() or not theirs.is_file():
        return False
    st = json.loads(theirs.read_text())
    if st["train_steps_done"]:
        raise SystemExit(f"{other} trained its weights; the benchmark compares runs without training")
    settings = json.loads(json.dumps(st["settings"]))
    settings["config"]["eval_budget"] = asdict(EvalBudget.parse(budget, tie_margin=tie_margin))
    start = [r for r in st["trajectory"] if r["phase"] == "start"]
    first = [e for e in st["evaluations"] if e["iteration"] == 0] or [{"iteration": 0,
                                                                       "samples": start[0]["eval_samples"]}]
    init = st["initial"]
    seeded = {**st, "settings": settings, "iteration": 0, "phase": "remove", "spec": init["spec"],
              "latency_ms": init["latency_ms"], "quality": init["quality"], "trajectory": start, "seconds": 0.0,
              "evaluations": first}
    mine.parent.mkdir(parents=True, exist_ok=True)
    tmp = mine.with_suffix(".tmp")
    tmp.write_text(json.dumps(seeded, indent=1) + "\n")
    tmp.replace(mine)
    return True


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _run_side(cmd: list[str], folder: Path) -> int:
    """Run one side; its CPU seconds (its worker processes' included) add up in SIDE.cpu.json across
    resumes: on a shared machine they, not the wall time, say what the run costs."""
    log = folder.with_name(folder.name + ".cpu.json")
    spent = json.loads(log.read_text()) if log.is_file() else {"cpu_seconds": 0.0, "wall_seconds": 0.0}
    c, t = _cpu_children(), time.perf_counter()
    rc = subprocess.run(cmd, stdout=subprocess.DEVNULL).returncode
    spent = {"cpu_seconds": spent["cpu_seconds"] + _cpu_children() - c,
             "wall_seconds": spent["wall_seconds"] + time.perf_counter() - t}
    log.write_text(json.dumps(spent) + "\n")
    return rc


def _read(folder: Path) -> dict[str, Any] | None:
    """The finished result, or what an unfinished run's state holds so far; None if it never started."""
    result, state = folder / "result.json", folder / ".evolve" / "state.json"
    cpu_log = folder.with_name(folder.name + ".cpu.json")
    cpu = json.loads(cpu_log.read_text())["cpu_seconds"] if cpu_log.is_file() else None
    if result.is_file():
        d = json.loads(result.read_text())
        d.update(finished=True, cpu_seconds=cpu)
        return d
    if not state.is_file():
        return None
    st = json.loads(state.read_text())
    return {"finished": False, "cpu_seconds": cpu, "seconds": st["seconds"], "final_quality": st["quality"],
            "final_latency_ms": st["latency_ms"], "target_ms": st["target_ms"],
            "initial_latency_ms": st["initial"]["latency_ms"], "initial_quality": st["initial"]["quality"],
            "iterations": st["iteration"], "trajectory": st["trajectory"], "evaluations": st["evaluations"],
            "eval_samples": sum(int(e.get("samples", 0)) for e in st["evaluations"])}


def _summary(d: dict[str, Any]) -> dict[str, Any]:
    cpu = d.get("cpu_seconds")
    return {"seconds": round(float(d["seconds"]), 1), "cpu_seconds": None if cpu is None else round(cpu, 1),
            "final_quality": round(float(d["final_quality"]), 4),
            "reached_target": bool(d["final_latency_ms"] <= d["target_ms"] + 1e-9), "finished": d["finished"],
            "iterations": d["iterations"], "final_latency_ms": round(float(d["final_latency_ms"]), 4),
            "target_ms": round(float(d["target_ms"]), 4), "eval_samples": d["eval_samples"]}


def _decisions(d: dict[str, Any]) -> dict[int, dict[str, Any]]:
    rows = {r["iteration"]: r for r in d["trajectory"] if r["phase"] == "remove"}
    logs = {e["iteration"]: e for e in d["evaluations"]}
    return {i: {**r, "log": logs.get(i, {})} for i, r in rows.items()}


def _why(i: int, a: dict[str, Any], b: dict[str, Any]) -> str:
    """Why the default (a) picked another block than the exhaustive run (b) from the same architecture."""
    pick, best = f"A- {a['block']}", f"A- {b['block']}"
    ex = {r[0]: (k, r[1], r[2]) for k, r in enumerate(b["log"].get("ranking", []))}
    de = {r[0]: (k, r[1], r[2]) for k, r in enumerate(a["log"].get("ranking", []))}
    parts = []
    if pick in ex and best in ex:
        k, v, n = ex[pick]
        parts.append(f"on all {n} samples the default's pick ranks #{k + 1} (value {v:.5f}/ms against the best "
                     f"{ex[best][1]:.5f}/ms)")
    if best in de:
        k, v, n = de[best]
        parts.append(f"the default saw the exhaustive pick on {n} samples, value {v:.5f}/ms, #{k + 1}"
                     + (" (dropped by the halving)" if n < de[pick][2] else ""))
    rounds = a["log"].get("rounds")
    if rounds:
        parts.append(f"halving rounds {rounds}, settled by {a['log'].get('settled')}")
    if a["log"].get("settled") == "tie":
        parts.append(f"a tie of {a['log'].get('tied')} candidates on {rounds[-1][0]} samples each: none could beat "
                     "the leader by more than the tie margin of quality, so the leader (best mean) was taken")
    return f"iteration {i}: " + "; ".join(parts)


def _side_by_side(runs: dict[str, dict[str, Any]]) -> list[str]:
    a, b = _decisions(runs["default"]), _decisions(runs["exhaustive"])
    lines = [f"{'it':>3s}  {'default':22s} {'ms':>7s} {'quality':>8s} {'images':>7s} {'settled':>12s}   "
             f"{'exhaustive':22s} {'ms':>7s} {'quality':>8s} {'images':>7s}"]
    first_diff = None
    for i in sorted(set(a) | set(b)):
        ra, rb = a.get(i), b.get(i)

        def cells(r: dict[str, Any] | None, settled: bool = False) -> str:
            how = ""
            if settled and r is not None and r["log"].get("rounds"):
                how = f"{r['log'].get('settled', '')} @{r['log']['rounds'][-1][0]}"
            how = f" {how:>12s}" if settled else ""
            if r is None:
                return f"{'':22s} {'':>7s} {'':>8s} {'':>7s}{how}"
            q = "" if r["quality"] is None else f"{r['quality']:.4f}"
            return f"{r['block']:22s} {r['latency_ms']:7.3f} {q:>8s} {r['log'].get('samples', 0):7d}{how}"

        differs = ra is not None and rb is not None and ra["block"] != rb["block"]
        if differs and first_diff is None:
            first_diff = i
        lines.append(f"{i:3d}{'*' if differs else ' '} {cells(ra, settled=True)}   {cells(rb)}")
    both = len(set(a) & set(b))
    if first_diff is None:
        lines.append(f"in the {both} iterations both ran, the two runs removed the same blocks in the same order")
    else:
        same = sum(1 for i in a if i in b and a[i]["block"] == b[i]["block"])
        lines.append(f"* the decisions differ. They agree on {same} of {both} iterations; the "
                     f"first difference, from the same architecture:")
        lines.append("  " + _why(first_diff, a[first_diff], b[first_diff]))
        lines.append("  later rows start from different architectures, so a difference there follows from the first")
    return lines


def _common(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Both sides over the iterations both finished: images, seconds (wall, from each run's log), and the
    quality and latency after the last of them (what an unfinished side can be compared on)."""
    logs = {side: {e["iteration"]: e for e in r["evaluations"] if e["iteration"] > 0 and "rounds" in e}
            for side, r in runs.items()}
    common = sorted(set.intersection(*(set(v) for v in logs.values())))
    out: dict[str, Any] = {"iterations": len(common)}
    for side, r in runs.items():
        rows = _decisions(r)
        last = rows.get(common[-1]) if common else None
        out[side] = {"images": sum(int(logs[side][i].get("samples", 0)) for i in common),
                     "seconds": round(sum(float(logs[side][i].get("seconds", 0)) for i in common), 1),
                     "quality": None if last is None else last["quality"],
                     "latency_ms": None if last is None else last["latency_ms"]}
    return out


# --profile: each part of one decision, as (label, module file suffix, function); cumulative seconds
PARTS = [("UNet forward passes (denoising)", "model/elastic_unet.py", "forward"),
         ("DDIM sampling loop around them", "training/sampling.py", "ddim_sample"),
         ("digit classifier (scoring images)", "training/toy_digits.py", "probs"),
         ("prompt encoding", "training/toy_digits.py", "encode"),
         ("candidate models built (derive, union)", "training/checkpoints.py", "derive"),
         ("pricing candidates", "evolution/latency_costs.py", "latency"),
         ("halving statistics (t-tests)", "evolution/budget.py", "_beats"),
         ("scores kept (.npz)", "evolution/evolve.py", "keep_scores"),
         ("state and trajectory saved", "evolution/evolve.py", "save"),
         ("final model published", "evolution/evolve.py", "_publish"),
         ("starting model scored (before the decision)", "evolution/evolve.py", "_start")]


def profile(model: str, budget: str, exhaustive: Path, threads: int) -> list[str]:
    """One decision (iteration 1 from the start) of `evolve --eval-budget budget` in this process under
    cProfile, with the exhaustive side's prices when it has them: where its seconds go."""
    import cProfile
    import pstats
    import tempfile

    import torch

    from snapbench.evolution.budget import EvalBudget
    from snapbench.evolution.evaluators import ToyEvalConfig
    from snapbench.evolution.evolve import EvolveConfig, evolve
    from snapbench.evolution.executors import SerialExecutor
    from snapbench.evolution.latency_costs import BlockPriceTable
    from snapbench.evolution.options import cost_builder

    torch.set_num_threads(threads)
    state = exhaustive / ".evolve" / "state.json"
    if state.is_file():
        table = BlockPriceTable.from_dict(json.loads(state.read_text())["costs"])
        costs = lambda spec: table  # noqa: E731  (the same prices as the runs compared)
    else:
        costs = cost_builder(device="iphone14pro")
    config = EvolveConfig(target_fraction=0.6, add_phase=False, max_iterations=1, eval_budget=EvalBudget.parse(budget))
    prof = cProfile.Profile(time.process_time)  # CPU seconds: the machine is shared
    with tempfile.TemporaryDirectory() as tmp:
        cpu, wall = time.process_time(), time.perf_counter()
        prof.enable()
        r = evolve(model, Path(tmp) / "evo", config, evaluator=ToyEvalConfig(), costs=costs,
                   executor=SerialExecutor(), progress=False, say=lambda _: None)
        prof.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.values())
    lines = [f"one evolve call with --eval-budget {budget} --max-iterations 1 in one process ({threads} torch "
             f"thread(s)): {wall:.1f} s wall, {cpu:.1f} CPU s, {total:.1f} CPU s profiled; images: "
             f"{[e.get('samples') for e in r.evaluations]} (start, decision 1)",
             "cumulative CPU seconds per part (parts nest: the sampling loop holds the UNet passes):"]
    for label, suffix, fn in PARTS:
        ct = sum(v[3] for k, v in stats.items() if k[0].endswith(suffix) and k[2] == fn)
        lines.append(f"  {label:46s} {ct:8.2f} s  {ct / total:6.1%}")
    return lines


def screen(exhaustive: Path, steps: int, iterations: list[int], threads: int) -> list[str]:
    """Issue item 2's check, before any screening at fewer DDIM steps: each listed decision of the exhaustive
    side, its candidates scored again on every sample at `steps` DDIM steps (the parent too, in this process),
    against the values its kept scores give at the evaluator's own steps: Spearman rank correlation of the
    values, and where the full-step winner ranks at `steps`."""
    from dataclasses import replace

    import torch
    from scipy.stats import spearmanr

    from snapbench.evolution.actions import shrinking_actions
    from snapbench.evolution.evaluators import ToyEvalConfig
    from snapbench.evolution.executors import ScoreTask
    from snapbench.specs.arch_spec import ArchSpec

    torch.set_num_threads(threads)
    st = json.loads((exhaustive / ".evolve" / "state.json").read_text())
    full = ToyEvalConfig(**{k: v for k, v in st["settings"]["evaluator"].items()})
    few = replace(full, steps=steps)
    moves = st["settings"]["config"]["moves"]
    removed = [r for r in st["trajectory"] if r["phase"] == "remove"]
    lines = [f"values at {steps} DDIM steps against {full.steps} (every candidate on all {full.sample_count()} "
             f"samples; {threads} torch thread(s)):"]
    for it in iterations:
        z = np.load(exhaustive / ".evolve" / "scores" / f"iteration-{it:04d}.npz")
        labels, dl = [str(x) for x in z["labels"]], z["latency_delta_ms"]
        parent = ArchSpec.from_dict(st["initial"]["spec"], source="state")
        for r in removed[:it - 1]:
            parent = next(a for a in shrinking_actions(parent, moves) if a.label == f"{r['action']} {r['block']}"
                          ).apply(parent)
        by_label = {a.label: a for a in shrinking_actions(parent, moves)}
        specs = [parent] + [by_label[label].apply(parent) for label in labels]
        cpu = time.process_time()
        got = np.asarray(ScoreTask(st["checkpoint"], tuple(s.to_dict() for s in specs),
                                   tuple(range(full.sample_count())), few).run())
        cpu = time.process_time() - cpu
        value_full = ((z["scores"][1:] - z["scores"][0]).mean(1)) / -dl
        value_few = ((got[1:] - got[0]).mean(1)) / -dl
        rho = float(spearmanr(value_full, value_few).statistic)
        best = int(np.argmax(value_full))
        rank_few = int((value_few > value_few[best]).sum()) + 1
        lines.append(f"  decision {it}: {len(labels)} candidates, Spearman {rho:.3f}; the {full.steps}-step winner "
                     f"{labels[best]} ranks #{rank_few} at {steps} steps (top half: {rank_few <= len(labels) / 2}); "
                     f"{got.size} images in {cpu:.1f} CPU s")
    return lines


RULES = {"plain": "mean", "overlap": "overlap", "ties": "overlap"}  # replay name: budget.CUTS; "ties" is
# the overlap cut accepting statistical ties within --replay-margin (what `auto` does now)


def _replay_one(path: Path, orders: list[np.ndarray], confidence: float,
                margin: float) -> dict[str, Any] | None:
    """One exhaustive decision replayed under each halving rule; None if the scores are not complete.
    quality_lost: what the pick's value falls short of the exhaustive winner's, times the ms it saves (on all
    samples: the quality the decision gives up over its own step)."""
    from snapbench.evolution.budget import EvalBudget, Ties, _beats, successive_halving

    z = np.load(path)
    scores, dl, labels = z["scores"], z["latency_delta_ms"], [str(x) for x in z["labels"]]
    if np.isnan(scores).any() or len(dl) < 2:
        return None
    sign = -1.0 if dl[0] < 0 else 1.0  # removals: the least quality lost per ms saved is the best
    merit = sign * (scores[1:] - scores[0]) / dl[:, None]
    total = merit.shape[1]
    value = merit.mean(axis=1)
    best = int(successive_halving(len(dl), lambda a, n: merit[a, :n], [total], tiebreak=list(dl)).ranked[0])
    out: dict[str, Any] = {"iteration": int(path.stem.split("-")[-1]), "candidates": len(dl),
                           "winner": labels[best], "winner_saving_ms": round(abs(float(dl[best])), 4),
                           # rivals the exhaustive winner itself does not beat on all samples (one paired
                           # t-test each at `confidence`): a rule that must pick the same winner has to score
                           # each of them on every sample too
                           "not_beaten": sum(1 for j in range(len(dl))
                                             if j != best and not _beats(merit[best], merit[j], confidence))}
    for rule, cut in RULES.items():
        picks, images, lost, tied = [], [], [], []
        for order in orders:
            m = merit[:, order]
            asked: set[tuple[int, int]] = set()

            def merits(alive: list[int], n: int) -> np.ndarray:
                asked.update((c, s) for c in alive for s in range(n))
                return m[alive, :n]

            budget = EvalBudget(tie_margin=margin if rule == "ties" else 0.0)
            ties = Ties(budget.tie_margin, budget.tie_from(total), list(np.abs(dl))) if budget.tie_margin else None
            d = successive_halving(len(dl), merits, budget.rounds(total), tiebreak=list(dl),
                                   confidence=confidence, cut=cut, ties=ties)
            pick = d.ranked[0]
            picks.append(pick == best)
            images.append(len(asked) + total - d.samples[pick])  # the winner is then scored on all samples
            lost.append(float(value[best] - value[pick]) * abs(float(dl[pick])))
            tied.append(d.settled == "tie")
        out[rule] = {"picks_winner": float(np.mean(picks)), "images": float(np.mean(images)),
                     "quality_lost": float(np.mean(lost)), "quality_lost_max": float(np.max(lost)),
                     "ties": float(np.mean(tied)), "own_order_picks_winner": bool(picks[0])}
    out["exhaustive_images"] = len(dl) * total
    return out


def replay(folder: Path, permutations: int, confidence: float = 0.95,
           margin: float | None = None) -> list[dict[str, Any]]:
    """Every complete decision in `folder`'s .evolve/scores/, replayed (the run's own order first)."""
    rng = np.random.default_rng(0)
    rows = []
    for path in sorted((folder / ".evolve" / "scores").glob("iteration-*.npz")):
        total = np.load(path)["scores"].shape[1]
        orders = [np.arange(total)] + [rng.permutation(total) for _ in range(permutations)]
        if (r := _replay_one(path, orders, confidence, DEFAULT_TIE_MARGIN if margin is None else margin)) is not None:
            rows.append(r)
    return rows


def _replay_lines(rows: list[dict[str, Any]], permutations: int) -> list[str]:
    lines = [f"replay of the exhaustive decisions ({permutations} random sample orders besides the run's own): "
             "share picking the exhaustive winner (own order y/n), images per decision",
             f"{'it':>3s} {'winner':16s} {'saves ms':>8s} {'cands':>5s} {'tied':>4s}  "
             + "  ".join(f"{rule:>12s} {'images':>7s}" for rule in RULES) + f"  {'exhaustive':>10s}"]
    for r in rows:
        cells = "  ".join(f"{r[rule]['picks_winner']:10.2f} {'y' if r[rule]['own_order_picks_winner'] else 'n'} "
                          f"{r[rule]['images']:7.0f}" for rule in RULES)
        lines.append(f"{r['iteration']:3d} {r['winner']:16s} {r['winner_saving_ms']:8.4f} {r['candidates']:5d} "
                     f"{r['not_beaten']:4d}  "
                     f"{cells}  {r['exhaustive_images']:10d}")
    lines.append("tied: rivals the exhaustive winner does not beat on all its samples (paired one-sided t-test at "
                 "the replay confidence): every rule that makes its decision must score them on every sample")
    if rows:
        for rule in RULES:
            lines.append(f"{rule}: picks the exhaustive winner in {np.mean([r[rule]['picks_winner'] for r in rows]):.3f} "
                         f"of decisions, {sum(r[rule]['images'] for r in rows):.0f} images against exhaustive "
                         f"{sum(r['exhaustive_images'] for r in rows)}; quality given up per decision "
                         f"{np.mean([r[rule]['quality_lost'] for r in rows]):.5f} on average, summed over the "
                         f"decisions {sum(r[rule]['quality_lost'] for r in rows):.4f} (worst single replay "
                         f"{max(r[rule]['quality_lost_max'] for r in rows):.4f}); ties called in "
                         f"{np.mean([r[rule]['ties'] for r in rows]):.2f} of decisions")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", help="a robust-trained toy-digits folder (default: train one into OUT/toy)")
    ap.add_argument("--out", default="runs/bench-evolve")
    ap.add_argument("--device", default="iphone14pro")
    ap.add_argument("--target-fraction", type=float, default=0.6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="evaluation processes (2 on an idle 2-core machine)")
    ap.add_argument("--samples-per-prompt", type=int, help="toy images per digit [8]; 1 for a quick smoke run")
    ap.add_argument("--tie-margin", type=float, default=DEFAULT_TIE_MARGIN,
                    help=f"--eval-tie-margin of both sides (exhaustive ignores it) [{DEFAULT_TIE_MARGIN}]")
    ap.add_argument("--only", choices=SIDES, help="run one side (the other is read if it is there)")
    ap.add_argument("--report-only", action="store_true", help="run nothing; report what OUT holds")
    ap.add_argument("--replay", type=int, nargs="?", const=200, metavar="N",
                    help="replay the exhaustive side's decisions under both halving rules on N sample orders [200]")
    ap.add_argument("--replay-confidence", type=float, default=0.95, help="--eval-confidence of the replay [0.95]")
    ap.add_argument("--replay-margin", type=float, help="--eval-tie-margin of the replay's ties rule "
                    f"[{DEFAULT_TIE_MARGIN}]")
    ap.add_argument("--profile", choices=("auto", "exhaustive"), help="profile one decision under this budget "
                    "in this process (cProfile) and print where its time goes; runs nothing else")
    ap.add_argument("--screen-steps", type=int, metavar="K", help="score decisions --screen-iterations of the "
                    "exhaustive side at K DDIM steps and print how their values rank against full steps; runs "
                    "nothing else")
    ap.add_argument("--screen-iterations", type=int, nargs="+", default=[1], metavar="N")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    if args.profile:
        print(f"load average {[round(v, 2) for v in load_before]} on {os.cpu_count()} CPUs")
        print("\n".join(profile(args.model or _train(out, args.threads), args.profile, out / "exhaustive",
                                 args.threads)))
        return
    if args.screen_steps:
        print(f"load average {[round(v, 2) for v in load_before]} on {os.cpu_count()} CPUs")
        print("\n".join(screen(out / "exhaustive", args.screen_steps, args.screen_iterations, args.threads)))
        return
    if not args.report_only:
        model = args.model or _train(out, args.threads)
        for side in SIDES:
            if args.only in (None, side):
                budget = "auto" if side == "default" else "exhaustive"
                if _start_like(out / side, out / SIDES[1 - SIDES.index(side)], budget, args.tie_margin):
                    print(f"{side}: starts from the other side's saved start (its prices and starting quality)",
                          file=sys.stderr)
                t = time.perf_counter()
                rc = _run_side(_evolve_args(model, out / side, budget, args), out / side)
                print(f"{side}: exit {rc} after {time.perf_counter() - t:.0f} s wall", file=sys.stderr)
    runs = {side: r for side in SIDES if (r := _read(out / side)) is not None}
    load_after = os.getloadavg()
    doc: dict[str, Any] = {side: _summary(r) for side, r in runs.items()}
    if len(runs) == 2:
        doc["common"] = _common(runs)
    doc["load_average"] = {"before": [round(v, 2) for v in load_before], "after": [round(v, 2) for v in load_after],
                           "cpus": os.cpu_count()}
    replayed = replay(out / "exhaustive", args.replay, args.replay_confidence, args.replay_margin) if args.replay is not None else None
    if replayed is not None:
        doc["replay"] = replayed
    if args.json:
        print(json.dumps(doc, indent=1))
        return
    print(f"load average (1, 5, 15 min) before {doc['load_average']['before']}, after {doc['load_average']['after']} "
          f"on {os.cpu_count()} CPUs")
    print(f"{'side':11s} {'seconds':>8s} {'cpu s':>8s} {'iterations':>10s} {'images':>8s} {'latency ms':>10s} {'target':>7s} "
          f"{'reached':>7s} {'quality':>8s}  finished")
    for side, s in doc.items():
        if side in SIDES:
            cpu = "" if s["cpu_seconds"] is None else f"{s['cpu_seconds']:.1f}"
            print(f"{side:11s} {s['seconds']:8.1f} {cpu:>8s} {s['iterations']:10d} {s['eval_samples']:8d} "
                  f"{s['final_latency_ms']:10.3f} {s['target_ms']:7.3f} {str(s['reached_target']):>7s} "
                  f"{s['final_quality']:8.4f}  {s['finished']}")
    if len(runs) == 2:
        c = doc["common"]
        if c["iterations"]:
            cd, ce = c["default"], c["exhaustive"]
            print(f"over the {c['iterations']} iterations both ran: images {cd['images']} vs {ce['images']} "
                  f"({cd['images'] / max(ce['images'], 1):.2f}x), seconds {cd['seconds']} vs {ce['seconds']} "
                  f"({cd['seconds'] / max(ce['seconds'], 1e-9):.2f}x), then quality {cd['quality']:.4f} vs "
                  f"{ce['quality']:.4f} at {cd['latency_ms']:.3f} vs {ce['latency_ms']:.3f} ms")
        d, e = doc["default"], doc["exhaustive"]
        cpu_ratio = (f", CPU seconds {d['cpu_seconds'] / e['cpu_seconds']:.2f}x" if d["cpu_seconds"] and e["cpu_seconds"]
                     else "")
        print(f"whole runs{'' if d['finished'] and e['finished'] else ' (one unfinished: not comparable)'}, "
              f"default / exhaustive: seconds {d['seconds'] / max(e['seconds'], 1e-9):.2f}x{cpu_ratio}, images "
              f"{d['eval_samples'] / max(e['eval_samples'], 1):.2f}x, final quality {d['final_quality']:.4f} vs "
              f"{e['final_quality']:.4f} (difference {d['final_quality'] - e['final_quality']:+.4f})")
        print()
        print("\n".join(_side_by_side(runs)))
    if replayed is not None:
        print()
        print("\n".join(_replay_lines(replayed, args.replay)))


if __name__ == "__main__":
    main()
