"""CPU seconds of tiny conversions with and without snapbench's MIL shortcuts, and whether the packages match.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_mil_shortcuts.py [--repeat 2] [--cases whole_v2,...]

Each case is converted in its own process twice per repeat, once as snapbench does (converters/mil_shortcuts.py
installed during the conversion) and once with SNAPBENCH_PLAIN_MIL=1 (coremltools' own methods), alternating
so that a change in the machine's load hits both. The figure is the CPU seconds (user + system, from
`time.process_time` around `convert`: imports excluded) of the best repeat; every file of every package
except Manifest.json (random ids) is compared byte for byte between the two (model.mlmodel re-serialized
deterministically: see package_files). The 1-minute load average is
printed before and after: on a shared machine, CPU seconds inflate less than wall time but still do.

Cases: whole_v2 / whole_orig: the whole sdxl-tiny UNet, --attention split_einsum_v2 / original, latent 16,
5 tokens; whole_orig4: the same as whole_orig with --weight-bits 4 (palettized); blocks: sd15-tiny per block,
profile mode, latent 8, 4 tokens, one process (--jobs 1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "whole_v2": ("sdxl-tiny", "unet", dict(latent=16, tokens=5, attention="split_einsum_v2")),
    "whole_orig": ("sdxl-tiny", "unet", dict(latent=16, tokens=5, attention="original")),
    "whole_orig4": ("sdxl-tiny", "unet", dict(latent=16, tokens=5, attention="original", weight_bits=4)),
    "blocks": ("sd15-tiny", "blocks", dict(latent=8, tokens=4, jobs=1)),
}

CHILD = r'''
import json, sys, time
from pathlib import Path
import snapbench
from snapbench.backbones import resolve_model
from snapbench.converters.entry import ConvertRequest, convert
from snapbench.converters.options import ConvertOptions
model, part, opts, out = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), Path(sys.argv[4])
request = ConvertRequest(resolve_model(model), out, ConvertOptions(**opts), part, progress=False)
start = time.process_time()
convert(request)
print(json.dumps({"cpu": time.process_time() - start}))
'''


def convert_once(case: str, out: Path, plain: bool) -> float:
    model, part, opts = CASES[case]
    env = dict(os.environ)
    env.pop("SNAPBENCH_PLAIN_MIL", None)
    if plain:
        env["SNAPBENCH_PLAIN_MIL"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run([sys.executable, "-c", CHILD, model, part, json.dumps(opts), str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{case} failed:\n{done.stderr[-3000:]}")
    return float(json.loads(done.stdout.strip().splitlines()[-1])["cpu"])


def package_files(folder: Path) -> dict[str, bytes]:
    """Every file of every .mlpackage under `folder` but Manifest.json (its item ids are random UUIDs).

    model.mlmodel is compared re-serialized deterministically: protobuf writes a map (the metadata's
    userDefined) in an order that differs from one process to the next, so two runs of the same code in two
    processes already differ in those bytes. tests/test_conversion_shortcuts.py compares raw bytes within
    one process."""
    from coremltools.proto import Model_pb2

    files = {}
    for f in sorted(folder.rglob("*")):
        name = f.relative_to(folder).as_posix()
        if not f.is_file() or ".mlpackage/" not in name or f.name == "Manifest.json":
            continue
        data = f.read_bytes()
        if f.name == "model.mlmodel":
            spec = Model_pb2.Model()
            spec.ParseFromString(data)
            data = spec.SerializeToString(deterministic=True)
        files[name] = data
    return files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cases", default="whole_v2,whole_orig,blocks",
                    help=f"comma-separated, from {', '.join(CASES)}")
    args = ap.parse_args()
    cases = args.cases.split(",")
    for c in cases:
        if c not in CASES:
            raise SystemExit(f"unknown case {c!r}: one of {', '.join(CASES)}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    work = Path(tempfile.mkdtemp(prefix="bench-mil-", dir=ROOT / "runs" if (ROOT / "runs").is_dir() else None))
    try:
        for case in cases:
            best = {True: float("inf"), False: float("inf")}
            same = True
            for r in range(args.repeat):
                files = {}
                for plain in (True, False) if r % 2 == 0 else (False, True):
                    out = work / f"{case}-{'plain' if plain else 'fast'}"
                    shutil.rmtree(out, ignore_errors=True)
                    best[plain] = min(best[plain], convert_once(case, out, plain))
                    files[plain] = package_files(out)
                    shutil.rmtree(out)
                same = same and bool(files[True]) and files[True] == files[False]
            rows.append((case, best[True], best[False], same))
            print(f"  {case}: plain {best[True]:.1f} s, shortcuts {best[False]:.1f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"\n{'case':<12} {'coremltools CPU s':>18} {'with shortcuts':>15} {'ratio':>6}  packages")
    for case, plain, fast, same in rows:
        print(f"{case:<12} {plain:>18.1f} {fast:>15.1f} {fast / plain:>6.2f}  {'identical' if same else 'DIFFER'}")
    if not all(same for *_, same in rows):
        raise SystemExit("packages differ")


if __name__ == "__main__":
    main()
