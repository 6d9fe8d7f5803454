"""SDXL conversion time and peak memory, side by side, as ratios to a plain whole-UNet trace + convert.

    .venv/bin/python benchmarks/bench_sdxl.py                          # sdxl-tiny, latent 16, 77 tokens
    .venv/bin/python benchmarks/bench_sdxl.py --model sdxl --latent 128 --skip-plain   # (a) needs > 23 GB

Each variant in its own process, one after another, in one run:
  (a) plain: the whole diffusers UNet (text_time inputs included) through torch.jit.trace + ct.convert
      (fp16, iOS16) + save: bench_convert.py's NAIVE
  (b) snapbench convert, per block, profile mode (default --jobs)
  (c) snapbench convert --pipeline --chunks 2 --attention split_einsum_v2: TextEncoder, TextEncoder2,
      two UNet chunks, VAEDecoder
Wall seconds and the peak of the process tree's RSS (sampled every 0.1 s), each as a ratio to (a), and the
1-minute load average while it ran: figures from a shared machine say so.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import NAIVE, PY, SNAPBENCH  # noqa: E402  (sibling scripts, not a package)
from bench_pipeline import machine, measured  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sdxl-tiny")
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--skip-plain", action="store_true", help="leave out (a) (full-size SDXL: > 23 GB)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_sdxl."))
    shapes = ["--latent", str(a.latent), "--tokens", str(a.tokens)]
    rows: list[tuple[str, dict]] = []
    print(f"machine: {machine()}", file=sys.stderr, flush=True)
    try:
        if not a.skip_plain:
            rows.append(("(a) whole UNet, plain trace + ct.convert",
                         measured([PY, "-c", NAIVE, a.model, str(a.latent), "2", str(a.tokens),
                                   str(work / "plain.mlpackage")])))
        rows.append(("(b) convert, per block, profile",
                     measured([SNAPBENCH, "convert", "--model", a.model, *shapes, "--out", str(work / "blocks"),
                               "--json"])))
        rows.append(("(c) convert --pipeline --chunks 2 (5 packages)",
                     measured([SNAPBENCH, "convert", "--model", a.model, "--pipeline", "--chunks", "2",
                               "--attention", "split_einsum_v2", *shapes, "--out", str(work / "app"), "--json"])))
        base = rows[0][1] if not a.skip_plain else None
        print(f"\n{a.model}, latent {a.latent}, batch 2, {a.tokens} tokens; {machine()}")
        head = f"{'variant':48} {'seconds':>8} {'x (a)':>6} {'peak tree GB':>13} {'x (a)':>6} {'load':>10}"
        print(head)
        print("-" * len(head))
        for label, r in rows:
            t = f"{r['seconds'] / base['seconds']:.2f}" if base else "-"
            m = f"{r['peak_tree_rss'] / base['peak_tree_rss']:.2f}" if base else "-"
            print(f"{label:48} {r['seconds']:8.1f} {t:>6} {r['peak_tree_rss'] / 1e9:13.2f} {m:>6} "
                  f"{r['load'][0]:4.1f}-{r['load'][1]:<4.1f}" + (f"  FAILED: {r['failed']}" if "failed" in r else ""))
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
