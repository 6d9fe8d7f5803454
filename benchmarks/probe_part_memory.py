"""Where one app-pipeline part's memory goes: RSS per phase of its conversion (build, trace, each coremltools
pass, backend, release, compress, save), in this one process.

    .venv/bin/python benchmarks/probe_part_memory.py --model sdxl --latent 128 --part UnetChunk1
    .venv/bin/python benchmarks/probe_part_memory.py --model sd15 --part UnetChunk2 --json-out probe.json
    .venv/bin/python benchmarks/probe_part_memory.py --model sdxl --latent 128 --part all   # every part, in order

The part is planned exactly as `snapbench convert --pipeline` plans it (converters/pipeline.py: plan_parts)
and converted through the same `_convert_part` into a scratch folder. RSS is sampled every 20 ms; a phase
is named by wrapping the steps (PassPipelineManager.apply_pipeline runs coremltools' passes one by one
here, with the pass's name as the phase). Printed: per phase, seconds, RSS when it began, the largest RSS
seen during it, what glibc's malloc held freed (mallinfo2's fordblks: freed heap chunks it has not handed
back, resident until trimmed) when it began, and the process peak with the phase it fell in and what glibc
held freed then. `--part all` converts every part one after another in this one process, as `convert
--pipeline` does, each phase named after its part. Figures from a shared machine say so.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

PROC = psutil.Process()


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    fn = getattr(ctypes.CDLL(name), "mallinfo2", None) if name else None  # glibc >= 2.33
    if fn is not None:
        fn.restype = _MallInfo2
    return fn


MALLINFO2 = _mallinfo2()


def malloc_free_bytes() -> int:
    """Bytes in freed chunks glibc's malloc keeps (all arenas); 0 where mallinfo2 is not there."""
    return int(MALLINFO2().fordblks) if MALLINFO2 is not None else 0


class Phases:
    """The phase now running, and per phase: seconds, RSS at its start, largest RSS during it."""

    def __init__(self) -> None:
        self.now = "start"
        self.prefix = ""  # --part all: the part whose conversion is running
        self.peak_free = 0  # glibc's freed-but-kept bytes when the peak was seen
        self.rows: dict[str, dict[str, float]] = {}
        self.order: list[str] = []
        self.started = time.perf_counter()
        self.peak = (0, "start")
        self._stop = threading.Event()
        self.enter("start")
        threading.Thread(target=self._sample, daemon=True).start()

    def enter(self, name: str) -> None:
        name = self.prefix + name
        rss = PROC.memory_info().rss
        prev = self.rows.get(self.now)
        if prev is not None:
            prev["seconds"] += time.perf_counter() - prev.pop("_t", time.perf_counter())
            prev["peak"] = max(prev["peak"], rss)
        self.now = name
        row = self.rows.setdefault(name, {"seconds": 0.0, "rss_start": rss, "peak": rss,
                                          "malloc_free_start": malloc_free_bytes()})
        row["_t"] = time.perf_counter()
        if name not in self.order:
            self.order.append(name)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            rss = PROC.memory_info().rss
            row = self.rows.get(self.now)
            if row is not None:
                row["peak"] = max(row["peak"], rss)
            if rss > self.peak[0]:
                self.peak = (rss, self.now)
                self.peak_free = malloc_free_bytes()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.enter(name)
        try:
            yield
        finally:
            self.enter(f"after {name}")

    @contextlib.contextmanager
    def within(self, name: str) -> Iterator[None]:
        self.prefix = name
        self.enter("start")
        try:
            yield
        finally:
            self.prefix = ""

    def stop(self) -> None:
        self.enter("end")
        self._stop.set()


def wrap(module: Any, attr: str, phases: Phases, name: str) -> None:
    fn = getattr(module, attr)

    def wrapped(*a: Any, **k: Any) -> Any:
        with phases.phase(name):
            return fn(*a, **k)

    setattr(module, attr, wrapped)


