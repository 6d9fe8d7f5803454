"""How fast `LatencyTable.lookup` is, beside a plain dict lookup and the rate evolution needs.

    .venv/bin/python benchmarks/bench_lookup.py [--rows 2000] [--rounds 50]

Evolution prices every candidate with table lookups (millions per run), so a lookup must stay one dict
access. This builds a table of `--rows` estimated rows, looks every key up `--rounds` times (all hits),
then the same number of missing keys, and prints lookups per second side by side with a bare
`dict.get` over the same keys and with 200k/s (the floor tests/test_latency_table.py used to assert as
a timed test; the test now keeps only what the lookups return). Other users of the CPU slow every
variant alike; compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import sys
import time

NEEDED_PER_S = 200_000


def rate(fn, keys: list, rounds: int) -> float:
    t = time.perf_counter()
    for _ in range(rounds):
        for k in keys:
            fn(k)
    return rounds * len(keys) / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=50)
    args = ap.parse_args(argv)

    from snapbench.latency.table import LatencyRow, LatencyTable, Settings

    settings = Settings()
    rows = [LatencyRow(device="iphone14pro", chip="A16", backend="estimate", compute_units="cpu_and_ne",
                       precision="fp16", weight_bits=16, attention="original", stage="Down-1",
                       block=f"RB[Down-1, {i}]", signature=f"RB|{i}", latency_ms=10.0, p90_ms=None, samples=0,
                       macs=123, params=45, bytes_moved=678, versions="bench",
                       created_at="2025-01-01T00:00:00+00:00") for i in range(args.rows)]
    table = LatencyTable.from_rows(rows)
    keys = [r.signature for r in rows]
    plain = {k: r for k, r in zip(keys, rows)}

    hits = rate(lambda k: table.lookup("iphone14pro", settings, k), keys, args.rounds)
    misses = rate(lambda k: table.lookup("iphone14pro", settings, k + "|missing"), keys, args.rounds)
    bare = rate(plain.get, keys, args.rounds)
    n = args.rows * args.rounds
    print(f"{n} lookups over {len(table)} rows (machine possibly shared: compare ratios, not rates)")
    print(f"{'':24}{'lookups/s':>12}{'vs dict.get':>13}{'vs needed':>11}")
    for name, r in (("dict.get (baseline)", bare), ("table.lookup, hits", hits), ("table.lookup, misses", misses)):
        print(f"{name:24}{r:12,.0f}{r / bare:12.2f}x{r / NEEDED_PER_S:10.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
