"""Where candidate evaluations run: in this process, in local worker processes, or on a Ray cluster.

At paper scale one evaluation is about 2.5 A100 GPU-hours (2K COCO prompts, 50 steps, CFG), so the
evaluations of an iteration's actions fan out. A task names a checkpoint folder (written before the
tasks are sent; workers load it once and keep it), a candidate spec and blocks to disable, and the
evaluator's config; it returns a `Quality`. With Ray on several machines the checkpoint folder must be on
a filesystem every node sees (the usual shared /data or NFS mount).
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

from snapbench.errors import SnapbenchError, first_line
from snapbench.interrupts import ignore_sigint, stop_pool
from snapbench.ray_cluster import check_ray_address
from snapbench.evolution.evaluators import EvalConfig, Quality


@dataclass(frozen=True)
class EvalTask:
    checkpoint: str  # a folder (or preset) load_bundle reads
    spec: Mapping[str, Any] | None  # the candidate's arch spec as a dict; None: the checkpoint's own
    disabled: tuple[str, ...]  # block ids to run as removed on top of the spec
    evaluator: EvalConfig


_BUNDLES: dict[str, Any] = {}
_EVALUATORS: dict[Any, Any] = {}


def run_task(task: EvalTask) -> Quality:
    """Evaluate one candidate (in whatever process runs it). Loaded models and evaluators are kept per
    process: every task of an iteration shares one checkpoint."""
    from snapbench.evolution.checkpoints import derive, load_bundle
    from snapbench.specs.arch_spec import ArchSpec

    bundle = _BUNDLES.get(task.checkpoint)
    if bundle is None:
        _BUNDLES.clear()  # evolution moves forward: an older checkpoint is not asked for again
        bundle = _BUNDLES[task.checkpoint] = load_bundle(task.checkpoint, device=evaluation_device())
    evaluator = _EVALUATORS.get(task.evaluator)
    if evaluator is None:
        evaluator = _EVALUATORS[task.evaluator] = task.evaluator.build()
    model = bundle.model
    if task.spec is not None:
        spec = ArchSpec.from_dict(dict(task.spec), source="candidate")
        if spec.to_dict() != bundle.spec.to_dict():
            model = derive(bundle.model, spec)
    return evaluator.evaluate(bundle, model, task.disabled)


def evaluation_device() -> str:
    """Where this process evaluates: a GPU when it sees one (a Ray task that asked for one sees only
    its own), else the CPU. At SD scale a CPU evaluation would take days, not GPU-hours."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def forget_cached() -> None:
    _BUNDLES.clear()


class Executor(Protocol):
    name: str

    def map(self, tasks: Sequence[EvalTask], on_done: Callable[[], None] | None = None) -> list[Quality]: ...

    def close(self) -> None: ...


class SerialExecutor:
    name = "in-process"

    def map(self, tasks: Sequence[EvalTask], on_done: Callable[[], None] | None = None) -> list[Quality]:
        out = []
        for t in tasks:
            out.append(run_task(t))
            if on_done:
                on_done()
        return out

    def close(self) -> None:
        pass


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _init_pool_worker(threads: int) -> None:
    ignore_sigint()  # Ctrl-C reaches the whole process group; the parent alone handles it
    _init_worker(threads)


class ProcessExecutor:
    """Local worker processes (spawned: safe with torch), each with `threads` intra-op threads."""

    def __init__(self, workers: int, threads: int = 1) -> None:
        import multiprocessing

        self.name = f"{workers} local worker process(es)"
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_pool_worker, initargs=(threads,))

    def map(self, tasks: Sequence[EvalTask], on_done: Callable[[], None] | None = None) -> list[Quality]:
        futures = {self._pool.submit(run_task, t): i for i, t in enumerate(tasks)}
        out: list[Quality | None] = [None] * len(tasks)
        try:
            for f in as_completed(futures):
                out[futures[f]] = f.result()
                if on_done:
                    on_done()
        except KeyboardInterrupt:
            stop_pool(self._pool)
            raise
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _ray_task(task: EvalTask, threads: int) -> Quality:
    _init_worker(threads)
    return run_task(task)


class RayExecutor:
    """Ray tasks, one CPU each. `address`: None or 'local' starts a private local Ray; anything else
    joins a running cluster ('auto' = the one on this machine)."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, threads: int = 1) -> None:
        from snapbench.extras import require

        ray = require("ray", "scale", "Ray workers (--ray-address)")
        self._ray = ray
        self._threads = threads
        local = address in (None, "local")
        if not local:
            check_ray_address(address)  # type: ignore[arg-type]
        self._started = not ray.is_initialized()
        try:
            if self._started:
                if local:
                    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = first_line(e, default=type(e).__name__)
            raise SnapbenchError(f"Ray at {address} does not answer ({first}); start it with `ray start --head` "
                                 "or leave out --ray-address for local workers") from None
        self.name = "Ray (local)" if local else f"Ray at {address}"
        # A task that asks for no GPU gets CUDA_VISIBLE_DEVICES="" from Ray: where the cluster has GPUs,
        # each evaluation asks for one, else every task would sample on a CPU.
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self._remote = ray.remote(num_cpus=1, num_gpus=gpus)(_ray_task)

    def map(self, tasks: Sequence[EvalTask], on_done: Callable[[], None] | None = None) -> list[Quality]:
        refs = [self._remote.remote(t, self._threads) for t in tasks]
        pending = list(refs)
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            if on_done:
                for _ in done:
                    on_done()
        return self._ray.get(refs)

    def close(self) -> None:
        if self._started and self._ray.is_initialized():
            self._ray.shutdown()


def make_executor(*, workers: int, threads: int = 1, ray_address: str | None = None) -> Executor:
    """--ray-address wins; else `workers` > 1 local processes; else this process."""
    if ray_address is not None:
        return RayExecutor(ray_address, threads=threads)
    if workers > 1:
        return ProcessExecutor(workers, threads)
    return SerialExecutor()
