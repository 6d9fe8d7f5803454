"""Step distillation (SnapFusion 4.2): a student that does in one DDIM step what the teacher does in
several, distilled directly (not progressively) from an N-step teacher to an M-step student, N / M an
integer >= 2.

One training step: x0 and its condition from the data, a student step index j, t = the student's j-th
timestep and z_t = alpha_t x0 + sigma_t eps. The teacher runs its N / M DDIM steps from z_t (with CFG at
scale w) and lands on z_t'; the student's target is the x0 whose single DDIM step from z_t lands on the
same z_t' (ddim_math.x0_reaching). The loss, in x-space with truncated-SNR weight max(alpha_t^2 /
sigma_t^2, 1):

    L = L_dstl + gamma * L_ori
    L_dstl = weight * || x_student(z_t; w) - x_teacher(z_t; w) ||^2
    L_ori  = weight * || x_student(z_t; cond) - x0 ||^2        (the plain denoising loss, in x-space)

Where the schedule clips x0 (the toy; SD does not), x_student(z_t; w) in L_dstl is the clipped x0 the
sampler steps with (`as_sampled`), so the student is judged by where its step lands.

- vanilla (`cfg_aware=False`): w = 1, the teacher's and student's conditional predictions; CFG is applied
  only when sampling from the student.
- CFG-aware: w ~ U[w_min, w_max] per sample (paper: U[2, 14]) and CFG applied to both teacher and student
  (unconditional + conditional pass each) before the loss, so the student learns the guided trajectory.
  `cfg_probability` < 1 mixes in vanilla batches (the paper's trade-off knob between FID and CLIP).

The teacher is any elastic backbone training holds (an SD UNet or a DiT: the loop only calls the model
and saves it through its backbone), so a DiT distils exactly as a UNet does. The student starts from the
teacher's weights or from another model (another arch spec, e.g. the
evolved efficient UNet from an SD-v1.5 teacher); latent shape, context width and noise schedule must
match. Optional first stage, the paper's: fine-tune the teacher to v-prediction (`v_finetune_steps`), saved
beside the output as `<out>-v-teacher/` and reused on resume. The output folder is a complete checkpoint (checkpoints.py)
plus `sampling.json` (steps, scheduler, prediction type the student was made for), `distill_state.json`
and `optimizer.pt`; the same call again resumes. `accelerate launch -m snapbench.distill` for many GPUs.
"""

from __future__ import annotations

import copy
import io
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, NotRequired, TypedDict

import torch
from torch import nn

from snapbench.distillation.ddim_math import NoiseLevels, ddim_timesteps, prev_timestep
from snapbench.dit.family import context_key
from snapbench.errors import SnapbenchError
from snapbench.evolution.robust_training import NO_SKIP, TrainConfig, fine_tune
from snapbench.json_types import JSON, JSONObject, dataclass_from_json
from snapbench.locks import FOLDER_LOCK, claimed_run_folder
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
)

STATE_FILE = "distill_state.json"
SAMPLING_FILE = "sampling.json"
STATE_FORMAT = "snapbench.distill/1"
SAMPLING_FORMAT = "snapbench.sampling/1"
# `distill`'s options for the DistillConfig fields a resumed run must keep (the others no option sets).
DISTILL_FLAGS = {"teacher_steps": Flag("--teacher-steps"), "student_steps": Flag("--student-steps"),
                 "cfg_aware": Flag("--cfg-aware", off="--vanilla"), "guidance_min": Flag("--guidance-min"),
                 "guidance_max": Flag("--guidance-max"), "cfg_probability": Flag("--cfg-probability"),
                 "gamma": Flag("--gamma"), "batch_size": Flag("--batch-size"), "learning_rate": Flag("--lr"),
                 "prediction_type": Flag("--prediction-type"), "v_finetune_steps": Flag("--v-finetune-steps"),
                 "seed": Flag("--seed")}

PredictionType = Literal["epsilon", "v_prediction"]
PREDICTION_TYPES: dict[str | None, PredictionType | None] = {None: None, "epsilon": "epsilon",
                                                             "v_prediction": "v_prediction"}


def parse_prediction_type(text: str | None) -> PredictionType | None:
    """--prediction-type: epsilon, v_prediction, or None (the teacher's); anything else is one line."""
    if text not in PREDICTION_TYPES:
        raise SnapbenchError(f"--prediction-type {text!r}: choose epsilon or v_prediction")
    return PREDICTION_TYPES[text]


