"""Evolution (Algorithm 1) on a fixed latency table: removal order, the add phase, resume, output folder."""

from __future__ import annotations

import json

import pytest
from evolution_helpers import (  # noqa: F401  (toy_folder is a fixture)
    CA_MS,
    RB_MS,
    SHORTCUT_MS,
    TINY_EVAL,
    PenaltyEval,
    fixed_costs,
    fixed_table_csv,
    toy_folder,
)

from snapbench.cli import main
from snapbench.evolution.actions import Action, addition_actions, parse_action, removal_actions
from snapbench.evolution.evolve import EvolveConfig, evolve
from snapbench.evolution.executors import SerialExecutor
from snapbench.evolution.trajectory import TRAJECTORY_COLUMNS, read_trajectory
from snapbench.specs.presets import load_preset

# RB[Mid, 2]: loses 0.04 for 0.5 ms (0.08 / ms); CA[Up-3, 1]: 0.10 for 1.0 ms (0.10 / ms);
# CA[Down-1, 2]: 0.06 for 1.0 ms (0.06 / ms); RB[Up-3, 3] (shortcut left): 0.06 for 0.3 ms (0.2 / ms).
# Every other block loses 0.5. Expected order: CA[Down-1, 2], RB[Mid, 2], CA[Up-3, 1], RB[Up-3, 3].
PENALTIES = (("RB[Mid, 2]", 0.04), ("CA[Up-3, 1]", 0.10), ("CA[Down-1, 2]", 0.06), ("RB[Up-3, 3]", 0.06))


def test_cost_model_from_a_fixed_table():
    spec = load_preset("toy-digits")
    cost = fixed_costs(spec)
    full = cost.latency(spec)
    # 16 CA + 22 RB + 9 aux blocks (time embedding, conv_in, 3 down-, 3 upsamplers, conv_out)
    assert full == pytest.approx(16 * CA_MS + 22 * RB_MS + 9 * 0.1)
    b = cost.blocks["RB[Up-3, 3]"]
    assert (b.kept_ms, b.removed_ms) == (RB_MS, SHORTCUT_MS)  # up ResNets keep their 1x1 shortcut
    assert cost.blocks["RB[Mid, 2]"].removed_ms == 0.0
    assert cost.backend(spec) == "fixed"
    assert cost.floor(spec) < full
    spec2 = Action("+", "Up-1", "CA2").apply(spec)
    assert cost.latency(spec2) == pytest.approx(full + CA_MS)


def test_actions_round_trip():
    spec = load_preset("toy-digits")
    a = Action("-", "Up-1", "CA2")
    assert a.label == "A- CA[Up-1, 2]" and parse_action(a.label) == a
    removed = a.apply(spec)
    assert Action("-", "Up-1", "CA2") not in removal_actions(removed)
    assert Action("+", "Up-1", "CA2").apply(removed).to_dict() == spec.to_dict()  # A+ restores
    copied = Action("+", "Up-1", "CA2").apply(spec)
    assert copied.counts()["Up-1"]["CA"] == 4
    assert Action("-", "Up-1", "CA2").apply(copied).to_dict() == spec.to_dict()  # A- drops the copy first
    assert len(addition_actions(spec)) == 38


def _run(model, out, target, evaluator, **kw):
    return evolve(model, out, EvolveConfig(target_ms=target, **kw), evaluator=evaluator, costs=fixed_costs,
                  executor=SerialExecutor(), progress=False)


def test_removal_order_follows_the_value_score(tmp_path, toy_folder):
    spec = load_preset("toy-digits")
    full = fixed_costs(spec).latency(spec)
    target = full - 2 * CA_MS - RB_MS - (RB_MS - SHORTCUT_MS)  # exactly the four cheap removals
    r = _run(toy_folder, tmp_path / "evo", target, PenaltyEval(PENALTIES), add_phase=False)
    steps = [row for row in r.trajectory if row["phase"] == "remove"]
    assert [s["block"] for s in steps] == ["CA[Down-1, 2]", "RB[Mid, 2]", "CA[Up-3, 1]", "RB[Up-3, 3]"]
    assert [round(s["value"], 6) for s in steps] == [0.06, 0.08, 0.1, 0.2]
    assert r.final_latency_ms == pytest.approx(target)
    assert r.final_quality == pytest.approx(1 - 0.26)
    assert r.initial_quality == pytest.approx(1.0) and r.initial_latency_ms == pytest.approx(full)