def instrument(phases: Phases) -> None:
    """Name each step of a conversion as a phase."""
    from coremltools.converters.mil.mil.passes import pass_pipeline as pp
    from coremltools.converters.mil.mil.passes.pass_registry import PASS_REGISTRY

    from snapbench.converters import convert_package

    def apply_pipeline(prog: Any, pipeline: Any) -> None:  # coremltools' loop, a phase per pass
        for i, name in enumerate(pipeline.passes):
            phases.enter(f"{pipeline} #{i:02d} {name}")
            graph_pass = PASS_REGISTRY[name]
            graph_pass.set_options(pipeline.get_options(name))
            graph_pass(prog)
        phases.enter(f"after {pipeline}")

    pp.PassPipelineManager.apply_pipeline = staticmethod(apply_pipeline)
    wrap(convert_package, "trace", phases, "trace")
    wrap(convert_package, "to_coreml", phases, "ct.convert (frontend, then the passes, then the backend)")
    wrap(convert_package, "save_checked", phases, "save + reload check")
    wrap(convert_package, "compress", phases, "compress")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sdxl-tiny")
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--part", default="UnetChunk1",
                    help="TextEncoder, TextEncoder2, Unet, UnetChunk1/2, VAEDecoder, or all (every part in order)")
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--attention", default="split_einsum_v2")
    ap.add_argument("--weight-bits", type=int, default=16)
    ap.add_argument("--default-fp16", action="store_true",
                    help="as before fp16_folding.py: coremltools' own add_fp16_cast, the module released after ct.convert")
    ap.add_argument("--json-out", default=None)
    a = ap.parse_args()

    import snapbench  # noqa: F401  first: lets torchvision load beside a CPU-only torch
    from snapbench.backbones import resolve_model
    from snapbench.converters.app_parts import model_folder
    from snapbench.converters.options import ConvertOptions
    from snapbench.converters.pipeline import _convert_part, plan_parts
    from snapbench.converters.runtime import coremltools
    from snapbench.versions import tool_versions

    coremltools()
    if a.default_fp16:
        from snapbench.converters import convert_package

        convert_package.folding_fp16 = lambda pipeline, release: contextlib.nullcontext(pipeline)  # type: ignore[assignment]
    phases = Phases()
    instrument(phases)
    source = resolve_model(a.model)
    opts = ConvertOptions(latent=a.latent, tokens=a.tokens, chunks=a.chunks, attention=a.attention,
                          weight_bits=a.weight_bits, mode="deploy")
    with phases.phase("plan (cut on meta)"):
        parts = {p.name: p for p in plan_parts(source, opts, model_folder(source, None), vae_encoder=False)}
    if a.part != "all" and a.part not in parts:
        raise SystemExit(f"--part {a.part}: one of {', '.join(parts)}, or all")
    chosen = list(parts.values()) if a.part == "all" else [parts[a.part]]
    work = Path(tempfile.mkdtemp(prefix="probe_part."))
    load = os.getloadavg()[0]
    done: list[tuple[str, float, int, dict[str, float]]] = []
    try:
        for part in chosen:
            build = part.build

            def timed_build(build: Any = build) -> Any:
                with phases.phase("build (materialise weights, PSNR checks)"):
                    return build()

            part.build = timed_build  # type: ignore[method-assign]
            dest = work / f"{part.name}.mlpackage"
            with phases.within(f"{part.name}: " if a.part == "all" else ""):
                seconds, nbytes, _, timings = _convert_part(part, dest, "probe", opts, source, tool_versions())
            shutil.rmtree(dest, ignore_errors=True)  # only its memory is wanted: keep the disk free
            done.append((part.name, seconds, nbytes, timings))
    finally:
        phases.stop()
        shutil.rmtree(work, ignore_errors=True)
    gb = 1e9
    params = sum(p.params for p in chosen)
    print(f"{a.model} {a.part} ({params:,} parameters, {4 * params / gb:.2f} GB in fp32), latent {a.latent}; "
          + ", ".join(f"{n} {s:.0f} s, package {b / gb:.2f} GB" for n, s, b, _ in done)
          + f"; measured on a shared machine, load {load:.1f} at start, {os.getloadavg()[0]:.1f} at end")
    print(f"{'phase':72} {'s':>7} {'RSS at start GB':>16} {'peak GB':>8} {'malloc free GB':>15}")
    for name in phases.order:
        r = phases.rows[name]
        if r["seconds"] < 0.05 and r["peak"] - r["rss_start"] < 50e6:
            continue  # quick passes that moved nothing
        print(f"{name[:72]:72} {r['seconds']:7.1f} {r['rss_start'] / gb:16.2f} {r['peak'] / gb:8.2f} "
              f"{r['malloc_free_start'] / gb:15.2f}")
    print(f"process peak {phases.peak[0] / gb:.2f} GB, in: {phases.peak[1]} (glibc malloc held "
          f"{phases.peak_free / gb:.2f} GB freed then); timings " + "; ".join(f"{n} {t}" for n, _, _, t in done))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"model": a.model, "part": a.part, "params": params,
                                                "peak": phases.peak, "peak_malloc_free": phases.peak_free,
                                                "phases": {n: phases.rows[n] for n in phases.order},
                                                "timings": {n: t for n, _, _, t in done}}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
