"""SDXL conversion time and peak memory, side by side, as ratios to a plain whole-UNet trace + convert.

    .venv/bin/python benchmarks/bench_sdxl.py                          # sdxl-tiny, latent 16, 77 tokens
    .venv/bin/python benchmarks/bench_sdxl.py --model sdxl --latent 128 --work DIR   # full size: an hour here
    .venv/bin/python benchmarks/bench_sdxl.py --model sdxl --latent 128 --legs c       # the app pipeline alone

Each variant in its own process, one after another, in one run:
  (a) plain: the whole diffusers UNet (text_time inputs included) through torch.jit.trace + ct.convert
      (fp16, iOS16) + save: bench_convert.py's NAIVE
  (b) snapbench convert, per block, profile mode (default --jobs)
  (c) snapbench convert --pipeline --chunks 2 --attention split_einsum_v2: TextEncoder, TextEncoder2,
      two UNet chunks, VAEDecoder
Wall seconds and the peak of the process tree's RSS (sampled every 0.1 s), each as a ratio to (a), and the
range of the 1-minute load average while it ran: figures from a shared machine say so. Goals (issue 20):
(b) peak <= 6 GB, (c) peak <= 8 GB.

A variant whose tree passes --cap-gb, or that leaves the machine under --keep-free-gb available, is stopped
(we stop it rather than the kernel's OOM killer, which may pick another user's process): its row then says
how far it got, and the ratios to it are ceilings ("<"). Full-size SDXL's fp32 UNet alone is 10.3 GB, so on
a 23 GB machine (a) is expected to stop.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench_convert import NAIVE, PY, SNAPBENCH  # sibling scripts: this script's folder is first on sys.path
from measure import load_column, machine, measured, ratio_table

GOALS_GB = {"(b)": 6.0, "(c)": 8.0}


def goal(label: str, r: dict) -> str:
    limit = GOALS_GB.get(label[:3])
    if limit is None or "failed" in r:
        return "-"
    return f"<= {limit:.0f}: " + ("yes" if r["peak_tree_rss"] <= limit * 1e9 and not r.get("capped") else "NO")


def packages(out: Path) -> dict:
    """What the variant wrote, from its manifest: package count and bytes."""
    m = json.loads((out / "manifest.json").read_text())
    done = [b for b in m["blocks"] if b.get("state", "done") == "done"]
    return {"packages": m.get("packages", len(done)), "package_bytes": sum(b.get("bytes") or 0 for b in done)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sdxl-tiny")
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--skip-plain", action="store_true", help="leave out (a)")
    ap.add_argument("--legs", default="abc", help="which variants to run, e.g. 'c' for the pipeline alone (default abc)")
    ap.add_argument("--cap-gb", type=float, default=14.0, help="stop a variant whose process tree passes this")
    ap.add_argument("--keep-free-gb", type=float, default=2.0,
                    help="stop a variant that leaves the machine less memory available than this")
    ap.add_argument("--json-out", default=None, help="also write the rows as JSON here (after each variant)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_sdxl."))
    shapes = ["--latent", str(a.latent), "--tokens", str(a.tokens)]
    limits = {"rss_cap": int(a.cap_gb * 1e9), "keep_available": int(a.keep_free_gb * 1e9)}
    variants = [
        ("(a) whole UNet, plain trace + ct.convert", None,
         [PY, "-c", NAIVE, a.model, str(a.latent), "2", str(a.tokens), str(work / "plain.mlpackage")]),
        ("(b) convert, per block, profile", work / "blocks",
         [SNAPBENCH, "convert", "--model", a.model, *shapes, "--out", str(work / "blocks"), "--json"]),
        ("(c) convert --pipeline --chunks 2 (5 packages)", work / "app",
         [SNAPBENCH, "convert", "--model", a.model, "--pipeline", "--chunks", "2", "--attention",
          "split_einsum_v2", *shapes, "--out", str(work / "app"), "--json"]),
    ]
    legs = set(a.legs) - ({"a"} if a.skip_plain else set())
    variants = [v for v in variants if v[0][1] in legs]
    rows: list[tuple[str, dict]] = []
    print(f"machine: {machine()}", file=sys.stderr, flush=True)
    try:
        for label, out, cmd in variants:
            print(f"{label} ...", file=sys.stderr, flush=True)
            r = measured(cmd, **limits)
            if out is not None and (out / "manifest.json").exists():
                r.update(packages(out))
            rows.append((label, r))
            print(f"  {json.dumps(r)}", file=sys.stderr, flush=True)  # partial results survive a stopped run
            if a.json_out:
                Path(a.json_out).write_text(json.dumps({"model": a.model, "latent": a.latent, "rows": rows}, indent=2))
        print(f"\n{a.model}, latent {a.latent}, batch 2, {a.tokens} tokens; measured on a shared machine: "
              f"{machine()}; stop at {a.cap_gb:.0f} GB tree or {a.keep_free_gb:.0f} GB left")
        ratio_table(rows, baseline="a" in legs,
                    extra={"goal GB": goal, "packages": lambda _, r: str(r.get("packages", "-")), "load": load_column})
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