def test_one_iteration_with_the_toy_evaluator_and_an_add_phase(tmp_path, toy_folder):
    spec = load_preset("toy-digits")
    full = fixed_costs(spec).latency(spec)
    r = _run(toy_folder, tmp_path / "evo", full - 0.01, TINY_EVAL, max_iterations=1)
    assert r.iterations == 1
    removal = r.trajectory[1]
    assert removal["action"] == "A-" and removal["latency_ms"] < full
    assert r.final_latency_ms == pytest.approx(removal["latency_ms"])
    # add phase: a copy gains quality and fits the budget, so it is taken, then nothing more fits
    r2 = _run(toy_folder, tmp_path / "evo2", full + RB_MS, PenaltyEval(PENALTIES, copy_gain=0.01))
    adds = [row for row in r2.trajectory if row["phase"] == "add"]
    assert len(adds) == 1 and adds[0]["action"] == "A+" and adds[0]["block"].startswith("RB")
    assert r2.final_latency_ms == pytest.approx(full + RB_MS)


@pytest.mark.parametrize("saved_as_done", [False, True])
def test_a_higher_max_iterations_goes_on_from_where_the_limit_stopped(tmp_path, toy_folder, saved_as_done):
    """A run stopped by --max-iterations continues when the same command asks for more (it used to be saved
    as done and stay there); saved_as_done: a state written that way by the version before the fix."""
    spec = load_preset("toy-digits")
    target = fixed_costs(spec).latency(spec) - 2 * CA_MS - RB_MS
    ev = PenaltyEval(PENALTIES)
    whole = _run(toy_folder, tmp_path / "whole", target, ev, add_phase=False)
    out = tmp_path / "limited"
    first = _run(toy_folder, out, target, ev, add_phase=False, max_iterations=1)
    assert first.iterations == 1 and first.final_latency_ms > target
    assert [r["phase"] for r in first.trajectory] == ["start", "remove", "final"]
    if saved_as_done:
        path = out / ".evolve" / "state.json"
        state = json.loads(path.read_text())
        path.write_text(json.dumps({**state, "phase": "done"}))
    said: list[str] = []
    more = evolve(toy_folder, out, EvolveConfig(target_ms=target, add_phase=False, max_iterations=50), evaluator=ev,
                  costs=fixed_costs, executor=SerialExecutor(), progress=False, say=said.append)
    assert more.final_latency_ms <= target and more.iterations == whole.iterations
    assert [r["block"] for r in more.trajectory] == [r["block"] for r in whole.trajectory]
    assert [r["phase"] for r in more.trajectory].count("final") == 1 and more.trajectory[-1]["phase"] == "final"
    assert any("going on to --max-iterations 50" in line for line in said) == saved_as_done


def test_resume_after_a_kill_gives_the_uninterrupted_result(tmp_path, toy_folder):
    spec = load_preset("toy-digits")
    target = fixed_costs(spec).latency(spec) - 2 * CA_MS - RB_MS
    ev = PenaltyEval(PENALTIES)
    whole = _run(toy_folder, tmp_path / "whole", target, ev, add_phase=False)

    class Killed(BaseException):
        pass

    def kill(st):
        if st.iteration == 2:
            raise Killed

    with pytest.raises(Killed):
        evolve(toy_folder, tmp_path / "cut", EvolveConfig(target_ms=target, add_phase=False), evaluator=ev,
               costs=fixed_costs, executor=SerialExecutor(), progress=False, after_iteration=kill)
    state = json.loads((tmp_path / "cut" / ".evolve" / "state.json").read_text())
    assert state["iteration"] == 2 and not (tmp_path / "cut" / "arch.json").exists()
    resumed = _run(toy_folder, tmp_path / "cut", target, ev, add_phase=False)
    assert [r["block"] for r in resumed.trajectory] == [r["block"] for r in whole.trajectory]
    assert resumed.final_quality == whole.final_quality
    # a finished run asked again returns its result without evaluating anything
    assert _run(toy_folder, tmp_path / "cut", target, ev, add_phase=False).final_latency_ms == resumed.final_latency_ms
    # other settings in the same folder: refused, state untouched
    with pytest.raises(Exception, match="holds a run started with other settings: config.target_ms="):
        _run(toy_folder, tmp_path / "cut", target - 1, ev, add_phase=False)


