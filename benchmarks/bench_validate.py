"""Benchmark `snapbench validate`: cold and warm, in-sample and leave-one-source-out.

    .venv/bin/python benchmarks/bench_validate.py [--convert-sample 3]

Each variant runs `snapbench validate --json` in its own process with an empty `$SNAPBENCH_CACHE`:
  (a) in-sample, shipped op records (what a fresh clone does)
  (b) (a) again in the same cache: warm
  (c) --cross source (one refit per source)
and, for the conversion path, `--convert-sample` small networks of the corpus converted from nothing
(cold) and then read back from the zoo cache (warm). Wall time side by side, with the ratio.
Other users of the CPU slow every variant; compare within one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
SNAPBENCH = str(Path(PY).with_name("snapbench"))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    t = time.perf_counter()
    rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - t, rc


CONVERT = r'''
import sys, time
from snapbench.zoo.programs import network_records
for spec, shape in zip(sys.argv[1::2], sys.argv[2::2]):
    network_records(spec, shape)
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--convert-sample", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SNAPBENCH_CACHE": tmp}
        rows = []
        cold, rc1 = timed([SNAPBENCH, "validate", "--json", "--no-convert"], env)
        warm, rc2 = timed([SNAPBENCH, "validate", "--json", "--no-convert"], env)
        cross, rc3 = timed([SNAPBENCH, "validate", "--json", "--no-convert", "--cross", "source"], env)
        rows += [("validate, shipped records, cold process", cold, rc1),
                 ("validate, warm (second run)", warm, rc2),
                 ("validate --cross source", cross, rc3)]
        sample = [("synthetic:dense-u128-l6", "1x10x512"), ("timm:mobileone_s0", "1x3x224x224"),
                  ("torchvision:mobilenet_v3_small", "1x3x224x224")][:args.convert_sample]
        flat = [x for pair in sample for x in pair]
        conv_cold, rc4 = timed([PY, "-c", CONVERT, *flat], env)
        conv_warm, rc5 = timed([PY, "-c", CONVERT, *flat], env)
        rows += [(f"convert {len(sample)} networks, cold", conv_cold, rc4),
                 (f"same {len(sample)} networks, zoo cache", conv_warm, rc5)]
    print(f"{'variant':48s} {'wall s':>8s} {'rc':>3s}")
    for name, s, rc in rows:
        print(f"{name:48s} {s:8.1f} {rc:3d}")
    print(f"warm/cold validate: {warm / cold:.2f}x   cached/cold conversion: {conv_warm / conv_cold:.2f}x")


if __name__ == "__main__":
    main()
