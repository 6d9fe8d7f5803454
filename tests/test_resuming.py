"""Resuming a run under other settings: one line, in one wording for every resumable command, naming each
setting, the value the run was started with and the exact options that resume it (`snapbench.resuming`)."""

from __future__ import annotations

import json

import pytest
from evolution_helpers import CA_MS, PenaltyEval, fixed_costs, toy_folder  # noqa: F401  (fixture)

from snapbench.cli import main
from snapbench.distillation.step_distillation import DISTILL_FLAGS, DistillConfig
from snapbench.errors import SnapbenchError
from snapbench.evolution.evolve import RESUME_FLAGS, EvolveConfig, evolve
from snapbench.evolution.executors import SerialExecutor
from snapbench.evolution.robust_training import TRAIN_FLAGS, SkipProbabilities, TrainConfig
from snapbench.resuming import Flag, check_same
from snapbench.specs.presets import load_preset
from snapbench.training.loop import check_resumable


def _line(stored, asked, flags) -> str:
    with pytest.raises(SnapbenchError) as e:
        check_same("runs/x", stored, asked, flags)
    return str(e.value)


def test_the_line_names_the_setting_its_stored_value_and_the_flag_to_add():
    said = _line(TrainConfig(learning_rate=1e-4), TrainConfig(learning_rate=1e-3), TRAIN_FLAGS)
    assert "\n" not in said
    assert "learning_rate=0.0001 (this command: 0.001)" in said
    assert "add `--lr 0.0001`" in said and "another --out" in said
    assert "same command" not in said


def test_every_kind_of_option_is_given_back_as_typed():
    stored = TrainConfig(robust=False, skip=SkipProbabilities(0.2, 0.1), variant_moves=(), prediction_type=None)
    asked = TrainConfig(robust=True, skip=SkipProbabilities(0.1, 0.1), variant_moves=("mqa", "ffn"),
                        prediction_type="epsilon")
    said = _line(stored, asked, TRAIN_FLAGS)
    # a boolean pair, a nested setting (skip.ca) and several at once; an option whose default is the stored
    # value (none given) is left out
    assert "add `--normal --skip-ca 0.2`" in said
    assert "leave out --prediction-type, --variant-moves" in said
    assert "skip.ca=0.2 (this command: 0.1)" in said and "skip.rb" not in said
    moves = _line(TrainConfig(robust=True, variant_moves=("mqa", "ffn")), TrainConfig(robust=True), TRAIN_FLAGS)
    assert "add `--variant-moves mqa,ffn`" in moves


def test_a_setting_no_option_sets_says_this_version_cannot_resume():
    said = _line(TrainConfig(weight_decay=0.01), TrainConfig(weight_decay=0.0), TRAIN_FLAGS)
    assert "weight_decay=0.01 (this command: 0.0)" in said and "no option sets weight_decay" in said
    assert "cannot resume" in said and "add `" not in said


def test_steps_and_save_interval_may_change_and_distill_names_its_own_flags(tmp_path):
    check_resumable(DistillConfig(steps=10, save_every=5), DistillConfig(steps=20, save_every=1), tmp_path,
                    DISTILL_FLAGS)  # a resumed run goes on to more steps
    with pytest.raises(SnapbenchError, match="add `--vanilla --gamma 0.5`"):
        check_resumable(DistillConfig(cfg_aware=False, gamma=0.5), DistillConfig(), tmp_path, DISTILL_FLAGS)


def test_one_flag_for_several_settings_is_given_once():
    flags = {"budget.mode": Flag("--eval-budget", arg=lambda s: str(s["budget.first"])),
             "budget.first": Flag("--eval-budget", arg=lambda s: str(s["budget.first"]))}
    said = _line({"budget": {"mode": "halving", "first": 8}}, {"budget": {"mode": "x", "first": 4}}, flags)
    assert said.count("--eval-budget") == 1 and "add `--eval-budget 8`" in said


@pytest.mark.slow  # a toy run of two iterations, cut three ways for its prices: about 10 s
def test_evolve_after_the_lr_default_changed_names_the_flag_and_resumes_with_it(tmp_path, toy_folder):
    """The case that asked for this: a run started with --lr 1e-4, resumed under a default of 1e-3."""
    spec = load_preset("toy-digits")
    target = fixed_costs(spec).latency(spec) - 2 * CA_MS
    ev = PenaltyEval((("CA[Down-1, 2]", 0.06), ("CA[Up-3, 1]", 0.10)))

    def run(lr: float, iterations: int):
        return evolve(toy_folder, tmp_path / "evo", EvolveConfig(target_ms=target, add_phase=False,
                                                                 max_iterations=iterations,
                                                                 train=TrainConfig(learning_rate=lr)),
                      evaluator=ev, costs=fixed_costs, executor=SerialExecutor(), progress=False)

    assert run(1e-4, 1).iterations == 1
    state = (tmp_path / "evo" / ".evolve" / "state.json").read_text()
    with pytest.raises(SnapbenchError) as e:
        run(1e-3, 5)
    said = str(e.value)
    assert "config.train.learning_rate=0.0001 (this command: 0.001)" in said and "add `--lr 0.0001`" in said
    assert (tmp_path / "evo" / ".evolve" / "state.json").read_text() == state  # refused before any work
    assert run(1e-4, 5).iterations > 1  # the flag the line named resumes it


def test_evolve_names_the_eval_budget_it_was_started_with(tmp_path):
    from snapbench.evolution.evolve import _check_same

    stored = {"config": {"eval_budget": {"mode": "halving", "first": 8}, "add_phase": True}}
    asked = {"config": {"eval_budget": {"mode": "exhaustive", "first": None}, "add_phase": False}}
    with pytest.raises(SnapbenchError) as e:
        _check_same(stored, asked, tmp_path)
    assert "add `--add --eval-budget 8`" in str(e.value)
    assert set(RESUME_FLAGS) >= {"config.train.learning_rate", "device", "config.moves"}


def test_train_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--model", "toy-digits", "--out", str(out), "--steps", "1", "--batch-size", "2",
                 "--lr", "0.002", "--skip-rb", "0.3"]) == 0
    capsys.readouterr()
    assert main(["train", "--model", "toy-digits", "--out", str(out), "--steps", "2", "--batch-size", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "add `--lr 0.002 --skip-rb 0.3`" in err
    assert json.loads((out / "train_state.json").read_text())["step"] == 1
