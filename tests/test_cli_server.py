"""The CLI fork server (tests/cli_server.py) behaves as a fresh process would in what the bad-input and
hostile tests read: exit status, the traceback of an uncaught exception, stdout and stderr apart, the
working folder and environment asked for, and the address-space and file-size caps. Those tests' claims
(one line, exit 2, no traceback, refused under 2 GB) hold only if these do."""

from __future__ import annotations

import os
import resource
import subprocess

import pytest

GB = 1024**3


def _run(server, tmp_path, script: str, **kw) -> subprocess.CompletedProcess:
    return server.run(["a", "b"], cwd=tmp_path, env={**os.environ, "CASE_VAR": "x"}, script=script, **kw)


def test_exit_status_output_and_traceback_as_a_fresh_process(cli_server, tmp_path):
    r = _run(cli_server, tmp_path, "import sys; print('out', sys.argv); print('err', file=sys.stderr); sys.exit(3)")
    assert (r.returncode, r.stdout, r.stderr) == (3, "out ['-c', 'a', 'b']\n", "err\n")
    r = _run(cli_server, tmp_path, "raise ValueError('boom')")
    assert r.returncode == 1 and r.stderr.startswith("Traceback (most recent call last)")
    assert r.stderr.strip().endswith("ValueError: boom")
    r = _run(cli_server, tmp_path, "import sys; sys.exit('a message')")
    assert (r.returncode, r.stderr) == (1, "a message\n")
    r = _run(cli_server, tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert r.returncode == -9


def test_the_folder_environment_and_exit_work_as_asked(cli_server, tmp_path):
    script = ("import atexit, os, sys, threading, time; print(os.getcwd(), os.environ.get('CASE_VAR'));"
              "atexit.register(lambda: print('atexit ran'));"
              "threading.Thread(target=lambda: (time.sleep(0.2), print('thread joined'))).start()")
    r = _run(cli_server, tmp_path, script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"{tmp_path} x", "thread joined", "atexit ran"]
    assert "CASE_VAR" not in os.environ  # the child's environment stays the child's


def test_memory_and_file_size_caps_hold_in_the_child(cli_server, tmp_path):
    r = _run(cli_server, tmp_path, "bytearray(3 * 1024**3)", memory=2 * GB)
    assert r.returncode == 1 and "MemoryError" in r.stderr
    r = _run(cli_server, tmp_path, "open('big', 'wb').write(b'x' * 100_000)", file_size=16 * 1024)
    assert r.returncode == 1 and "File too large" in r.stderr
    r = _run(cli_server, tmp_path, "import resource; print(resource.getrlimit(resource.RLIMIT_AS))")
    assert r.stdout == f"{resource.getrlimit(resource.RLIMIT_AS)}\n"  # no cap asked, nor one left from the run before


def test_a_run_past_its_timeout_is_killed(cli_server, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        _run(cli_server, tmp_path, "import time; print('started', flush=True); time.sleep(60)", timeout=1)
    assert _run(cli_server, tmp_path, "print('next')").stdout == "next\n"  # the server serves on


def test_the_cli_itself_runs_as_the_console_script(cli_server, tmp_path):
    r = cli_server.run(["--version"], cwd=tmp_path, env=dict(os.environ))
    assert r.returncode == 0 and r.stdout.startswith("snapbench ")
    r = cli_server.run(["inspect", "--model", "nope"], cwd=tmp_path, env=dict(os.environ))
    assert r.returncode == 2 and r.stderr.startswith("error: unknown model preset 'nope'")
