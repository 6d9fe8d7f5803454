"""Executors: candidate evaluations on a local Ray and in local worker processes give the in-process results."""

from __future__ import annotations

import pytest
from evolution_helpers import TINY_EVAL, toy_folder  # noqa: F401  (fixture)

from snapbench.errors import SnapbenchError
from snapbench.evolution.actions import Action
from snapbench.evolution.executors import EvalTask, ProcessExecutor, RayExecutor, SerialExecutor, check_ray_address
from snapbench.specs.presets import load_preset


def _tasks(folder):
    spec = load_preset("toy-digits")
    removed = Action("-", "Up-3", "CA1").apply(spec).to_dict()
    copied = Action("+", "Mid", "RB2").apply(spec).to_dict()
    return [EvalTask(str(folder), None, (), TINY_EVAL), EvalTask(str(folder), removed, (), TINY_EVAL),
            EvalTask(str(folder), copied, (), TINY_EVAL)]


def test_ray_executor_evaluates_actions_like_this_process(toy_folder, monkeypatch):
    tasks = _tasks(toy_folder)
    here = SerialExecutor().map(tasks)
    # another cluster announced on this machine (as `ray start`, or a test's Cluster, leaves it) is not joined:
    # a bare ray.init() would connect there and refuse num_cpus
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")
    ray_exec = RayExecutor(None, num_cpus=1)  # a private local Ray: ray.init("local", num_cpus=1, no dashboard)
    try:
        done = []
        remote = ray_exec.map(tasks, on_done=lambda: done.append(1))
    finally:
        ray_exec.close()
    assert len(done) == 3
    assert [q.quality for q in remote] == pytest.approx([q.quality for q in here], abs=1e-5)


@pytest.mark.slow
def test_process_executor(toy_folder):
    tasks = _tasks(toy_folder)[:2]
    pool = ProcessExecutor(2)
    try:
        got = pool.map(tasks)
    finally:
        pool.close()
    assert [q.quality for q in got] == pytest.approx([q.quality for q in SerialExecutor().map(tasks)], abs=1e-5)


def test_unreachable_ray_address_fails_fast():
    with pytest.raises(SnapbenchError, match="does not answer"):
        check_ray_address("127.0.0.1:9", timeout=2)
    with pytest.raises(SnapbenchError, match="host:port"):
        check_ray_address("nonsense")
