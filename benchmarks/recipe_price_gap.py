"""Does a recipe's stated ms per step match the estimator's price of the packages `convert --recipe` makes?

    .venv/bin/python benchmarks/recipe_price_gap.py --model sdxl-tiny --attention split_einsum --latent 8 --tokens 4

Prices every compressible layer at 2 and 4 bits and fp16 (latency/recipe_price.py, what `compress analyze
--latency-budget-ms` spends), writes a recipe cycling the layers through 2 / 4 / 16 bits (no analysis needed
to test applying it), converts it per block (`snapbench convert --recipe`, deploy mode, into a scratch folder
that is removed), and prints the recipe's figure (LayerPrices.total_ms, what its `latency.ms_per_step`
would say) beside the sum of the estimator's figures for the packages, and the palettes found per width.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sdxl-tiny")
    ap.add_argument("--attention", default="split_einsum")
    ap.add_argument("--device", default="iphone15pro")
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=4)
    args = ap.parse_args()

    from snapbench.backbones import backbone_for, resolve_model
    from snapbench.cli import main as cli
    from snapbench.converters.compression import program_ops
    from snapbench.converters.mil_eval import load_program
    from snapbench.converters.mixed_bit import RECIPE_FORMAT, compressible_layers, layers_digest
    from snapbench.devices.catalog import resolve_device
    from snapbench.latency.recipe_price import layer_prices
    from snapbench.profilers.estimate.cost_model import estimate_package
    from snapbench.settings import RunSettings

    t0 = time.process_time()
    source = resolve_model(args.model)
    dev = resolve_device(args.device)
    prices = layer_prices(source, dev, RunSettings(latent=args.latent, tokens=args.tokens, attention=args.attention),
                          (2, 4))
    with torch.device("meta"):
        layers = compressible_layers(backbone_for(source).build(source, device="meta"))
    recipe = {name: (2, 4, 16)[i % 3] for i, name in enumerate(sorted(layers))}
    with tempfile.TemporaryDirectory(dir="runs") as scratch:
        path = Path(scratch) / "recipe.json"
        path.write_text(json.dumps({"format": RECIPE_FORMAT, "spec": source.spec.name,
                                    "layers_digest": layers_digest(layers), "layers": recipe}))
        out = Path(scratch) / "pkgs"
        assert cli(["convert", "--model", args.model, "--attention", args.attention, "--recipe", str(path),
                    "--latent", str(args.latent), "--tokens", str(args.tokens), "--out", str(out)]) == 0
        packages = sorted(out.glob("*.mlpackage"))
        priced = sum(estimate_package(p, dev).total_ms for p in packages)
        tables: dict[int, int] = {}
        for p in packages:
            for fn in load_program(p).functions.values():
                for op in program_ops(fn):
                    if op.op_type == "constexpr_lut_to_dense":
                        tables[op.lut.val.size] = tables.get(op.lut.val.size, 0) + 1
    stated = prices.total_ms(recipe)
    at = {b: sum(v == b for v in recipe.values()) for b in (2, 4, 16)}
    print(f"{args.model}, {args.attention}, latent {args.latent}, {args.tokens} tokens, {dev.name}, estimator "
          f"v{prices.estimator_version} (estimated): {len(layers)} layers ({at[2]} at 2 bits, {at[4]} at 4, "
          f"{at[16]} fp16), {len(prices.layer_ms)} found in their packages")
    print(f"palettes in the recipe's {len(packages)} packages, by table entries: {dict(sorted(tables.items()))}")
    print(f"recipe states {stated:.3f} ms per step; its packages are priced at {priced:.3f} ms "
          f"({(priced - stated) / stated * 100:+.2f}%); fp16 {prices.fp16_ms:.3f} ms")
    print(f"CPU s {time.process_time() - t0:.1f} (this process; the conversion's workers not counted), "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