@dataclass(frozen=True)
class DistillConfig:
    teacher_steps: int = 32
    student_steps: int = 8
    cfg_aware: bool = True
    guidance_min: float = 2.0  # the paper's U[2, 14]
    guidance_max: float = 14.0
    cfg_probability: float = 1.0  # share of batches distilled CFG-aware (the rest vanilla)
    gamma: float = 1.0  # weight of L_ori; the notes give none, 1 weighs both terms alike
    steps: int = 500  # optimizer steps
    batch_size: int = 32
    learning_rate: float = 1e-4  # the toy's; SD wants ~1e-5
    weight_decay: float = 0.0
    warmup_steps: int = 20
    cond_dropout: float = 0.1  # the unconditional branch keeps learning too (CFG needs it)
    grad_clip: float = 1.0
    prediction_type: PredictionType | None = None  # the student's; None: the teacher's
    v_finetune_steps: int = 0  # plain-loss steps fine-tuning the teacher to v-prediction first
    v_finetune_learning_rate: float = 1e-4
    save_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        n, m = self.teacher_steps, self.student_steps
        if m < 1 or n < 1:
            raise SnapbenchError(f"--teacher-steps {n} and --student-steps {m} must be >= 1")
        if m >= n:
            raise SnapbenchError(f"--student-steps {m} must be below --teacher-steps {n} (N/2 or fewer)")
        if n % m:
            raise SnapbenchError(f"--teacher-steps {n} is not a multiple of --student-steps {m}: direct distillation "
                                 "maps each student step onto a whole number of teacher steps (e.g. 32 -> 8 or 16)")
        if self.guidance_min > self.guidance_max:
            raise SnapbenchError(f"guidance bounds reversed: w_min {self.guidance_min} > w_max {self.guidance_max}; "
                                 "give --guidance-min <= --guidance-max")
        if self.guidance_min < 0:
            raise SnapbenchError(f"--guidance-min {self.guidance_min} must be >= 0")
        if not 0.0 <= self.cfg_probability <= 1.0:
            raise SnapbenchError(f"--cfg-probability {self.cfg_probability} must be in [0, 1]")
        if self.gamma < 0:
            raise SnapbenchError(f"--gamma {self.gamma} must be >= 0")
        if self.steps < 0 or self.batch_size < 1 or self.save_every < 1 or self.v_finetune_steps < 0:
            raise SnapbenchError("steps and fine-tune steps must be >= 0, batch size and save interval >= 1")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise SnapbenchError(f"condition dropout must be in [0, 1), got {self.cond_dropout}")
        if self.learning_rate <= 0 or self.v_finetune_learning_rate <= 0:
            raise SnapbenchError("learning rates must be > 0")
        if self.prediction_type not in (None, "epsilon", "v_prediction"):
            raise SnapbenchError(f"prediction type {self.prediction_type!r}: choose epsilon or v_prediction")

    @property
    def ratio(self) -> int:
        return self.teacher_steps // self.student_steps

    def to_dict(self) -> JSONObject:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, JSON]) -> DistillConfig:
        return dataclass_from_json(cls, d)


# A distillation run reports what a training run does (out, step, loss, seconds, processes), and resumes
# under the same rule: only the step count and the save interval may change.
DistillResult = TrainResult

@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    distill: torch.Tensor
    original: torch.Tensor


