"""The optimizer loop that robust training (`evolution/robust_training.py`) and step distillation
(`distillation/step_distillation.py`) share, and what goes with it: the denoiser + prompt encoder trained as
one module, the per-step random generator, AdamW with a warmup that resumes where it stopped, the rule
for which settings may change on resume, and the progress bar.

A run's own config (`TrainConfig`, `DistillConfig`) is passed as is: the loop reads only the fields that
`LoopConfig` names, so the type checker sees that both configs have them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypedDict

import torch
from torch import nn

from snapbench.resuming import Flag, check_same
from snapbench.training.data import TrainingData
from snapbench.user_files import load_torch_state

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from accelerate import Accelerator

    from snapbench.progress_log import ProgressBar
    from snapbench.training.checkpoints import Elastic

OPTIMIZER_FILE = "optimizer.pt"  # the optimizer's state, beside the checkpoint, for resuming

# Fields of a run's config that may change when it is resumed (more steps, another save interval); every
# other field must match the run in the folder.
RESUMABLE = frozenset({"steps", "save_every"})


class LoopConfig(Protocol):
    """What `run_steps` and `optimizer_with_warmup` read of a run's config (read-only, as in a frozen
    dataclass)."""

    @property
    def steps(self) -> int: ...
    @property
    def save_every(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def batch_size(self) -> int: ...
    @property
    def grad_clip(self) -> float: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...


@dataclass(frozen=True)
class TrainResult:
    out: Path
    step: int
    resumed_from: int
    loss: float | None  # mean loss over the last logged window
    seconds: float
    losses: list[tuple[int, float]]
    processes: int = 1  # training processes (accelerate / DDP), each with batch_size / processes samples
    main_process: bool = True  # False in the other processes of a multi-process run

    def to_dict(self) -> TrainResultDict:
        return {"out": str(self.out), "step": self.step, "resumed_from": self.resumed_from, "loss": self.loss,
                "seconds": round(self.seconds, 1), "losses": self.losses, "processes": self.processes}


class TrainResultDict(TypedDict):
    """`TrainResult.to_dict()`: what `train --json` and `distill --json` print under "run"."""

    out: str
    step: int
    resumed_from: int
    loss: float | None
    seconds: float
    losses: list[tuple[int, float]]
    processes: int


class SavedRun(TypedDict, total=False):
    """The fields of a run's state file (training's and distillation's) that say where it stopped."""

    step: int
    losses: list[list[float]]  # [step, mean loss] pairs, as JSON writes tuples
    seconds: float


@dataclass
class RunStart:
    """Where a run starts: step 0 of a new run, or the step, logged losses and seconds spent of the run
    saved in its folder's state."""

    step: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @classmethod
    def from_state(cls, state: SavedRun) -> RunStart:
        return cls(int(state.get("step", 0)), [(int(s), float(v)) for s, v in state.get("losses", [])],
                   float(state.get("seconds", 0.0)))


@dataclass(frozen=True)
class StepLog:
    """How the loop reports: a progress bar named `label` (on the main process, when `progress`), and the
    mean loss of every `every` steps in the result's `losses`."""

    label: str
    every: int
    progress: bool = True