def test_training_steps_between_iterations(tmp_path, toy_folder):
    from snapbench.evolution.robust_training import TrainConfig

    spec = load_preset("toy-digits")
    r = evolve(toy_folder, tmp_path / "evo", EvolveConfig(target_ms=fixed_costs(spec).latency(spec) - 0.01,
                                                          train_steps=1, train=TrainConfig(batch_size=2),
                                                          add_phase=False),
               evaluator=TINY_EVAL, costs=fixed_costs, executor=SerialExecutor(), progress=False)
    assert [row["action"] for row in r.trajectory] == ["start", "A-", "train", "final"]
    assert r.train_steps == 1
    assert len(list((tmp_path / "evo" / ".evolve").glob("ckpt-*"))) == 1


def test_the_final_architecture_trains_on_after_the_last_decision(tmp_path, toy_folder, monkeypatch):
    """Algorithm 1: training between decisions, then the evolved network keeps training; a run killed in
    that last training resumes into it, and the steps add up (what a fair baseline must be given)."""
    from snapbench.evolution import evolve as evolve_module
    from snapbench.evolution.robust_training import TrainConfig

    spec = load_preset("toy-digits")
    config = EvolveConfig(target_ms=fixed_costs(spec).latency(spec) - 0.01, train_steps=1, final_steps=2,
                          final_robust=False, train=TrainConfig(batch_size=2), add_phase=False)

    class Killed(BaseException):
        pass

    real = evolve_module.EvolutionRun.final_training

    def killed(self):
        raise Killed

    monkeypatch.setattr(evolve_module.EvolutionRun, "final_training", killed)
    with pytest.raises(Killed):
        evolve(toy_folder, tmp_path / "evo", config, evaluator=TINY_EVAL, costs=fixed_costs,
               executor=SerialExecutor(), progress=False)
    state = json.loads((tmp_path / "evo" / ".evolve" / "state.json").read_text())
    assert state["phase"] == "done" and not state["final_trained"] and state["train_steps_done"] == 1
    monkeypatch.setattr(evolve_module.EvolutionRun, "final_training", real)
    said: list[str] = []
    r = evolve(toy_folder, tmp_path / "evo", config, evaluator=TINY_EVAL, costs=fixed_costs,
               executor=SerialExecutor(), progress=False, say=said.append)
    assert [row["action"] for row in r.trajectory] == ["start", "A-", "train", "train", "final"]
    assert [row["train_steps"] for row in r.trajectory] == [0, 0, 1, 3, 3]
    assert r.train_steps == 3
    assert any("2 training steps (final)" in s for s in said)  # --final-normal: no "robust"
    assert [p.name for p in (tmp_path / "evo" / ".evolve").glob("ckpt-*")] == ["ckpt-final"]
    # done and trained: asked again, nothing trains
    again = evolve(toy_folder, tmp_path / "evo", config, evaluator=TINY_EVAL, costs=fixed_costs,
                   executor=SerialExecutor(), progress=False)
    assert again.train_steps == 3 and len(again.trajectory) == len(r.trajectory)


