"""How fast the profile path is once packages exist, and how fast evolution's lookups are.

1. Packages: every unique block signature of the model, converted once into the cache (timed apart:
   conversion is the converters' benchmark, not this one; a warm cache costs seconds).
2. Estimate: every block signature priced for every catalog device (first device cold: op records read
   from each package; the rest warm), with the estimator's own caches as they are in normal use.
3. Lookups: `LatencyTable.lookup` per second over a table holding all those rows, with the key mix
   evolution produces (all hits), and a miss rate for signatures the table lacks.

    python benchmarks/bench_profile.py                 # sd15, latent 64 (converts SD-v1.5 once: minutes)
    python benchmarks/bench_profile.py --model sd15-tiny --latent 16   # seconds, for a quick check
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings

warnings.filterwarnings("ignore")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sd15")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--lookups", type=int, default=2_000_000)
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)

    from snapbench.backbones import resolve_model
    from snapbench.devices.catalog import list_devices
    from snapbench.latency.model_latency import cut_model, locate, now, packages_to_price, price
    from snapbench.latency.packages import ConverterPackages
    from snapbench.latency.table import LatencyTable, Settings
    from snapbench.profilers.backends import EstimatePricer

    settings = Settings(latent=args.latent)
    source = resolve_model(args.model)
    blocks = cut_model(source, settings)
    items = packages_to_price(source, settings, ("unet",), blocks)

    t0 = time.perf_counter()
    located = locate(items, source, ConverterPackages(), progress=True)
    t_packages = time.perf_counter() - t0

    devices = list_devices()
    per_device: dict[str, float] = {}
    rows = []
    created = now()
    estimator = EstimatePricer()
    t_all = time.perf_counter()
    for dev in devices:
        t = time.perf_counter()
        rows += price(located, dev, estimator, created=created)
        per_device[dev.id] = time.perf_counter() - t
    t_estimate = time.perf_counter() - t_all

    table = LatencyTable.from_rows(rows)
    keys = [(r.device, r.settings, r.signature) for r in rows]
    rng = random.Random(0)
    sample = [rng.choice(keys) for _ in range(min(args.lookups, 1_000_000))]
    lookup = table.lookup
    t = time.perf_counter()
    n = 0
    while n < args.lookups:
        for d, s, k in sample:
            lookup(d, s, k)
        n += len(sample)
    hit_rate = n / (time.perf_counter() - t)
    miss = [(d, s, k + "|missing") for d, s, k in sample[:100_000]]
    t = time.perf_counter()
    for d, s, k in miss:
        lookup(d, s, k)
    miss_rate = len(miss) / (time.perf_counter() - t)

    cold = per_device[devices[0].id]
    warm = sorted(per_device.values())[len(per_device) // 2]
    result = {
        "model": args.model, "latent": args.latent, "blocks": len(blocks), "unique_signatures": len(items),
        "devices": len(devices), "packages_s": round(t_packages, 2),
        "estimate_all_devices_s": round(t_estimate, 3),
        "estimate_first_device_s": round(cold, 3), "estimate_per_device_median_s": round(warm, 4),
        "estimates_per_s": round(len(rows) / t_estimate, 1),
        "table_rows": len(table), "lookups_per_s": round(hit_rate), "missed_lookups_per_s": round(miss_rate),
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{args.model} (latent {args.latent}): {len(blocks)} blocks, {len(items)} unique signatures")
        print(f"packages ready in {t_packages:.1f} s (conversion into the cache, or a warm cache)")
        print(f"estimate every block for {len(devices)} catalog devices: {t_estimate:.2f} s "
              f"(first device {cold:.2f} s, incl. reading op records unless the estimator cached them; "
              f"median device {warm * 1000:.1f} ms; "
              f"{len(rows) / t_estimate:.0f} block estimates/s)")
        print(f"lookups: {hit_rate / 1e6:.2f} M/s (hits, {len(table)} rows), {miss_rate / 1e6:.2f} M/s (misses)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
