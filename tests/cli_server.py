"""The snapbench CLI in a real child process, without paying Python's start and torch's import per run.

A fresh `snapbench` process spends seconds importing torch, diffusers and coremltools before it reads its
arguments; the bad-input and hostile-input tests start about forty of them, and those imports were most of
`make test-fast`'s time. This module is a fork server: one process imports the CLI and those libraries once
(`serve`), then forks a child per run. The child is a real process, as the console script is: its own
working folder, environment, address-space and file-size limits (setrlimit), stdout and stderr, exit code,
and any traceback Python would print on an uncaught exception; only the imports came from the parent.

What the children share with the server (and a fresh process would not): state that libraries fix at import
time. rich reads $COLUMNS when snapbench.console is imported and huggingface_hub fixes its cache folder
from $HOME / $XDG_CACHE_HOME / $HF_HOME, so the server starts with COLUMNS=200 (what every caller sets) and
a HOME inside the session's temporary folder. Tests of signals, process groups and the console-script file
itself still start real processes (`subprocess`).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

# What the server imports before it forks: the CLI, and the libraries its commands import lazily.
PRELOAD = ("snapbench.cli", "torch", "coremltools", "pandas", "diffusers.models.unets.unet_2d_condition")


class CliServer:
    """Client side: start the server once, then `run()` one command line per call (thread-safe, one at a time)."""

    def __init__(self, home: Path):
        home.mkdir(parents=True, exist_ok=True)
        self._log = home / "server.log"
        env = dict(os.environ, HOME=str(home / "home"), XDG_CACHE_HOME=str(home / "xdg"),
                   SNAPBENCH_CACHE=str(home / "cache"), PYTHONWARNINGS="ignore", COLUMNS="200")
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen([sys.executable, __file__, str(home / "scratch")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=log, env=env, cwd=home)
        self._lock = threading.Lock()

    def run(self, args: list[str], *, cwd: Path, env: Mapping[str, str], memory: int | None = None,
            file_size: int | None = None, timeout: float = 240, script: str | None = None,
            argv0: str = "snapbench") -> subprocess.CompletedProcess:
        """`snapbench ARGS` in a forked child (or `python -c SCRIPT ARGS` when `script` is given, run as
        __main__), in `cwd` with exactly `env`; its address space capped at `memory` bytes and its files at
        `file_size`. Raises subprocess.TimeoutExpired past `timeout` seconds (the child's group is killed)."""
        request = {"args": list(args), "cwd": str(cwd), "env": dict(env), "memory": memory, "file_size": file_size,
                   "timeout": timeout, "script": script, "argv0": argv0}
        with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write((json.dumps(request) + "\n").encode())
                self._proc.stdin.flush()
                line = self._proc.stdout.readline()
            except BrokenPipeError:
                line = b""
        if not line:
            raise RuntimeError(f"the CLI fork server died; its log:\n{self._log.read_text()[-3000:]}")
        reply = json.loads(line)
        if reply["timed_out"]:
            raise subprocess.TimeoutExpired([argv0, *args], timeout, reply["stdout"], reply["stderr"])
        return subprocess.CompletedProcess([argv0, *args], reply["code"], reply["stdout"], reply["stderr"])

    def close(self) -> None:
        # it holds nothing worth a clean exit, and the interpreter's shutdown after torch takes seconds
        self._proc.kill()
        self._proc.wait()


# -- server side ------------------------------------------------------------------------------------------


def _exit_code(e: SystemExit) -> int:
    """The status Python gives `sys.exit(x)`: None is 0, an int is itself, anything else is printed and 1."""
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code & 0xFF
    print(e.code, file=sys.stderr)
    return 1


def _child(request: dict, out: str, err: str, protocol: tuple[int, int]) -> None:
    """In the forked child: become the asked process, run it, and leave with its exit status (never returns)."""
    import atexit
    import resource
    import signal
    import traceback

    code = 1
    try:
        for fd in protocol:
            os.close(fd)
        os.setpgid(0, 0)  # its own group: a timeout kills the run and the workers it started
        if request["memory"] is not None:
            resource.setrlimit(resource.RLIMIT_AS, (request["memory"], request["memory"]))
        if request["file_size"] is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (request["file_size"], request["file_size"]))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(out, os.O_WRONLY), 1)
        os.dup2(os.open(err, os.O_WRONLY), 2)
        sys.argv = [request["argv0"], *request["args"]]
        try:
            if request["script"] is not None:
                sys.argv[0] = "-c"
                exec(compile(request["script"], "<string>", "exec"), {"__name__": "__main__"})
            else:
                from snapbench.cli import run

                run()
            code = 0
        except SystemExit as e:
            code = _exit_code(e)
        except BaseException:
            traceback.print_exc()  # what Python prints for an uncaught exception, "Traceback" first
            code = 1
        # what the interpreter does on its way out: wait for non-daemon threads, run atexit, flush
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def _wait(pid: int, timeout: float) -> tuple[int, bool]:
    """The child's status as subprocess reports it (-N for a signal), and whether it ran past `timeout`."""
    import signal
    import time

    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), False
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL, True
        time.sleep(0.02)


def serve(scratch: Path) -> None:
    """Read one JSON request per line on stdin, fork a child for it, answer one JSON line on stdout (the
    child's output goes through two files in `scratch`)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "w")
    # nothing of the server's own may reach a child's stdout: point fd 1 at the log (stderr)
    os.dup2(2, 1)
    scratch.mkdir(parents=True, exist_ok=True)
    for line in requests:
        request = json.loads(line)
        out, err = scratch / "stdout", scratch / "stderr"
        out.write_bytes(b"")
        err.write_bytes(b"")
        sys.stdout.flush()
        sys.stderr.flush()
        replies.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, str(out), str(err), (requests.fileno(), replies.fileno()))
        code, timed_out = _wait(pid, request["timeout"])
        replies.write(json.dumps({"code": code, "timed_out": timed_out,
                                  "stdout": out.read_bytes().decode(errors="replace"),
                                  "stderr": err.read_bytes().decode(errors="replace")}) + "\n")
        replies.flush()


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
