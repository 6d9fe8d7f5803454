"""Full-size DiT profiles (estimate backend), one model at a time: wall seconds, peak RSS summed over the
process tree (polled every 0.1 s by measure.py, as for bench_convert.py), packages made, estimated ms per step.

    .venv/bin/python benchmarks/bench_dit_profile.py [--device iphone15pro] [--latent N] [model ...]

Each model converts its packages into a fresh cache folder first, so the memory figure is the cold one.
On a shared machine the seconds are not comparable between runs; the memory peak is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from measure import measure  # benchmarks/measure.py: this script's folder is first on sys.path

MODELS = ["sd3-medium", "sd35-medium", "pixart-sigma", "sana-600m", "sana-1600m"]


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
        r = measure(cmd, "stdout", env=env)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}")
        secs, peak = r.seconds, r.peak_tree_rss
        doc = json.loads(r.output)
        print(f"{m:14} {doc['settings']['latent']:>6} {doc['packages']:>8} {secs:8.0f} {peak / 1e9:17.2f} "
              f"{doc['model_ms']:9.1f}", flush=True)


if __name__ == "__main__":
    main()
