"""What one CLI run costs the bad-input and hostile tests: a fresh `snapbench` process beside a child forked
from the tests' CLI server (tests/cli_server.py), which imported torch, diffusers and coremltools once.

    .venv/bin/python benchmarks/bench_cli_runs.py [--rounds 2]

Runs the same refusals both ways, interleaved (fresh, forked, fresh, forked, ...), each in an empty folder
with its own cache, and prints the median seconds per run of each way and their ratio. Both ways must give
the same exit code and last stderr line, or the benchmark stops. The server's own start (once per pytest
worker) is printed apart. Other users of the CPU slow both ways alike; compare the ratio within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cli_server import CliServer  # noqa: E402  (a test helper, not part of the package)

SNAPBENCH = Path(sys.executable).with_name("snapbench")


def _spec(work: Path, **config) -> None:
    d = json.loads((resources.files("snapbench.specs") / "presets" / "sd15-tiny.json").read_text())
    d["base_config"].update(config)
    d.pop("stages", None)
    (work / "s.json").write_text(json.dumps(d))


# (name, args, setup): refusals from tests/hostile/test_hostile_cli.py, light to heavy
CASES = [
    ("unknown preset", ["inspect", "--model", "nope"], lambda work: None),
    ("spec with a million layers", ["inspect", "--model", "s.json"], lambda work: _spec(work, layers_per_block=10**6)),
    ("negative channels", ["inspect", "--model", "s.json"],
     lambda work: _spec(work, block_out_channels=[-8, 16, 32, 32])),
    ("huge synthetic conv", ["profile", "--model", "synthetic:conv-f100000-k3-l2", "--device", "iphone14pro",
                             "--input", "1x3x64x64"], lambda work: None),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-cli-runs-") as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        server = CliServer(root / "server")
        server.run(["--version"], cwd=root, env=dict(os.environ))  # waits for the server's imports
        start_s = time.perf_counter() - t
        took: dict[str, list[float]] = {"fresh": [], "forked": []}
        try:
            n = 0
            for _ in range(args.rounds):
                for name, cli_args, setup in CASES:
                    said = {}
                    for way in ("fresh", "forked"):
                        n += 1
                        work = root / f"run{n}" / "work"
                        work.mkdir(parents=True)
                        setup(work)
                        env = dict(os.environ, SNAPBENCH_CACHE=str(work.parent / "cache"), PYTHONWARNINGS="ignore",
                                   HOME=str(work.parent / "home"), COLUMNS="200")
                        t = time.perf_counter()
                        if way == "fresh":
                            r = subprocess.run([str(SNAPBENCH), *cli_args], cwd=work, env=env, capture_output=True,
                                               text=True, timeout=600)
                        else:
                            r = server.run(cli_args, cwd=work, env=env, timeout=600)
                        took[way].append(time.perf_counter() - t)
                        said[way] = (r.returncode, r.stderr.strip().splitlines()[-1:])
                    if said["fresh"] != said["forked"]:
                        print(f"{name}: the two ways differ: {said}", file=sys.stderr)
                        return 1
        finally:
            server.close()
    fresh, forked = statistics.median(took["fresh"]), statistics.median(took["forked"])
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"server start (imports, once per pytest worker): {start_s:.1f} s")
    print(f"median s per run over {len(took['fresh'])} runs each: fresh process {fresh:.2f}, forked child "
          f"{forked:.2f}, ratio {fresh / forked:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
