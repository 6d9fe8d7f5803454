"""Robust training (SnapFusion 3.1.1): the standard diffusion loss while every CA / RB block is skipped at
random, so that the trained UNet tolerates losing any block and a block's worth can be measured by
removing it, without retraining.

One step: x0 and its condition from the data; noise eps and timestep t; z_t = alpha_t x0 + sigma_t eps
(diffusers' DDPMScheduler.add_noise); the elastic UNet in training mode, each unit skipped with its
probability; loss = MSE to eps (epsilon) or to v = alpha_t eps - sigma_t x0 (v_prediction); AdamW.
`accelerate` runs it on one CPU or many GPUs (`accelerate launch -m snapbench.train ...`).

With `variant_moves` (`train --robust --variant-moves separable,mqa,...`) a kept block also runs, with
`variant_p`, one of its cheaper SnapGen-style variants (evolution's swaps, moves.py) instead of itself, so
that `evolve --moves` judges a swap on trained weights rather than on weights inherited from the dense
block (`ElasticUNet.add_alternative`: what they share and what is their own).

The output folder is always a complete checkpoint (see checkpoints.py) plus `train_state.json` and
`optimizer.pt`; running the same command again resumes from it.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from snapbench.errors import SnapbenchError
from snapbench.evolution.moves import SWAPS, check_moves_apply
from snapbench.json_types import JSON, JSONObject, dataclass_from_json
from snapbench.locks import FOLDER_LOCK, claimed_run_folder
from snapbench.model.elastic_unet import ElasticUNet
from snapbench.resuming import Flag
from snapbench.training.checkpoints import ModelBundle, load_bundle, save_bundle
from snapbench.training.data import TrainingData, training_data
from snapbench.training.loop import (
    OPTIMIZER_FILE,
    RunStart,
    SavedRun,
    StepLog,
    Trainable,
    TrainResult,
    check_resumable,
    optimizer_with_warmup,
    run_steps,
    step_generator,
)

if TYPE_CHECKING:
    from diffusers import DDPMScheduler

STATE_FILE = "train_state.json"
STATE_FORMAT = "snapbench.train/1"
# `train`'s options for the TrainConfig fields a resumed run must keep (the others no option sets).
TRAIN_FLAGS = {"batch_size": Flag("--batch-size"), "learning_rate": Flag("--lr"),
               "robust": Flag("--robust", off="--normal"), "skip.ca": Flag("--skip-ca"), "skip.rb": Flag("--skip-rb"),
               "prediction_type": Flag("--prediction-type"), "variant_moves": Flag("--variant-moves"),
               "variant_p": Flag("--variant-p"), "seed": Flag("--seed")}


@dataclass(frozen=True)
class SkipProbabilities:
    """The chance that a CA / RB block runs as removed in a training step. The paper does not publish p.

    Defaults: CA 0.1, RB 0.1. Why:
    - Evolution asks "what does removing this block cost?" one block at a time, starting from the full
      model, and SnapFusion's final UNet differs from SD-v1.5 by about 10 of 38 blocks (Table 3). With 38
      blocks at p = 0.1 a step drops about 3.8 of them (binomial, sd 1.8): the sub-networks trained are
      the neighbourhood evolution explores, including every single-block removal many times over.
    - Much larger p trades away the full model: at p = 0.1 the full network itself runs in only 2% of
      steps but every block is trained in 90% of them; at p = 0.3 a block sees 30% fewer gradient
      updates and ~11 of 38 blocks vanish per step, deeper than any architecture evolution needs.
    - Stochastic depth (Huang et al. 2016) reached its best results with survival 0.5..0.8 for the
      deepest layers of 100+ layer ResNets; a 38-block UNet with skip connections has less redundancy,
      so we sit at the gentle end (survival 0.9).
    - CA and RB share one default: nothing measured here argues for different values (only p = 0.1 was
      tried on the toy). They are separate settings (`--skip-ca`, `--skip-rb`) because the paper finds
      CA carries semantics and RB detail, so a user may want to protect one kind.
    - Measured on the toy (1,500 steps each, same seed): robust training at 0.1/0.1 cut the largest
      single-block quality drop from 0.70 to 0.06, at a cost of full-model quality (0.90 -> 0.78 mean
      probability on held-out noise).
    """

    ca: float = 0.1
    rb: float = 0.1

    def __post_init__(self) -> None:
        for name in ("ca", "rb"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise SnapbenchError(f"skip probability for {name.upper()} must be in [0, 1), got {p}")


NO_SKIP = SkipProbabilities(0.0, 0.0)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000
    batch_size: int = 64
    learning_rate: float = 1e-3  # the toy's; fine-tuning SD-v1.5 wants ~1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 50
    robust: bool = True
    skip: SkipProbabilities = field(default_factory=SkipProbabilities)
    prediction_type: Literal["epsilon", "v_prediction"] | None = None  # None: the noise schedule's own
    cond_dropout: float = 0.1  # share of steps' samples trained unconditionally (for CFG)
    variant_moves: tuple[str, ...] = ()  # swaps (moves.SWAPS) whose variants robust training samples
    # Chance that a kept block runs one of its variants in a step. Same reasoning as the skip default: a
    # step changes ~10% of the blocks, so every block trains mostly as itself while each variant is
    # trained in every ~10th step per block (divided among the block's variants).
    variant_p: float = 0.1
    grad_clip: float = 1.0
    save_every: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch_size < 1 or self.save_every < 1:
            raise SnapbenchError("steps must be >= 0, batch size and save interval >= 1")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise SnapbenchError(f"condition dropout must be in [0, 1), got {self.cond_dropout}")
        if self.learning_rate <= 0:
            raise SnapbenchError(f"learning rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.variant_p < 1.0:
            raise SnapbenchError(f"--variant-p must be in [0, 1), got {self.variant_p}")
        if self.variant_moves and not self.robust:
            raise SnapbenchError("--variant-moves samples variants during robust training; add --robust")
        not_swaps = [m for m in self.variant_moves if m not in SWAPS]
        if not_swaps:
            raise SnapbenchError(f"--variant-moves: {not_swaps[0]!r} is not a swap; give some of {', '.join(SWAPS)}")

    @property
    def skip_probabilities(self) -> SkipProbabilities:
        return self.skip if self.robust else NO_SKIP

    def to_dict(self) -> JSONObject:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, JSON]) -> TrainConfig:
        skip, moves = d.get("skip", {}), d.get("variant_moves", [])
        if not isinstance(skip, dict) or not isinstance(moves, list):
            raise SnapbenchError(f"a training config with skip={skip!r}, variant_moves={moves!r}: not one snapbench "
                                 "wrote; remove the folder to start over")
        # variant_moves: a JSON list in train_state.json
        return dataclass_from_json(cls, d, skip=dataclass_from_json(SkipProbabilities, skip),
                                   variant_moves=tuple(moves))


def sample_variants(model: nn.Module, config: TrainConfig) -> list[str]:
    """Give every block that a swap in `config.variant_moves` applies to (moves.Swap.blocked) that variant
    as a sampled alternative, and set the chance of running one; returns the alternatives' keys. A model
    that already holds them (a resumed run) keeps its trained ones."""
    if not config.variant_moves:
        return []
    if not isinstance(model, ElasticUNet):
        raise SnapbenchError(f"--variant-moves: {model.spec.name} is not a UNet; sampled variants are built for "
                             "SD-class UNets so far")
    slots = [s for s in model.spec.layout if s.kind in ("RB", "CA")]
    check_moves_apply(config.variant_moves, model.spec, slots, flag="--variant-moves")
    keys = [model.add_alternative(slot.file_id, name, SWAPS[name].apply(model.spec.choice(slot), model.spec).variant)
            for slot in slots for name in config.variant_moves if SWAPS[name].blocked(model.spec, slot) is None]
    model.variant_probability = config.variant_p
    return keys


def diffusion_loss(trainable: nn.Module, noise_scheduler: DDPMScheduler, x0: torch.Tensor, cond: torch.Tensor,
                   uncond: torch.Tensor | None, config: TrainConfig, g: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=g)
    if uncond is not None and config.cond_dropout > 0:
        drop = torch.rand(b, generator=g) < config.cond_dropout
        cond = cond.clone()
        cond[drop] = uncond.to(cond.dtype)
    x0, noise, t, cond = x0.to(device), noise.to(device), t.to(device), cond.to(device)
    z_t = noise_scheduler.add_noise(x0, noise, t)
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, t)
    else:
        target = noise
    pred = trainable(z_t, t, cond, generator=g)
    return torch.nn.functional.mse_loss(pred.float(), target.float())


def train(model: str | Path, out: str | Path, config: TrainConfig, *, data: str | Path | None = None,
          weights: str | Path | None = None, progress: bool = True,
          say: Callable[[str], None] = lambda s: None) -> TrainResult:
    """Train `model` (or resume the run in `out`) to `config.steps` steps; checkpoints land in `out`.
    One run at a time per `out` (the main process holds its lock; a second run is refused)."""
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate's other ranks: rank 0 holds the lock
        return _train(model, Path(out), config, data=data, weights=weights, progress=progress, say=say)
    with claimed_run_folder(out, "train") as folder:
        return _train(model, folder, config, data=data, weights=weights, progress=progress, say=say)


def _train(model: str | Path, out: Path, config: TrainConfig, *, data: str | Path | None,
           weights: str | Path | None, progress: bool, say: Callable[[str], None]) -> TrainResult:
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from diffusers import DDPMScheduler

    state, bundle = _start(model, out, config, weights)
    start = RunStart.from_state(state)
    if config.prediction_type is not None:
        bundle.noise_schedule["prediction_type"] = config.prediction_type
    train_data: TrainingData = training_data(bundle.spec, data)
    skip = config.skip_probabilities
    bundle.model.set_skip_probabilities(ca=skip.ca, rb=skip.rb)
    sample_variants(bundle.model, config)  # before the optimizer sees the parameters (and on resume: same order)

    # find_unused_parameters: a skipped block gets no gradient on that rank in that step.
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    trainable = Trainable(bundle.model, bundle.encoder)
    opt, lr_sched = optimizer_with_warmup(trainable, config, out, start.step)
    trainable, opt = accelerator.prepare(trainable, opt)
    noise_scheduler = DDPMScheduler.from_config(bundle.noise_schedule)

    def loss_of(x0: torch.Tensor, cond: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return diffusion_loss(trainable, noise_scheduler, x0, cond, train_data.uncond, config, g, accelerator.device)

    def save(unwrapped: nn.Module, done: int, losses: list[tuple[int, float]], seconds: float) -> None:
        _save(bundle, unwrapped, opt, out, config, str(model), done, losses, seconds)

    return run_steps(accelerator, trainable, opt, lr_sched, config, out, start=start, train_data=train_data,
                     loss_of=loss_of, save=save, log=StepLog("train", every=50, progress=progress))


def _start(model: str | Path, out: Path, config: TrainConfig, weights: str | Path | None
           ) -> tuple[SavedRun, ModelBundle]:
    state_path = out / STATE_FILE
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except json.JSONDecodeError as e:
            raise SnapbenchError(f"{state_path}: line {e.lineno}: not valid JSON ({e.msg}); "
                                 "remove the folder to start over") from None
        if state.get("format") != STATE_FORMAT:
            raise SnapbenchError(f"{state_path}: not a snapbench training state")
        if state.get("model") != str(model):
            raise SnapbenchError(f"{out} holds a run of --model {state.get('model')}, not {model}; "
                                 "use another --out to start a new run")
        check_resumable(TrainConfig.from_dict(state["config"]), config, out, TRAIN_FLAGS)
        return state, load_bundle(out)
    if out.exists() and any(p.name != FOLDER_LOCK for p in out.iterdir()):
        raise SnapbenchError(f"{out}: exists and is not a snapbench training folder (no {STATE_FILE}); "
                             "pick another --out")
    return {}, load_bundle(model, weights=weights, seed=config.seed)


def _save(bundle: ModelBundle, trainable: Trainable, opt: torch.optim.Optimizer, out: Path, config: TrainConfig,
          model: str, step: int, losses: list[tuple[int, float]], seconds: float) -> None:
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    state = {"format": STATE_FORMAT, "model": model, "step": step, "config": config.to_dict(),
             "losses": losses, "seconds": round(seconds, 1)}
    save_bundle(ModelBundle(trainable.unet, trainable.encoder, bundle.noise_schedule, bundle.ref), out,
                extra_files={OPTIMIZER_FILE: buf.getvalue(),
                             STATE_FILE: (json.dumps(state, indent=1) + "\n").encode()})


def fine_tune(bundle: ModelBundle, model: ElasticUNet, config: TrainConfig, *, start_step: int, steps: int,
              data: str | Path | None = None) -> float | None:
    """`steps` robust-training steps on `model` in this process (evolution's between-iteration training).

    A fresh AdamW each call, with the training's warmup: between evolution iterations the architecture
    changes, and moments from removed blocks mean nothing to the new one (a fresh AdamW's first steps move
    every weight by about the full learning rate; the warmup keeps them from undoing what was learnt).
    Step numbers continue from `start_step` so every step draws its own batch and skips."""
    from diffusers import DDPMScheduler

    if steps <= 0:
        return None
    train_data = training_data(model.spec, data)
    skip = config.skip_probabilities
    model.set_skip_probabilities(ca=skip.ca, rb=skip.rb)
    sample_variants(model, config)
    trainable = Trainable(model, bundle.encoder)
    opt, lr_sched = optimizer_with_warmup(trainable, config, None, 0)
    noise_scheduler = DDPMScheduler.from_config(bundle.noise_schedule)
    device = next(model.parameters()).device
    trainable.train()
    total = 0.0
    for step in range(start_step, start_step + steps):
        g = step_generator(config.seed, step)
        x0, cond = train_data.batch(config.batch_size, g)
        loss = diffusion_loss(trainable, noise_scheduler, x0, cond, train_data.uncond, config, g, device)
        loss.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable.parameters(), config.grad_clip)
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)
        total += float(loss.detach())
    trainable.eval()
    return total / steps