def test_cli_evolve_json_and_output_folder(tmp_path, toy_folder, capsys, fixed_table_csv):
    table = fixed_table_csv
    out = tmp_path / "evo"
    args = ["evolve", "--model", str(toy_folder), "--out", str(out), "--fixed-table", str(table),
            "--target-fraction", "0.99", "--samples-per-prompt", "1", "--eval-steps", "1", "--no-add", "--json"]
    assert main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("initial_latency_ms", "final_latency_ms", "initial_quality", "final_quality", "arch_spec",
                "trajectory"):
        assert key in doc
    assert doc["final_latency_ms"] <= 0.99 * doc["initial_latency_ms"]
    # samples and seconds per iteration, and how each decision was reached
    assert doc["eval_budget"].startswith("successive halving over [2, 4, 8, 10]")
    first = doc["evaluations"][1]
    assert first["iteration"] == 1 and first["seconds"] >= 0 and first["samples"] > 0
    assert first["rounds"][0] == [2, first["candidates"]] and len(first["ranking"]) == first["candidates"]
    assert doc["eval_samples"] == sum(e["samples"] for e in doc["evaluations"])
    rows = read_trajectory(out / "trajectory.csv")
    assert rows[0]["eval_samples"] == 10 and rows[1]["eval_samples"] == first["samples"]
    assert rows[0]["action"] == "start" and rows[-1]["action"] == "final"
    assert (out / "trajectory.csv").read_text().splitlines()[0] == ",".join(TRAJECTORY_COLUMNS)
    from snapbench.backbones import resolve_model

    src = resolve_model(out)  # convert / profile / report read the folder
    assert src.spec.to_dict()["stages"] == doc["arch_spec"]["stages"] and src.weights_dir is not None


def test_target_below_the_floor_is_one_line_and_writes_nothing(tmp_path, toy_folder, capsys, fixed_table_csv):
    table = fixed_table_csv
    out = tmp_path / "evo"
    assert main(["evolve", "--model", str(toy_folder), "--out", str(out), "--fixed-table", str(table),
                 "--target-ms", "0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "below the floor" in err and "ms" in err
    assert not (out / ".evolve" / "state.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--evaluator", "clip", "--prompts", "{empty}"], "prompts file is empty"),
    (["--evaluator", "clip", "--prompts", "{prompts}"], "needs local weights"),
    (["--evaluator", "clip", "--prompts", "{prompts}", "--clip-weights", "{tmp}", "--pipeline", "{tmp}"],
     "missing"),
    (["--ray-address", "127.0.0.1:9"], "does not answer"),
    (["--device", "nokia3310"], "nokia3310"),
    (["--eval-budget", "1"], "the minimum is 2"),
    (["--eval-budget", "often"], "exhaustive, auto"),
])
def test_bad_inputs_exit_2(tmp_path, toy_folder, capsys, args, message):
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "prompts.txt").write_text("a cat\n")
    fill = {"{empty}": str(tmp_path / "empty.txt"), "{prompts}": str(tmp_path / "prompts.txt"), "{tmp}": str(tmp_path)}
    args = [fill.get(a, a) for a in args]
    out = tmp_path / "evo"
    assert main(["evolve", "--model", str(toy_folder), "--out", str(out), "--target-fraction", "0.6", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert not out.exists()


def test_two_removals_per_iteration_keep_the_order(tmp_path, toy_folder):
    spec = load_preset("toy-digits")
    target = fixed_costs(spec).latency(spec) - 2 * CA_MS - RB_MS - (RB_MS - SHORTCUT_MS)
    r = _run(toy_folder, tmp_path / "evo", target, PenaltyEval(PENALTIES), add_phase=False, removals_per_iteration=2)
    steps = [row for row in r.trajectory if row["phase"] == "remove"]
    assert [s["block"] for s in steps] == ["CA[Down-1, 2]", "RB[Mid, 2]", "CA[Up-3, 1]", "RB[Up-3, 3]"]
    assert [s["iteration"] for s in steps] == [1, 1, 2, 2]
    assert steps[1]["quality"] == pytest.approx(0.9) and steps[3]["quality"] == pytest.approx(0.74)
    assert steps[1]["quality_delta"] == pytest.approx(-0.04)