# -- the loss ---------------------------------------------------------------------------------------
def guided(model: nn.Module, z_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
           w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(CFG output uncond + w (cond - uncond), the conditional output). One call on [uncond; cond] when any
    w != 1, as sampling does; w is [B]."""
    if uncond is None or bool((w == 1).all()):
        out = model(z_t, t, cond)
        return out, out
    b = z_t.shape[0]
    both = model(torch.cat([z_t, z_t]), torch.cat([t, t]), torch.cat([uncond.expand(b, *uncond.shape[1:]), cond]))
    out_u, out_c = both.chunk(2)
    return out_u + w.view(-1, 1, 1, 1) * (out_c - out_u), out_c


@torch.no_grad()
def teacher_target(teacher: nn.Module, levels: NoiseLevels, noise_schedule: Mapping[str, JSON], z_t: torch.Tensor,
                   t: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None, w: torch.Tensor,
                   teacher_steps: int, ratio: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the teacher's `ratio` DDIM steps (CFG at w) from z_t; return (z where it lands, that timestep)."""
    z, tt = z_t, t
    for _ in range(ratio):
        out, _cond = guided(teacher, z, tt, cond, uncond, w)
        t_next = torch.tensor([prev_timestep(noise_schedule, int(x), teacher_steps) for x in tt], device=tt.device)
        z = levels.ddim_step(out, z, tt, t_next)
        tt = t_next
    return z, tt


def as_sampled(x0: torch.Tensor, clip: float | None) -> torch.Tensor:
    """The x0 a sampling step will use: clipped where the schedule clips (ddim_step), with the raw x0's
    gradient passed straight through. The student's step lands where the teacher's steps land iff its
    clipped x0 equals the target (a convex mix of the teacher's clipped x0s), so an overshoot past a
    pixel the teacher also clipped costs nothing; comparing the raw x0 instead made the CFG-aware student
    spend itself pulling strongly guided, harmlessly clipped pixels back into range (guidance weakened)."""
    if clip is None:
        return x0
    return x0 + (x0.clamp(-clip, clip) - x0).detach()


def distillation_loss(student: nn.Module, teacher: nn.Module, student_levels: NoiseLevels,
                      teacher_levels: NoiseLevels, noise_schedule: Mapping[str, JSON], x0: torch.Tensor,
                      cond: torch.Tensor, uncond: torch.Tensor | None, config: DistillConfig, g: torch.Generator,
                      device: torch.device, *, teacher_cond: torch.Tensor | None = None,
                      teacher_uncond: torch.Tensor | None = None) -> LossParts:
    """L = L_dstl + gamma L_ori for one batch; every random draw from `g` (so a resumed run repeats it).

    `cond` / `uncond` are what the student's forward takes (token ids for the toy, contexts otherwise);
    `teacher_cond` / `teacher_uncond` the teacher's when they differ (a toy student with its own encoder
    still reads the same tokens, so for the toy they are the same)."""
    b = x0.shape[0]
    student_ts = ddim_timesteps(noise_schedule, config.student_steps)
    j = torch.randint(0, config.student_steps, (b,), generator=g)
    t = torch.tensor([student_ts[i] for i in j.tolist()])
    noise = torch.randn(x0.shape, generator=g)
    if uncond is not None and config.cond_dropout > 0:
        drop = torch.rand(b, generator=g) < config.cond_dropout
        cond = cond.clone()
        cond[drop] = uncond.to(cond.dtype)
        if teacher_cond is not None and teacher_uncond is not None:
            teacher_cond = teacher_cond.clone()
            teacher_cond[drop] = teacher_uncond.to(teacher_cond.dtype)
    use_cfg = config.cfg_aware and uncond is not None and float(torch.rand((), generator=g)) < config.cfg_probability
    if use_cfg:
        w = config.guidance_min + (config.guidance_max - config.guidance_min) * torch.rand(b, generator=g)
    else:
        w = torch.ones(b)
    x0, noise, t, w = x0.to(device), noise.to(device), t.to(device), w.to(device)
    cond = cond.to(device)
    a, s = (v.to(device) for v in student_levels.alpha_sigma(t))
    z_t = a * x0 + s * noise

    t_cond = cond if teacher_cond is None else teacher_cond.to(device)
    t_uncond = uncond if teacher_uncond is None else teacher_uncond
    u_batch = None if uncond is None else uncond.to(device)[None]
    tu_batch = None if t_uncond is None else t_uncond.to(device)[None]
    z_prev, t_prev = teacher_target(teacher, teacher_levels, noise_schedule, z_t, t, t_cond, tu_batch, w,
                                    config.teacher_steps, config.ratio)
    x_target = teacher_levels.x0_reaching(z_t, t, z_prev, t_prev)

    out_w, out_c = guided(student, z_t, t, cond, u_batch, w)
    x_w, _ = student_levels.to_x0_eps(out_w.float(), z_t, t)
    x_w = as_sampled(x_w, student_levels.clip_sample)
    x_c, _ = student_levels.to_x0_eps(out_c.float(), z_t, t)
    weight = student_levels.snr_weight(t).to(device)
    per_distill = (x_w - x_target.float()).square().flatten(1).mean(1)
    per_original = (x_c - x0).square().flatten(1).mean(1)
    l_dstl = (weight * per_distill).mean()
    l_ori = (weight * per_original).mean()
    return LossParts(l_dstl + config.gamma * l_ori, l_dstl.detach(), l_ori.detach())


# -- the run ----------------------------------------------------------------------------------------
class DistillState(SavedRun, total=False):
    """distill_state.json: the run's inputs and where it stopped (a run just started has only `teacher`)."""

    format: str
    model: str
    teacher: str  # the teacher's folder (after any v-prediction fine-tune)
    student: str  # what the student started from ("" for the teacher's weights)
    config: JSONObject  # DistillConfig.to_dict()


class SamplingSettings(TypedDict):
    """sampling.json: what a distilled student was made for, read by `sample` and `report`."""

    format: str
    steps: int
    scheduler: str
    timestep_spacing: str
    prediction_type: JSON  # the noise schedule's
    guidance: list[float] | None  # [w_min, w_max] of a CFG-aware student
    cfg_aware: bool
    teacher: str
    teacher_steps: int
    decoder: NotRequired[str]  # recorded by `distill --decoder`


@dataclass
class _Models:
    teacher: ModelBundle
    student: ModelBundle
    state: DistillState


def distill(model: str | Path, out: str | Path, config: DistillConfig, *, student: str | Path | None = None,
            data: str | Path | None = None, weights: str | Path | None = None, progress: bool = True,
            say: Callable[[str], None] = lambda s: None) -> DistillResult:
    """Distill the teacher `model` (a trained folder) into a `config.student_steps`-step student in `out`.

    `student`: another model to start the student from (an arch spec, preset or trained folder); default
    the teacher's own weights. Running it again on the same `out` resumes; one run at a time per `out`
    (the main process holds its lock, as in training)."""
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate's other ranks: rank 0 holds the lock
        return _distill(model, Path(out), config, student, data, weights, progress, say)
    with claimed_run_folder(out, "distill") as folder:
        return _distill(model, folder, config, student, data, weights, progress, say)


def _distill(model: str | Path, out: Path, config: DistillConfig, student: str | Path | None,
             data: str | Path | None, weights: str | Path | None, progress: bool,
             say: Callable[[str], None]) -> DistillResult:
    from accelerate import Accelerator, DistributedDataParallelKwargs

    models = _start(model, out, config, student, weights, data, say)
    teacher_b, student_b, state = models.teacher, models.student, models.state
    start = RunStart.from_state(state)
    train_data: TrainingData = training_data(student_b.spec, data)

    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    teacher = Trainable(teacher_b.model, teacher_b.encoder).to(accelerator.device).eval().requires_grad_(False)
    trainable = Trainable(student_b.model, student_b.encoder)
    student_b.model.set_skip_probabilities(ca=0.0, rb=0.0)
    opt, lr_sched = optimizer_with_warmup(trainable, config, out, start.step)
    trainable, opt = accelerator.prepare(trainable, opt)
    teacher_levels = NoiseLevels.from_schedule(teacher_b.noise_schedule)
    student_levels = NoiseLevels.from_schedule(student_b.noise_schedule)

    def loss_of(x0: torch.Tensor, cond: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return distillation_loss(trainable, teacher, student_levels, teacher_levels, teacher_b.noise_schedule,
                                 x0, cond, train_data.uncond, config, g, accelerator.device).total

    def save(unwrapped: nn.Module, done: int, losses: list[tuple[int, float]], seconds: float) -> None:
        _save(student_b, unwrapped, opt, out, config, str(model), teacher_b.ref, str(student or ""), done, losses,
              seconds)

    return run_steps(accelerator, trainable, opt, lr_sched, config, out, start=start, train_data=train_data,
                     loss_of=loss_of, save=save, log=StepLog("distill", every=25, progress=progress))


def teacher_of(out: str | Path) -> str:
    """The teacher a distilled folder was made from (after any v-prediction fine-tune)."""
    state = _read_state(Path(out) / STATE_FILE)
    return str(state["teacher"])


def _read_state(path: Path) -> DistillState:
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SnapbenchError(f"{path}: line {e.lineno}: not valid JSON ({e.msg}); remove the folder to start over"
                             ) from None
    except FileNotFoundError:
        raise SnapbenchError(f"{path.parent}: not a distilled model folder (no {path.name})") from None
    if state.get("format") != STATE_FORMAT:
        raise SnapbenchError(f"{path}: not a snapbench distillation state")
    return state


def _start(model: str | Path, out: Path, config: DistillConfig, student_ref: str | Path | None,
           weights: str | Path | None, data: str | Path | None, say: Callable[[str], None]) -> _Models:
    state_path = out / STATE_FILE
    if state_path.is_file():
        state = _read_state(state_path)
        if state.get("model") != str(model):
            raise SnapbenchError(f"{out} holds a distillation of --model {state.get('model')}, not {model}; "
                                 "use another --out to start a new run")
        check_resumable(DistillConfig.from_dict(state["config"]), config, out, DISTILL_FLAGS)
        teacher = load_bundle(state["teacher"])
        return _Models(teacher, load_bundle(out), state)
    if out.exists() and any(p.name != FOLDER_LOCK for p in out.iterdir()):  # our own lock is not content
        raise SnapbenchError(f"{out}: exists and is not a snapbench distillation folder (no {STATE_FILE}); "
                             "pick another --out")
    teacher = _load_teacher(model, weights)
    teacher = _maybe_v_finetune(teacher, out, config, data, say)
    student = _initial_student(teacher, student_ref, config)
    return _Models(teacher, student, {"teacher": teacher.ref})


def _load_teacher(model: str | Path, weights: str | Path | None) -> ModelBundle:
    from snapbench.backbones import resolve_model

    source = resolve_model(model, weights=weights)
    if source.weights_dir is None:
        raise SnapbenchError(f"{model}: the teacher has no trained weights (a preset or spec gets random ones); "
                             "give a trained folder (snapbench train --out ...) or --weights")
    return load_bundle(model, weights=weights)


def _maybe_v_finetune(teacher: ModelBundle, out: Path, config: DistillConfig, data: str | Path | None,
                      say: Callable[[str], None]) -> ModelBundle:
    """The paper's first stage: the teacher fine-tuned to v-prediction with the plain loss."""
    if config.v_finetune_steps == 0:
        return teacher
    if teacher.noise_schedule.get("prediction_type") == "v_prediction":
        raise SnapbenchError(f"{teacher.ref}: the teacher already predicts v; drop --v-finetune-steps")
    folder = v_teacher_folder(out)
    if (folder / "arch.json").is_file():
        return load_bundle(folder)
    say(f"fine-tuning the teacher to v-prediction for {config.v_finetune_steps} steps")
    tuned = ModelBundle(copy.deepcopy(teacher.model), copy.deepcopy(teacher.encoder),
                        {**teacher.noise_schedule, "prediction_type": "v_prediction"}, teacher.ref)
    fine_tune(tuned, tuned.model, TrainConfig(batch_size=config.batch_size, learning_rate=config.v_finetune_learning_rate,
                                              robust=False, skip=NO_SKIP, cond_dropout=config.cond_dropout,
                                              seed=config.seed + 7919),
              start_step=0, steps=config.v_finetune_steps, data=data)
    save_bundle(tuned, folder)
    return load_bundle(folder)


def _initial_student(teacher: ModelBundle, student_ref: str | Path | None, config: DistillConfig) -> ModelBundle:
    from snapbench.backbones import resolve_model

    teacher_kind = teacher.noise_schedule.get("prediction_type", "epsilon")
    want = config.prediction_type or teacher_kind
    if student_ref is None:
        if want != teacher_kind:
            raise SnapbenchError(f"the student starts from the teacher's {teacher_kind} weights and cannot predict "
                                 f"{want} without training to it: add --v-finetune-steps N (fine-tunes the teacher "
                                 "to v-prediction first) or drop --prediction-type")
        student = ModelBundle(copy.deepcopy(teacher.model), copy.deepcopy(teacher.encoder),
                              dict(teacher.noise_schedule), teacher.ref)
        return student
    source = resolve_model(student_ref)
    student = load_bundle(student_ref, seed=config.seed)
    _check_compatible(teacher, student)
    if source.weights_dir is None and dict(source.spec.base_config) == dict(teacher.spec.base_config):
        # another block choice over the teacher's base UNet (an evolved candidate's spec): start from the
        # teacher's weights, removed blocks dropped and copies taken from their originals, as evolution does
        from snapbench.training.checkpoints import derive

        student.model = derive(copy.deepcopy(teacher.model), source.spec)
    own = student.noise_schedule.get("prediction_type", "epsilon")
    if source.weights_dir is not None and own != want:
        raise SnapbenchError(f"{student_ref}: the student's trained weights predict {own}, the run asks {want}; "
                             f"fine-tune it to {want} first (snapbench train --prediction-type {want}) or drop "
                             "--prediction-type")
    student.noise_schedule = {**teacher.noise_schedule, "prediction_type": want}
    if student.encoder is not None and teacher.encoder is not None and source.weights_dir is None:
        # an untrained toy student reads prompts through the teacher's trained encoder to start with
        student.encoder.load_state_dict(teacher.encoder.state_dict())
    return student


def _check_compatible(teacher: ModelBundle, student: ModelBundle) -> None:
    tc, sc = teacher.model.config, student.model.config
    kinds = [b.spec.base_config.get("_class_name") for b in (teacher, student)]
    if None not in kinds and kinds[0] != kinds[1]:  # a spec file may leave its class unnamed
        raise SnapbenchError(f"teacher and student are different backbones ({kinds[0]} vs {kinds[1]}); "
                             "distil into a student of the teacher's kind")
    for key in ("in_channels", "out_channels", "sample_size", context_key(kinds[0] or kinds[1])):
        if tc.get(key) != sc.get(key):
            raise SnapbenchError(f"teacher and student differ in {key} ({tc.get(key)} vs {sc.get(key)}): they must "
                                 "share the latent shape and text context to distill one into the other")
    if (teacher.encoder is None) != (student.encoder is None):
        raise SnapbenchError("teacher and student must both be toy-digits models or both not")
    keys = set(teacher.noise_schedule) | set(student.noise_schedule)
    differ = [k for k in sorted(keys - {"prediction_type"})
              if teacher.noise_schedule.get(k) != student.noise_schedule.get(k)
              and k in teacher.noise_schedule and k in student.noise_schedule]
    if differ:
        raise SnapbenchError(f"teacher and student have different noise schedules ({differ[0]}: "
                             f"{teacher.noise_schedule.get(differ[0])} vs {student.noise_schedule.get(differ[0])})")


def sampling_settings(config: DistillConfig, noise_schedule: Mapping[str, JSON], teacher: str) -> SamplingSettings:
    """What the student was made for, written to sampling.json and read by `sample` and `report`."""
    return {"format": SAMPLING_FORMAT, "steps": config.student_steps, "scheduler": "DDIMScheduler",
            "timestep_spacing": "trailing", "prediction_type": noise_schedule.get("prediction_type", "epsilon"),
            "guidance": None if not config.cfg_aware else [config.guidance_min, config.guidance_max],
            "cfg_aware": config.cfg_aware, "teacher": teacher, "teacher_steps": config.teacher_steps}


def read_sampling(folder: str | Path) -> SamplingSettings | None:
    """A model folder's sampling.json, or None when it has none (it was not distilled)."""
    p = Path(folder) / SAMPLING_FILE
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise SnapbenchError(f"{p}: line {e.lineno}: not valid JSON ({e.msg})") from None
    if data.get("format") != SAMPLING_FORMAT or not isinstance(data.get("steps"), int):
        raise SnapbenchError(f"{p}: not a snapbench sampling settings file")
    return data


def _save(bundle: ModelBundle, trainable: Trainable, opt: torch.optim.Optimizer, out: Path, config: DistillConfig,
          model: str, teacher: str, student_ref: str, step: int, losses: list[tuple[int, float]],
          seconds: float) -> None:
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    state = {"format": STATE_FORMAT, "model": model, "teacher": teacher, "student": student_ref, "step": step,
             "config": config.to_dict(), "losses": losses, "seconds": round(seconds, 1)}
    settings = sampling_settings(config, bundle.noise_schedule, teacher)
    before = read_sampling(out) if (out / SAMPLING_FILE).is_file() else None
    if before and before.get("decoder"):  # recorded by `distill --decoder`; kept across checkpoints
        settings["decoder"] = before["decoder"]
    extra = {OPTIMIZER_FILE: buf.getvalue(), STATE_FILE: (json.dumps(state, indent=1) + "\n").encode(),
             SAMPLING_FILE: (json.dumps(settings, indent=1) + "\n").encode()}
    save_bundle(ModelBundle(trainable.unet, trainable.encoder, bundle.noise_schedule, bundle.ref), out,
                extra_files=extra)


def v_teacher_folder(out: Path) -> Path:
    """Where the v-prediction fine-tune of the teacher is kept: beside `out`, which is rewritten whole at
    every checkpoint."""
    return out.with_name(out.name + "-v-teacher")
