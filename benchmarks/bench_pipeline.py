"""Benchmark `snapbench convert --pipeline` against the plain whole-UNet conversion, time and memory.

    .venv/bin/python benchmarks/bench_pipeline.py [--model sd15] [--attention split_einsum_v2] [--work DIR]

Each variant runs in its own process, one after another, so its figures are its own:
  (a) plain: the whole diffusers UNet through torch.jit.trace (defaults) + ct.convert (fp16, iOS16) + save,
      UNet only (what bench_convert.py calls naive)
  (b) snapbench convert --pipeline --chunks 2, fp16: text encoder, two UNet chunks, VAE decoder
  (c) the same with --weight-bits 6 (k-means palettes, palette.py)
  (d) apple/ml-stable-diffusion's torch2coreml on a local pipeline folder (--reference-model DIR), only
      when python_coreml_stable_diffusion is installed beside snapbench
Wall time, and the peak of the process tree's memory (RSS summed over the process and all its children,
sampled every 0.1 s; what the machine must hold). The goals of issue 13: (b) and (c) peak <= 4 GB and
(b) in at most half the time of (a). Other users of the CPU do not slow every variant alike (multi-threaded
PyTorch passes suffer most), so run it on an otherwise idle machine; each row shows the range of the
1-minute load average while it ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
from pathlib import Path

from bench_convert import NAIVE, PY, SNAPBENCH  # sibling scripts: this script's folder is first on sys.path
from measure import load_column, machine, measured, ratio_table

GOAL_PEAK_BYTES = 4e9


def within_goal(label: str, r: dict) -> str:
    return "-" if label.startswith("(a)") else ("yes" if r["peak_tree_rss"] <= GOAL_PEAK_BYTES else "NO")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--attention", default="split_einsum_v2")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one, removed after)")
    ap.add_argument("--json-out", default=None, help="also write the figures as JSON here")
    ap.add_argument("--skip-plain", action="store_true", help="only the pipeline variants")
    ap.add_argument("--reference-model", default=None, help="a local diffusers pipeline folder for (d)")
    a = ap.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench_pipeline."))
    rows: list[tuple[str, dict]] = []
    shapes = ["--latent", str(a.latent), "--tokens", str(a.tokens)]
    print(f"machine: {machine()}", file=sys.stderr, flush=True)
    try:
        if not a.skip_plain:
            print("(a) plain whole-UNet trace + convert ...", file=sys.stderr, flush=True)
            rows.append(("(a) whole UNet, plain trace + ct.convert",
                         measured([PY, "-c", NAIVE, a.model, str(a.latent), "2", str(a.tokens),
                              str(work / "plain.mlpackage")])))
        for label, name, extra in (("(b) --pipeline --chunks 2, fp16", "fp16", []),
                                   ("(c) --pipeline --chunks 2, 6-bit", "6bit", ["--weight-bits", "6"])):
            print(f"{label} ...", file=sys.stderr, flush=True)
            out = work / name
            r = measured([SNAPBENCH, "convert", "--model", a.model, "--pipeline", "--chunks", "2",
                     "--attention", a.attention, *shapes, *extra, "--out", str(out), "--json"])
            m = json.loads((out / "manifest.json").read_text())
            r["parts"] = {b["id"]: b["seconds"] if b["state"] == "done" else b["state"] for b in m["blocks"]}
            r["phases"] = {b["id"]: b.get("timings") for b in m["blocks"]}
            r["package_bytes"] = sum(b["bytes"] or 0 for b in m["blocks"])
            rows.append((label, r))
        if a.reference_model and importlib.util.find_spec("python_coreml_stable_diffusion"):
            print("(d) apple/ml-stable-diffusion torch2coreml ...", file=sys.stderr, flush=True)
            rows.append(("(d) torch2coreml, UNet chunked", measured([
                PY, "-m", "python_coreml_stable_diffusion.torch2coreml", "--model-version", a.reference_model,
                "--convert-unet", "--convert-text-encoder", "--convert-vae-decoder", "--chunk-unet",
                "--attention-implementation", a.attention.upper(), "-o", str(work / "reference")])))
        print(f"\n{a.model}, latent {a.latent}, {a.tokens} tokens, attention {a.attention}; {machine()}")
        ratio_table(rows, baseline=not a.skip_plain, extra={"<= 4 GB": within_goal, "load": load_column})
        for label, r in rows:
            if "parts" in r:
                parts = ", ".join(f"{k} {v:.0f} s" if isinstance(v, float) else f"{k} {v}"
                                  for k, v in r["parts"].items() if v is not None)
                print(f"  {label}: {parts}; packages {r['package_bytes'] / 1e9:.2f} GB")
                for part, phases in r["phases"].items():
                    if phases:
                        print(f"    {part}: " + ", ".join(f"{k} {v:.0f} s" for k, v in phases.items()))
        if a.json_out:
            Path(a.json_out).write_text(json.dumps({"model": a.model, "machine": machine(), "rows": rows}, indent=2))
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
