"""`snapbench selftest`: every Stable-Diffusion-scale path, run end to end on tiny random checkpoints.

The stages are the commands a user with GPUs and SD-v1.5 weights runs (see README "Full scale"), each
started as its own process exactly as a user starts it (`python -m snapbench ...`, training through
`accelerate launch`), on the folders `snapbench.fixtures` writes. Each stage is timed and reported as
ok or failed with the first line of its error; a stage whose input another stage failed to make is
reported failed without running. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSONObject

DEVICE = "iphone14pro"
EVAL_STEPS = "2"  # DDIM steps per CLIP-evaluated image: paths, not quality
FIXTURES = "fixtures (tiny pipeline, CLIP, data)"
DIT = "sd35-tiny"  # a DiT preset: no checkpoint needed (random weights; the paths are what is tested)
DIT_CANDIDATE = "sd3-tiny"  # the DiT report's candidate: SD3's twin (no dual attention, one block fewer)
# Ablation of a few blocks (a CA and an RB down and up): the path is the same for all; evolve scores them all.
ABLATED = ("--block", "RB[Down-1, 1]", "--block", "CA[Down-2, 1]", "--block", "CA[Up-1, 1]", "--block", "RB[Up-3, 1]")


@dataclass(frozen=True)
class StageResult:
    name: str
    ok: bool
    seconds: float
    error: str | None
    cpu_seconds: float | None = None  # user + system time of the stage's processes (not in --json)

    def to_dict(self) -> JSONObject:
        return {"name": self.name, "ok": self.ok, "seconds": self.seconds, "error": self.error}


@dataclass(frozen=True)
class SelftestResult:
    stages: list[StageResult]
    work: Path
    kept: bool

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.stages)

    def to_dict(self) -> JSONObject:
        return {"stages": [s.to_dict() for s in self.stages], "ok": self.ok}


@dataclass(frozen=True)
class Stage:
    name: str
    argv: tuple[str, ...]
    needs: tuple[str, ...] = ()  # stages whose output this one reads
    env: tuple[tuple[str, str], ...] = ()
    check: Callable[[str], str | None] | None = None  # stdout -> what is wrong with it, or None


@dataclass(frozen=True)
class Devices:
    kind: str  # "cuda" or "cpu"
    count: int

    def describe(self, n: int) -> str:
        return f"{n} GPU{'s' if n != 1 else ''}" if self.kind == "cuda" else f"{n} CPU core{'s' if n != 1 else ''}"


def available_devices() -> Devices:
    """What training processes can each have: a GPU each where there are GPUs, else a CPU core each."""
    import torch

    if torch.cuda.is_available():
        return Devices("cuda", torch.cuda.device_count())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Devices("cpu", cores)


def training_processes(requested: int | None, devices: Devices) -> int:
    """--processes, checked against the devices: default 2 where there are two, else 1."""
    if requested is None:
        return min(2, devices.count)
    if requested < 1:
        raise SnapbenchError(f"--processes {requested}: must be >= 1")
    if requested > devices.count:
        raise SnapbenchError(f"--processes {requested}: only {devices.describe(devices.count)} here; "
                             f"use --processes {devices.count} or fewer")
    return requested


def accelerate_launch(processes: int, devices: Devices, module: str = "snapbench.train"
                      ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """`accelerate launch -m module` arguments (and environment) for `processes` processes.

    Several processes always go through accelerate's multi-process launcher (torchrun); on CPUs
    ACCELERATE_USE_CPU makes each process join a gloo process group instead of looking for GPUs."""
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0"]
    env: tuple[tuple[str, str], ...] = ()
    if processes > 1:
        argv.append("--multi_gpu")
        if devices.kind == "cpu":
            env = (("ACCELERATE_USE_CPU", "true"),)
    elif devices.kind == "cpu":
        argv.append("--cpu")
    return (*argv, "-m", module), env


def plan(work: Path, *, processes: int, devices: Devices, workers: int = 2) -> list[Stage]:
    """The stages, in order, on the fixtures under work/fixtures; outputs under work/."""
    from snapbench.fixtures import TinyFixtures

    fx = TinyFixtures(work / "fixtures", work / "fixtures" / "pipeline", work / "fixtures" / "clip",
                      work / "fixtures" / "data", work / "fixtures" / "prompts.txt")
    snap = (sys.executable, "-m", "snapbench")
    pipe = str(fx.pipeline)
    latent = "8"  # the sd15-tiny UNet's sample_size
    table = str(work / "latency.csv")  # profile's table, read by ablate / evolve / report as a user would
    clip = ("--evaluator", "clip", "--prompts", str(fx.prompts), "--clip-weights", str(fx.clip),
            "--pipeline", pipe, "--eval-steps", EVAL_STEPS, "--device", DEVICE, "--table", table)
    launch, launch_env = accelerate_launch(processes, devices)
    distill_launch, _ = accelerate_launch(processes, devices, "snapbench.distill")
    trained = str(work / "train")
    fixtures = FIXTURES
    train = f"train (accelerate, {processes} process{'es' if processes != 1 else ''})"
    evolve = "evolve (clip, ray)"
    blocks, profile = "convert (per block)", "profile (estimate)"
    dit_inspect, dit_convert = "inspect (DiT)", "convert (DiT blocks, split_einsum_v2)"
    dit_profile, dit_table = "profile (DiT, estimate)", str(work / "latency-dit.csv")
    return [
        Stage(fixtures, (sys.executable, "-m", "snapbench.fixtures", str(fx.root))),
        Stage("inspect (pipeline folder)", (*snap, "inspect", "--model", pipe, "--json"), (fixtures,)),
        Stage(blocks, (*snap, "convert", "--model", pipe, "--latent", latent, "--out", str(work / "convert-blocks"),
                       "--json"), (fixtures,)),
        Stage("convert (whole, 2 chunks)", (*snap, "convert", "--model", pipe, "--whole", "--chunks", "2",
                                            "--latent", latent, "--out", str(work / "convert-whole"), "--json"),
              (fixtures,)),
        Stage("convert (text encoder)", (*snap, "convert", "--component", "text_encoder", "--model", pipe,
                                         "--weights", pipe, "--out", str(work / "convert-text-encoder"), "--json"),
              (fixtures,)),
        Stage("convert (VAE decoder)", (*snap, "convert", "--component", "vae_decoder", "--model", pipe,
                                        "--weights", pipe, "--latent", latent, "--out",
                                        str(work / "convert-vae-decoder"), "--json"), (fixtures,)),
        Stage(profile, (*snap, "profile", "--device", DEVICE, "--model", pipe, "--backend", "estimate",
                        "--latent", latent, "--packages", str(work / "convert-blocks"), "--table", table, "--json"),
              (fixtures, blocks)),
        Stage(train, (*launch, "--model", pipe, "--data", str(fx.data), "--robust", "--steps", "2",
                      "--batch-size", str(2 * processes), "--out", trained, "--json"), (fixtures,), launch_env,
              check=lambda stdout: _ran_in(stdout, processes)),
        Stage(f"ablate (clip, {workers} local workers)", (*snap, "ablate", "--model", trained, *clip, *ABLATED,
                                                          "--workers", str(workers), "--json"), (train, profile)),
        Stage(evolve, (*snap, "evolve", "--model", trained, *clip, "--ray-address", "local",
                       "--target-fraction", "0.9", "--max-iterations", "1", "--out", str(work / "evolve"), "--json"),
              (train, profile)),
        Stage(f"distill (cfg-aware, accelerate, {processes} process{'es' if processes != 1 else ''})",
              (*distill_launch, "--model", trained, "--data", str(fx.data), "--cfg-aware",
               "--teacher-steps", "4", "--student-steps", "2", "--steps", "2", "--batch-size", str(2 * processes),
               "--out", str(work / "distill"), "--json"), (train,), launch_env,
              check=lambda stdout: _ran_in(stdout, processes, "run")),
        Stage("distill-decoder (50% channels)", (*snap, "distill-decoder", "--vae", pipe, "--latents", str(fx.data),
                                                 "--prune", "0.5", "--steps", "2", "--batch-size", "2",
                                                 "--out", str(work / "distill-decoder"), "--json"), (fixtures,)),
        # SDXL-class and SnapGen-style UNets: presets (no checkpoint), converted per block and estimated
        *(Stage(f"profile {m} (convert per block, estimate)",
                (*snap, "profile", "--device", DEVICE, "--model", m, "--backend", "estimate", "--component", "unet",
                 "--tokens", "5", "--table", str(work / f"latency-{m}.csv"), "--json"))
          for m in ("sdxl-tiny", "snapgen-tiny")),
        # diffusion transformers: SD3.5's tiny twin (joint and dual attention), Neural Engine attention
        Stage(dit_inspect, (*snap, "inspect", "--model", DIT, "--json")),
        Stage(dit_convert, (*snap, "convert", "--model", DIT, "--latent", latent, "--attention", "split_einsum_v2",
                            "--out", str(work / "convert-dit"), "--json"), (dit_inspect,)),
        Stage(dit_profile, (*snap, "profile", "--model", DIT, "--device", DEVICE, "--backend", "estimate",
                            "--latent", latent, "--attention", "split_einsum_v2", "--packages", str(work / "convert-dit"),
                            "--table", dit_table, "--json"), (dit_convert,)),
        # SD3's twin against SD3.5's: its blocks are converted and estimated by the report, SD3.5's read from the table
        Stage("report (DiT)", (*snap, "report", "--baseline", DIT, "--candidate", DIT_CANDIDATE, "--device", DEVICE,
                               "--backend", "estimate", "--latent", latent, "--attention", "split_einsum_v2",
                               "--table", dit_table, "--out", str(work / "report-dit.html")), (dit_profile,)),
        Stage("report", (*snap, "report", "--baseline", pipe, "--candidate", str(work / "evolve"), "--device", DEVICE,
                         "--backend", "estimate", "--latent", latent, "--table", table,
                         "--out", str(work / "report.html")), (evolve, profile)),
    ]


def _ran_in(stdout: str, processes: int, key: str | None = None) -> str | None:
    """A launched run used `processes` processes and printed one result (not one per process)."""
    import json

    try:
        result = json.loads(stdout)
    except json.JSONDecodeError:
        return "printed no single JSON result (one per process?)"
    ran = (result.get(key) or {}) if key else result
    if ran.get("processes") != processes:
        return f"ran in {ran.get('processes')} process(es), {processes} asked"
    return None


def first_error_line(stderr: str, returncode: int) -> str:
    """The line that says what went wrong: snapbench's own `error: ...`, else a traceback's last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("error:"):
            return ln[len("error:"):].strip()
    for ln in reversed(lines):
        if not ln.startswith(("File ", "^", "~")) and ("Error" in ln or "Exception" in ln):
            return ln
    return lines[-1] if lines else f"exit code {returncode}"


