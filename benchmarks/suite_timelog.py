"""A pytest plugin: per-test wall and CPU seconds, one TSV line per test, with the xdist worker (README,
"Development"). Wall time on a shared machine mostly measures the load; CPU seconds measure the work.

    TIMELOG=runs/fast.tsv PYTHONPATH=benchmarks .venv/bin/python -m pytest -q -n auto --maxprocesses 8 \
        --dist loadgroup --no-loadscope-reorder -p suite_timelog -m "not slow"

Columns: start, end, wall s, CPU s, worker, test id, live-children CPU s. CPU s: this process and the
children it has reaped (getrusage), setup and teardown included. Live-children CPU: processes still running
(the CLI fork server and the children it reaped), read from /proc: getrusage counts them only when they end,
so the session's last test carries them in the CPU column."""
import os
import resource
import time

import pytest

_TICK = os.sysconf("SC_CLK_TCK")


def _cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def _live_children_cpu():
    me, total = os.getpid(), 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid
            total += sum(int(x) for x in fields[11:15]) / _TICK  # utime stime cutime cstime
    return total


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    t0, c0, l0 = time.time(), _cpu(), _live_children_cpu()
    yield
    t1, c1, l1 = time.time(), _cpu(), _live_children_cpu()
    w = os.environ.get("PYTEST_XDIST_WORKER", "-")
    with open(os.environ["TIMELOG"], "a") as f:  # one short append per test: xdist workers share the file
        f.write(f"{t0:.1f}\t{t1:.1f}\t{t1 - t0:.2f}\t{c1 - c0:.2f}\t{w}\t{item.nodeid}\t{max(l1 - l0, 0):.2f}\n")
