"""Starting Ray on a loaded machine: Ray's own GCS timeouts raised while it starts (the names the installed
ray reads), and one more start, said in a line, when a local head does not come up in time. No cluster is
started here: the installed `ray` module's `init` is replaced by one that records what it was given."""

from __future__ import annotations

import inspect
import mmap
import os
from pathlib import Path

import pytest

from snapbench.errors import SnapbenchError
from snapbench.ray_cluster import RAY_TIMEOUTS, patient_ray, start_local

ray = pytest.importorskip("ray")


def test_the_timeouts_are_names_the_installed_ray_reads():
    from ray._private import node, ray_constants

    core = Path(ray.__file__).with_name("_raylet.so")
    with core.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        # RayConfig (C++) reads RAY_<setting> for each of its settings in every Ray process
        assert m.find(b"RAY_gcs_rpc_server_reconnect_timeout_s\0") >= 0
    assert '"RAY_gcs_server_request_timeout_seconds"' in inspect.getsource(ray_constants)
    assert '"RAY_gcs_server_port_wait_time_s"' in inspect.getsource(node)
    assert set(RAY_TIMEOUTS) == {"RAY_gcs_rpc_server_reconnect_timeout_s", "RAY_gcs_server_request_timeout_seconds",
                                 "RAY_gcs_server_port_wait_time_s"}


def test_patient_ray_sets_what_the_user_did_not_and_restores_the_environment():
    env = {"RAY_gcs_server_port_wait_time_s": "7", "PATH": "/bin"}
    with patient_ray(env) as added:
        assert env["RAY_gcs_rpc_server_reconnect_timeout_s"] == "300"
        assert env["RAY_gcs_server_port_wait_time_s"] == "7"  # the user's own stays
        assert "RAY_gcs_server_port_wait_time_s" not in added
    assert env == {"RAY_gcs_server_port_wait_time_s": "7", "PATH": "/bin"}


class _Init:
    """ray.init that fails the first `fail` calls as Ray does when its node times out during startup, and
    records the environment each call saw."""

    def __init__(self, fail: int, error: Exception | None = None) -> None:
        self.fail, self.seen, self.error = fail, [], error

    def __call__(self, **kw):
        self.seen.append({k: os.environ.get(k) for k in RAY_TIMEOUTS} | kw)
        if len(self.seen) <= self.fail:
            raise self.error or Exception("The current node timed out during startup. This could happen because "
                                          "some of the raylet failed to startup or the GCS has become overloaded.")


@pytest.fixture
def fake_ray(monkeypatch):
    shutdowns = []
    monkeypatch.setattr(ray, "shutdown", lambda: shutdowns.append(1))
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    for k in RAY_TIMEOUTS:
        monkeypatch.delenv(k, raising=False)
    return shutdowns


def test_a_local_head_that_does_not_come_up_is_started_once_more(monkeypatch, fake_ray):
    from snapbench.evolution.executors import RayExecutor

    init = _Init(fail=1)
    monkeypatch.setattr(ray, "init", init)
    said: list[str] = []
    monkeypatch.setattr("snapbench.evolution.executors.say", said.append)
    executor = RayExecutor("local", num_cpus=1)
    assert executor.slots == 2 and len(init.seen) == 2 and fake_ray == [1]
    assert all(seen["RAY_gcs_rpc_server_reconnect_timeout_s"] == "300" and seen["num_cpus"] == 1 for seen in init.seen)
    # a private cluster: without address="local" ray.init joins whatever cluster this machine last started
    assert all(seen["address"] == "local" for seen in init.seen)
    assert len(said) == 1 and "did not come up" in said[0] and "once more" in said[0]
    assert not any(k in os.environ for k in RAY_TIMEOUTS)  # this process's environment as it was


def test_a_head_that_fails_twice_is_one_line(monkeypatch, fake_ray):
    init = _Init(fail=2)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(SnapbenchError) as e:
        start_local(ray, num_cpus=1)
    assert len(init.seen) == 2 and "\n" not in str(e.value) and "did not come up, twice" in str(e.value)


def test_other_errors_are_not_retried(monkeypatch, fake_ray):
    init = _Init(fail=1, error=ValueError("num_cpus must be positive"))
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(ValueError, match="num_cpus"):
        start_local(ray, num_cpus=1)
    assert len(init.seen) == 1 and fake_ray == []
