"""Run a command and measure it: wall seconds and peak RSS summed over its process tree (polled every 0.1 s).

Shared by the benchmark scripts (bench_convert.py, bench_pipeline.py, bench_sdxl.py, bench_dit_profile.py),
which import it as `measure` since a script's own folder is first on sys.path. `ratio_table` prints their
side-by-side tables: each variant's seconds and peak as a ratio to the first row, the baseline.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Measured:
    seconds: float  # wall time, start to exit
    peak_tree_rss: int  # bytes: the largest sum of RSS over the process and its descendants seen
    returncode: int
    output: str  # the captured stream (the other one is discarded)
    capped: bool = False  # stopped by `rss_cap` or by the machine's free memory running low: the peak is a floor


def _tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def measure(cmd: list[str], capture: Literal["stdout", "stderr"], *, cwd: str | Path | None = None,
            env: dict[str, str] | None = None, rss_cap: int | None = None,
            keep_available: int | None = None) -> Measured:
    """Run `cmd` to the end, capturing `capture` as text and discarding the other stream.

    `rss_cap` (bytes): the tree is killed once its RSS sum passes it; `keep_available` (bytes): likewise once
    the machine's available memory falls below it. On a machine shared with others, a variant that would not
    fit (SDXL's whole-UNet baseline) is stopped by us rather than by the kernel's OOM killer, which may pick
    another user's process."""
    pipe, null = subprocess.PIPE, subprocess.DEVNULL
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, text=True,
                            stdout=pipe if capture == "stdout" else null,
                            stderr=pipe if capture == "stderr" else null)
    peak = 0
    capped = False
    done = threading.Event()

    def poll() -> None:
        nonlocal peak, capped
        while not done.is_set():
            try:
                tree = _tree(proc.pid)
                peak = max(peak, sum(q.memory_info().rss for q in tree))
                low = keep_available is not None and psutil.virtual_memory().available < keep_available
                if not capped and ((rss_cap is not None and peak > rss_cap) or low):
                    capped = True
                    for q in reversed(tree):  # children first, so none is re-parented and left running
                        q.kill()
            except psutil.Error:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    stdout, stderr = proc.communicate()
    done.set()
    t.join()
    seconds = time.perf_counter() - start
    return Measured(seconds, peak, proc.returncode, stdout if capture == "stdout" else stderr, capped)


def run(cmd: list[str], **limits: int | None) -> dict:
    """Run `cmd` from the repository root; return wall seconds, peak tree RSS (polled) and the largest child's
    ru_maxrss. A failure ends the benchmark (see `measured` for one that becomes a row)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    m = measure(cmd, "stderr", cwd=ROOT, **limits)
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # KiB on Linux
    if m.capped:
        return {"seconds": m.seconds, "peak_tree_rss": m.peak_tree_rss, "capped": True}
    if m.returncode != 0:
        sys.stderr.write(m.output[-3000:])
        raise SystemExit(f"failed ({m.returncode}): {' '.join(cmd)}")
    # ru_maxrss of children is a running maximum: only a new maximum is attributable to this command
    return {"seconds": m.seconds, "peak_tree_rss": m.peak_tree_rss,
            "max_process_rss": maxrss if maxrss > before * 1024 else None}


def measured(cmd: list[str], **limits: int | None) -> dict:
    """`run`, but a failing variant is a row saying so, not the end of the benchmark; with the 1-minute load
    average sampled every 5 s while it runs (other users of the CPU slow every variant)."""
    loads: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while True:
            loads.append(os.getloadavg()[0])
            if stop.wait(5.0):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        r = run(cmd, **limits)
    except SystemExit as e:
        r = {"seconds": float("nan"), "peak_tree_rss": float("nan"), "failed": str(e)}
    finally:
        stop.set()
        sampler.join()
    r["load"] = (min(loads), max(loads))
    return r


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{sys.platform}, {cpus} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"load average {os.getloadavg()[0]:.1f}")


def _ratio(value: float, base: dict | None, key: str) -> str:
    """value / the baseline's; a capped baseline stopped early, so its figures are floors and the ratio a
    ceiling ("<")."""
    if base is None or "failed" in base:
        return "-"
    return ("<" if base.get("capped") else "") + f"{value / base[key]:.2f}"


def ratio_table(rows: list[tuple[str, dict]], baseline: bool = True,
                extra: dict[str, Callable[[str, dict], str]] | None = None) -> None:
    """Print one line per (label, row of `measured`/`run`): seconds and peak tree GB, each with its ratio to
    the first row when `baseline`, then each `extra` column (header -> label, row -> text)."""
    extra = extra or {}
    base = rows[0][1] if baseline and rows else None
    width = max([42, *(len(label) for label, _ in rows)])
    head = (f"{'variant':{width}} {'seconds':>9} {'x (a)':>6} {'peak tree GB':>13} {'x (a)':>6}"
            + "".join(f" {h:>{max(len(h), 8)}}" for h in extra))
    print(head)
    print("-" * len(head))
    for label, r in rows:
        floor = ">" if r.get("capped") else ""
        secs, peak = f"{floor}{r['seconds']:.1f}", f"{floor}{r['peak_tree_rss'] / 1e9:.2f}"
        t_ratio = "1" if r is base else _ratio(r["seconds"], base, "seconds")
        m_ratio = "1" if r is base else _ratio(r["peak_tree_rss"], base, "peak_tree_rss")
        line = (f"{label:{width}} {secs:>9} {t_ratio:>6} {peak:>13} {m_ratio:>6}"
                + "".join(f" {fn(label, r):>{max(len(h), 8)}}" for h, fn in extra.items()))
        if r.get("capped"):
            line += "  STOPPED: out of the memory allowed (figures are floors)"
        if "failed" in r:
            line += f"  FAILED: {r['failed']}"
        print(line, flush=True)


def load_column(_label: str, r: dict) -> str:
    return f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"