def run_process(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                timeout: float | None) -> subprocess.CompletedProcess[str]:
    """One stage's process, its output captured. (The test suite starts the `python -m snapbench` stages
    through its fork server here: the same argv, folder and environment, without paying the imports again.)"""
    return subprocess.run(list(argv), cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout)


def run_stage(stage: Stage, *, cwd: Path, log_dir: Path, timeout: float | None = None) -> StageResult:
    """Run one stage as its own process; its stdout and stderr go to log_dir/<n>.log."""
    env = dict(os.environ)
    # Tiny models on a shared machine: one intra-op thread per process beats oversubscribed cores.
    env.setdefault("OMP_NUM_THREADS", "1")
    env["SNAPBENCH_CACHE"] = str(cwd / "cache")
    env.update(dict(stage.env))
    log = log_dir / (_file_name(stage.name) + ".log")
    t0, cpu0 = time.time(), _children_cpu()
    try:
        proc = run_process(stage.argv, cwd=cwd, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return StageResult(stage.name, False, round(time.time() - t0, 1), f"timed out after {timeout:.0f} s")
    seconds, cpu = round(time.time() - t0, 1), round(_children_cpu() - cpu0, 1)
    log.write_text(f"$ {' '.join(stage.argv)}\n--- exit code {proc.returncode}, {seconds} s, {cpu} s CPU\n"
                   f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        return StageResult(stage.name, False, seconds, first_error_line(proc.stderr, proc.returncode), cpu)
    wrong = stage.check(proc.stdout) if stage.check is not None else None
    return StageResult(stage.name, wrong is None, seconds, wrong, cpu)


def _children_cpu() -> float:
    """CPU seconds of finished child processes (and theirs, once waited for)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").replace("--", "-")


def selftest(*, keep: str | Path | None = None, processes: int | None = None,
             on_stage: Callable[[StageResult], None] = lambda r: None,
             on_start: Callable[[str], None] = lambda name: None, only: Sequence[str] | None = None,
             timeout: float | None = None) -> SelftestResult:
    """Write the fixtures, then run every stage in order. `keep`: a folder to work in and leave behind
    (new or empty); else a temporary folder, removed at the end. `only`: run the stages whose names
    start with one of these (tests)."""
    devices = available_devices()
    n = training_processes(processes, devices)
    if keep is not None:
        work = Path(keep)
        if work.exists() and (not work.is_dir() or any(work.iterdir())):
            raise SnapbenchError(f"--keep {work}: exists and is not empty; give a new or empty folder")
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="snapbench-selftest-"))
    work = work.resolve()
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    results: list[StageResult] = []
    try:
        for stage in plan(work, processes=n, devices=devices):
            if only is not None and stage.name != FIXTURES and not stage.name.startswith(tuple(only)):
                continue
            on_start(stage.name)
            failed = [s.name for s in results if not s.ok and s.name in stage.needs]
            if failed:
                r = StageResult(stage.name, False, 0.0, f"not run: {failed[0]} failed")
            else:
                r = run_stage(stage, cwd=work, log_dir=logs, timeout=timeout)
            results.append(r)
            on_stage(r)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    return SelftestResult(results, work, keep is not None)