class Trainable(nn.Module):
    """The elastic denoiser (a UNet or a DiT) + (toy) prompt encoder as one module, so accelerate / DDP wrap
    and sync both."""

    def __init__(self, unet: Elastic, encoder: nn.Module | None) -> None:
        super().__init__()
        self.unet = unet
        self.encoder = encoder

    def forward(self, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        context = self.encoder(cond) if self.encoder is not None else cond
        return self.unet(z_t, t, context, generator=generator)


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """Every random draw of a step (batch, noise, t, dropout, block skips) from (seed, step, rank)."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 65_537 + rank)


def check_resumable(before: DataclassInstance, config: DataclassInstance, out: Path,
                    flags: Mapping[str, Flag]) -> None:
    """Refuse to resume the run in `out` (made with config `before`) under a `config` that differs from it
    in a field outside `RESUMABLE`: one line naming each field, both values and the options (`flags`, by
    field) that give the run's values back (`snapbench.resuming`)."""
    check_same(out, before, config, flags, same=lambda key: key in RESUMABLE)


def run_steps(accelerator: Accelerator, trainable: nn.Module, opt: torch.optim.Optimizer,
              lr_sched: torch.optim.lr_scheduler.LRScheduler, config: LoopConfig, out: Path, *,
              start: RunStart, train_data: TrainingData,
              loss_of: Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor],
              save: Callable[[nn.Module, int, list[tuple[int, float]], float], None], log: StepLog) -> TrainResult:
    """The optimizer loop: a batch per step drawn from the step's own generator, backward, clipped
    gradients, AdamW + warmup, the mean loss every `log.every` steps, and a checkpoint
    (`save(unwrapped module, step, losses, seconds so far)`) every `config.save_every` steps and at the end."""
    per_rank = max(1, config.batch_size // accelerator.num_processes)
    t0 = time.time()
    losses = start.losses
    window: list[float] = []
    last_loss = losses[-1][1] if losses else None
    trainable.train()
    with StepBar(log.progress and accelerator.is_main_process, config.steps, start.step, log.label) as advance:
        for step in range(start.step, config.steps):
            g = step_generator(config.seed, step, accelerator.process_index)
            x0, cond = train_data.batch(per_rank, g)
            loss = loss_of(x0, cond, g)
            accelerator.backward(loss)
            if config.grad_clip > 0:
                accelerator.clip_grad_norm_(trainable.parameters(), config.grad_clip)
            opt.step()
            lr_sched.step()
            opt.zero_grad(set_to_none=True)
            window.append(float(loss.detach()))
            done = step + 1
            if len(window) >= log.every or done == config.steps:
                last_loss = sum(window) / len(window)
                losses.append((done, round(last_loss, 6)))
                window.clear()
            advance(done, last_loss)
            if done % config.save_every == 0 or done == config.steps:
                accelerator.wait_for_everyone()
                if accelerator.is_main_process:
                    save(accelerator.unwrap_model(trainable), done, losses, start.seconds + time.time() - t0)
    return TrainResult(out, max(start.step, config.steps), start.step, last_loss, start.seconds + time.time() - t0,
                       losses, processes=accelerator.num_processes, main_process=accelerator.is_main_process)


def optimizer_with_warmup(trainable: nn.Module, config: LoopConfig, out: Path | None, start: int
                          ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (its state restored from `out` when resuming at step `start`; `out` None: always fresh) and a
    linear warmup, then constant; offset by `start` so a resumed run continues where it left off."""
    opt = torch.optim.AdamW(trainable.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    if start and out is not None and (out / OPTIMIZER_FILE).is_file():
        opt.load_state_dict(load_torch_state(out / OPTIMIZER_FILE, "optimizer state",
                                             "delete it to resume with a fresh optimizer, or use another --out"))
    warm = max(1, config.warmup_steps)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + start + 1) / warm))
    return opt, lr_sched


class StepBar:
    """A rich progress bar on stderr (or nothing), advanced with (step, loss)."""

    def __init__(self, enabled: bool, total: int, start: int, label: str = "train") -> None:
        self.enabled, self.total, self.start, self.label = enabled, total, start, label
        self.progress: ProgressBar | None = None

    def __enter__(self) -> Callable[[int, float | None], None]:
        if not self.enabled:
            return lambda step, loss: None
        from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

        from snapbench.console import err
        from snapbench.progress_log import description_column, label_column, make_progress

        progress = make_progress(self.label, label_column(self.label), BarColumn(),
                                 MofNCompleteColumn(), TimeRemainingColumn(), description_column(),
                                 console=err, transient=True)
        self.progress = progress
        progress.start()
        task = progress.add_task("", total=self.total, completed=self.start)

        def advance(step: int, loss: float | None) -> None:
            desc = f"loss {loss:.4f}" if loss is not None and math.isfinite(loss) else ""
            progress.update(task, completed=step, description=desc)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
