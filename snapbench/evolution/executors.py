"""Where candidate evaluations run: in this process, in local worker processes, or on a Ray cluster.

At paper scale one evaluation is about 2.5 A100 GPU-hours (2K COCO prompts, 50 steps, CFG), so the
evaluations of an iteration's actions fan out. A task names a checkpoint folder (written before the
tasks are sent; workers load it once and keep it) and the evaluator's config, and either
- a candidate spec and blocks to disable (`EvalTask`): returns a `Quality` over every sample, or
- several candidate specs and sample indices (`ScoreTask`): returns each candidate's per-sample scores,
  the candidates batched through one model (snapbench.evolution.batching). With Ray on several machines the checkpoint folder must be on
a filesystem every node sees (the usual shared /data or NFS mount).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from snapbench.console import say
from snapbench.errors import SnapbenchError, first_line
from snapbench.evolution.evaluators import EvalConfig, Evaluator, Quality
from snapbench.interrupts import ignore_sigint, stop_pool
from snapbench.json_types import JSONObject
from snapbench.ray_cluster import check_ray_address, import_ray, patient_ray, start_local

if TYPE_CHECKING:  # loaded in the worker, when a task runs
    from snapbench.training.checkpoints import ModelBundle


@dataclass(frozen=True)
class EvalTask:
    checkpoint: str  # a folder (or preset) load_bundle reads
    spec: JSONObject | None  # the candidate's arch spec as a dict; None: the checkpoint's own
    disabled: tuple[str, ...]  # block ids to run as removed on top of the spec
    evaluator: EvalConfig

    def run(self) -> Quality:
        return run_task(self)


@dataclass(frozen=True)
class ScoreTask:
    checkpoint: str
    specs: tuple[JSONObject, ...]  # candidates' arch specs as dicts, run as one batch
    samples: tuple[int, ...]  # sample indices to score (the evaluator's numbering)
    evaluator: EvalConfig

    def run(self) -> list[list[float]]:
        return run_score_task(self)


T = TypeVar("T", covariant=True)


class Task(Protocol[T]):
    def run(self) -> T: ...


_BUNDLES: dict[str, ModelBundle] = {}
_EVALUATORS: dict[EvalConfig, Evaluator] = {}


def run_task(task: EvalTask) -> Quality:
    """Evaluate one candidate (in whatever process runs it). Loaded models and evaluators are kept per
    process: every task of an iteration shares one checkpoint."""
    from snapbench.specs.arch_spec import ArchSpec
    from snapbench.training.checkpoints import derive

    bundle, evaluator = _loaded(task.checkpoint, task.evaluator)
    model = bundle.model
    if task.spec is not None:
        spec = ArchSpec.from_dict(dict(task.spec), source="candidate")
        if spec.to_dict() != bundle.spec.to_dict():
            model = derive(bundle.model, spec)
    return evaluator.evaluate(bundle, model, task.disabled)


def run_score_task(task: ScoreTask) -> list[list[float]]:
    """Per-sample scores of several candidates, batched through the model holding all their blocks."""
    from snapbench.evolution.batching import union_spec, variant_groups
    from snapbench.specs.arch_spec import ArchSpec
    from snapbench.training.checkpoints import derive

    bundle, evaluator = _loaded(task.checkpoint, task.evaluator)
    specs = [ArchSpec.from_dict(dict(s), source="candidate") for s in task.specs]
    out: list[list[float]] = [[] for _ in specs]
    for members in variant_groups(specs):  # a swapped block is another module: one batch per variant set
        union, off = union_spec([specs[i] for i in members])
        model = bundle.model if union.to_dict() == bundle.spec.to_dict() else derive(bundle.model, union)
        for i, scores in zip(members, evaluator.sample_scores(bundle, model, off, task.samples)):
            out[i] = scores
    return out


def _loaded(checkpoint: str, config: EvalConfig) -> tuple[ModelBundle, Evaluator]:
    from snapbench.training.checkpoints import load_bundle

    bundle = _BUNDLES.get(checkpoint)
    if bundle is None:
        _BUNDLES.clear()  # evolution moves forward: an older checkpoint is not asked for again
        bundle = _BUNDLES[checkpoint] = load_bundle(checkpoint, device=evaluation_device())
    evaluator = _EVALUATORS.get(config)
    if evaluator is None:
        evaluator = _EVALUATORS[config] = config.build()
    return bundle, evaluator


def evaluation_device() -> str:
    """Where this process evaluates: a GPU when it sees one (a Ray task that asked for one sees only
    its own), else the CPU. At SD scale a CPU evaluation would take days, not GPU-hours."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def forget_cached() -> None:
    _BUNDLES.clear()


R = TypeVar("R")


def _run(task: Task[R]) -> R:
    return task.run()


class Executor(Protocol):
    name: str
    slots: int  # tasks that run at the same time (how finely a batch of candidates is worth splitting)

    def map(self, tasks: Sequence[Task[R]], on_done: Callable[[], None] | None = None) -> list[R]: ...

    def close(self) -> None: ...


class SerialExecutor:
    name = "in-process"
    slots = 1

    def map(self, tasks: Sequence[Task[R]], on_done: Callable[[], None] | None = None) -> list[R]:
        out = []
        for t in tasks:
            out.append(t.run())
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
        self.slots = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_init_pool_worker, initargs=(threads,))

    def map(self, tasks: Sequence[Task[R]], on_done: Callable[[], None] | None = None) -> list[R]:
        futures = {self._pool.submit(_run, t): i for i, t in enumerate(tasks)}
        done: dict[int, R] = {}  # by task index: results come back in completion order
        try:
            for f in as_completed(futures):
                done[futures[f]] = f.result()
                if on_done:
                    on_done()
        except KeyboardInterrupt:
            stop_pool(self._pool)
            raise
        return [done[i] for i in range(len(tasks))]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _ray_task(task: Task[R], threads: int) -> R:
    _init_worker(threads)
    return task.run()


class RayExecutor:
    """Ray tasks, one CPU each. `address`: None or 'local' starts a private local Ray; anything else
    joins a running cluster ('auto' = the one on this machine)."""

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None, threads: int = 1) -> None:
        ray = import_ray("Ray workers (--ray-address)")
        self._ray = ray
        self._threads = threads
        local = address in (None, "local")
        if address is not None and not local:
            check_ray_address(address)
        self._started = not ray.is_initialized()
        try:
            if self._started:
                if local:
                    start_local(ray, num_cpus=num_cpus, say=say)  # a retry is said on stderr
                else:
                    with patient_ray():
                        ray.init(address=address, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = first_line(e, default=type(e).__name__)
            raise SnapbenchError(f"Ray at {address} does not answer ({first}); start it with `ray start --head` "
                                 "or leave out --ray-address for local workers") from None
        self.name = "Ray (local)" if local else f"Ray at {address}"
        # A task that asks for no GPU gets CUDA_VISIBLE_DEVICES="" from Ray: where the cluster has GPUs,
        # each evaluation asks for one, else every task would sample on a CPU.
        resources = ray.cluster_resources()
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        self.slots = max(1, int(resources.get("GPU", 0) if gpus else resources.get("CPU", 1)))
        self._remote = ray.remote(num_cpus=1, num_gpus=gpus)(_ray_task)

    def map(self, tasks: Sequence[Task[R]], on_done: Callable[[], None] | None = None) -> list[R]:
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
