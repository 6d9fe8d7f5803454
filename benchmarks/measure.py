"""Run a command and measure it: wall seconds and peak RSS summed over its process tree (polled every 0.1 s).

Shared by the benchmark scripts (bench_convert.py, bench_dit_profile.py), which import it as `measure` since
a script's own folder is first on sys.path.
"""

from __future__ import annotations

import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil


@dataclass
class Measured:
    seconds: float  # wall time, start to exit
    peak_tree_rss: int  # bytes: the largest sum of RSS over the process and its descendants seen
    returncode: int
    output: str  # the captured stream (the other one is discarded)


def measure(cmd: list[str], capture: Literal["stdout", "stderr"], *, cwd: str | Path | None = None,
            env: dict[str, str] | None = None) -> Measured:
    """Run `cmd` to the end, capturing `capture` as text and discarding the other stream."""
    pipe, null = subprocess.PIPE, subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, text=True,
                            stdout=pipe if capture == "stdout" else null,
                            stderr=pipe if capture == "stderr" else null)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                p = psutil.Process(proc.pid)
                peak = max(peak, sum(q.memory_info().rss for q in [p, *p.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    stdout, stderr = proc.communicate()
    done.set()
    t.join()
    seconds = time.perf_counter() - start
    return Measured(seconds, peak, proc.returncode, stdout if capture == "stdout" else stderr)
