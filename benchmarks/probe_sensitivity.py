"""Where `compress analyze`'s time goes, before running it: one reference pass through the UNet block by
block (as converters/sensitivity.py runs it), each block's run timed, and each width's palettization timed
on a few of its layers; projected to the whole analysis (every layer x every width reruns its block), with
and without replaying the transformer layers before the palettized one (sensitivity._replaying).

    .venv/bin/python benchmarks/probe_sensitivity.py --model sdxl --latent 32 --samples 1 --widths 2,4,6,8

Seconds are CPU seconds of this process (all its threads: time.process_time), the figure that does not
depend on how many other processes share the machine; the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sdxl")
    ap.add_argument("--latent", type=int, default=32)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--widths", default="2,4,6,8")
    ap.add_argument("--palettize-per-block", type=int, default=2, help="layers per block whose palettes are timed")
    args = ap.parse_args()

    from snapbench.backbones import resolve_model
    from snapbench.converters.convert_blocks import cut
    from snapbench.converters.mixed_bit import compressible_weights
    from snapbench.converters.options import ConvertOptions
    from snapbench.converters.sensitivity import (
        SensitivityOptions,
        _palettized,
        advance_skips,
        calibration_inputs,
    )
    from snapbench.converters.unet_chunks import materialize_unit, run_unit

    widths = tuple(sorted({*(int(w) for w in args.widths.split(",")), 16}))
    opts = SensitivityOptions(latent=args.latent, samples=args.samples, tokens=args.tokens, widths=widths)
    source = resolve_model(args.model)
    meta, blocks = cut(source, ConvertOptions(latent=opts.latent, batch=opts.samples, tokens=opts.tokens))
    sample, timestep, context, *added = calibration_inputs(meta.config, opts)
    hidden, temb, skips = sample, None, []
    total = {"run": 0.0, "run_replay": 0.0, "palettize": 0.0, "build": 0.0}
    print(f"{args.model}, calibration latent {opts.latent}, {opts.samples} sample(s), widths {widths}, "
          f"torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print(f"{'block':<22}{'layers':>7}{'run s':>8}{'analysis run s':>16}{'with replay':>13}{'palettes s':>12}")
    for b, closes in zip(blocks, meta.closes_skip):
        t0 = time.process_time()
        unit = materialize_unit(meta, b.unit, None, opts.seed)
        t1 = time.process_time()
        with torch.no_grad():
            h, t = run_unit(unit, hidden, temb, list(skips), context, timestep, added)
        run_s = time.process_time() - t1
        layers = compressible_weights(unit)
        depth = max((int(m.group(1)) + 1 for n, _ in layers
                     if (m := re.search(r"transformer_blocks\.(\d+)\.", n))), default=0)

        def share(name: str, depth: int = depth) -> float:  # transformer layers a replayed rerun runs
            m = re.search(r"transformer_blocks\.(\d+)\.", name)
            return (depth - int(m.group(1))) / depth if m and depth > 1 else 1.0

        runs = run_s * len(layers) * len(widths)
        replayed = run_s * len(widths) * sum(share(n) for n, _ in layers)
        # palettes: timed on the largest layers, priced per element for the rest
        timed = sorted(layers, key=lambda kv: -kv[1].numel())[:args.palettize_per_block]
        pal_s, pal_el = 0.0, 0
        for _, p in timed:
            t2 = time.process_time()
            for w in widths:
                _palettized(p.data, w)
            pal_s += time.process_time() - t2
            pal_el += p.numel()
        palettes = pal_s / pal_el * sum(p.numel() for _, p in layers) if pal_el else 0.0
        total["run"] += runs
        total["run_replay"] += replayed
        total["palettize"] += palettes
        total["build"] += t1 - t0
        if layers:
            print(f"{b.block_id:<22}{len(layers):>7}{run_s:>8.2f}{runs:>16.0f}{replayed:>13.0f}{palettes:>12.0f}")
        hidden, temb = h, t
        advance_skips(unit, closes, hidden, skips)
        del unit
    print(f"projected CPU s: reruns {total['run']:.0f} (replaying: {total['run_replay']:.0f}), palettes "
          f"{total['palettize']:.0f}, building blocks {total['build']:.0f}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
