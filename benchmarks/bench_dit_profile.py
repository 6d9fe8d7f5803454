"""Full-size DiT profiles (estimate backend), one model at a time: wall seconds, peak RSS summed over the
process tree (polled every 0.1 s, as bench_convert.py does), packages made, estimated ms per step.

    .venv/bin/python benchmarks/bench_dit_profile.py [--device iphone15pro] [--latent N] [model ...]

Each model converts its packages into a fresh cache folder first, so the memory figure is the cold one.
On a shared machine the seconds are not comparable between runs; the memory peak is.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

MODELS = ["sd3-medium", "sd35-medium", "pixart-sigma", "sana-600m", "sana-1600m"]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                p = psutil.Process(proc.pid)
                total = sum(q.memory_info().rss for q in [p, *p.children(recursive=True)])
                peak = max(peak, total)
            except psutil.Error:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    stdout, _ = proc.communicate()
    done.set()
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return time.perf_counter() - start, peak, stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", default=MODELS)
    ap.add_argument("--device", default="iphone15pro")
    ap.add_argument("--latent", type=int)
    ap.add_argument("--attention", default="original")
    a = ap.parse_args()
    snapbench = str(Path(sys.executable).with_name("snapbench"))
    print(f"{'model':14} {'latent':>6} {'packages':>8} {'seconds':>8} {'peak tree RSS GB':>17} {'ms/step':>9}")
    for m in a.models:
        env = dict(os.environ, SNAPBENCH_CACHE=tempfile.mkdtemp(prefix="dit-bench-"), PYTHONWARNINGS="ignore")
        cmd = [snapbench, "profile", "--model", m, "--device", a.device, "--attention", a.attention, "--json"]
        if a.latent:
            cmd += ["--latent", str(a.latent)]
        secs, peak, stdout = run(cmd, env)
        doc = json.loads(stdout)
        print(f"{m:14} {doc['settings']['latent']:>6} {doc['packages']:>8} {secs:8.0f} {peak / 1e9:17.2f} "
              f"{doc['model_ms']:9.1f}", flush=True)


if __name__ == "__main__":
    main()
