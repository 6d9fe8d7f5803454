"""The efficient VAE decoder (SnapFusion 4.1): uniform channel pruning of a diffusers AutoencoderKL's
decoder, initialised from the teacher's weights, then distilled with an MSE loss between its image and
the teacher decoder's image from the same latents. Only the decoder trains.

Pruning by a fraction f: every block_out_channels entry c becomes c' = c (1 - f) rounded down to a
multiple of the GroupNorm group count (kept as it is, so channels per group shrink: the SnapFusion
decoder's 128/256/512/512 -> 64/128/256/256 with 32 groups at f = 0.5). Depth, attention and the latent
and image channels are unchanged.

Channel-selection rule (stated, data-free): in every tensor dimension that shrinks from c to c', keep
in each GroupNorm group of c its first c' / groups channels (when c and c' both divide by the group
count; else the first c' channels). The rule depends only on (c, c'), so every tensor of one width keeps
the same channel indices: the residual additions, skip projections and attention inside the decoder
stay consistent, and each pruned GroupNorm group normalises a subset of one teacher group. Every weight
of the pruned model is a slice of the teacher's; nothing is random. (A magnitude rule, e.g. the L1 norm
of filters, would need one shared choice per residual stream; not done.)

The pruned model is saved as a whole AutoencoderKL (save_pretrained) so every diffusers tool and
`snapbench convert` reads it; its encoder is the same slice of the teacher's encoder and is NOT trained:
encode images with the teacher's VAE.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import torch

from snapbench.errors import SnapbenchError
from snapbench.json_types import JSON, JSONObject, json_int
from snapbench.resuming import Flag, check_same
from snapbench.user_files import load_torch_state

if TYPE_CHECKING:
    from diffusers import AutoencoderKL

DISTILL_FILE = "decoder_distill.json"
STATE_FILE = "decoder_state.pt"
FORMAT = "snapbench.decoder-distill/1"
# What a resumed run must keep, and the `distill-decoder` option that sets each.
RESUME_FLAGS = {"prune": Flag("--prune"), "batch_size": Flag("--batch-size"), "learning_rate": Flag("--lr"),
                "seed": Flag("--seed")}


@dataclass(frozen=True)
class DecoderDistillConfig:
    prune: float = 0.5  # the paper's
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 1e-3  # the toy's; SD's decoder wants ~1e-4
    save_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.prune < 1.0:
            raise SnapbenchError(f"--prune {self.prune}: the pruning fraction must be in (0, 1), e.g. 0.5")
        if self.steps < 0 or self.batch_size < 1 or self.save_every < 1:
            raise SnapbenchError("steps must be >= 0, batch size and save interval >= 1")
        if self.learning_rate <= 0:
            raise SnapbenchError(f"learning rate must be > 0, got {self.learning_rate}")


# -- pruning ----------------------------------------------------------------------------------------
def pruned_channels(channels: int, prune: float, groups: int) -> int:
    """c (1 - prune), down to a multiple of `groups` (at least one group)."""
    keep = int(channels * (1.0 - prune) + 1e-9)
    return max(groups, keep // groups * groups)


def pruned_config(config: Mapping[str, JSON], prune: float) -> JSONObject:
    """An AutoencoderKL config with every block_out_channels entry pruned by `prune`."""
    groups = json_int(config, "norm_num_groups", 32)
    full = config["block_out_channels"]
    given = list(full) if isinstance(full, (list, tuple)) else []
    channels = [c for c in given if isinstance(c, int)]
    if not channels or len(channels) != len(given):
        raise SnapbenchError(f"the VAE's block_out_channels {full!r}: expected a list of whole numbers")
    pruned: list[int] = [pruned_channels(c, prune, groups) for c in channels]
    if any(c >= o for c, o in zip(pruned, channels)):
        raise SnapbenchError(f"--prune {prune}: the VAE's {channels} channels with "
                             f"{groups} GroupNorm groups cannot shrink by that fraction; use a larger fraction")
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    cfg["block_out_channels"] = [c for c in pruned]  # a list of JSON, not of int (invariance)
    return cfg


def kept_indices(full: int, kept: int, groups: int) -> torch.Tensor:
    """The channel-selection rule: the first kept/groups channels of each of `groups` groups of `full`."""
    if full % groups == 0 and kept % groups == 0:
        per, keep = full // groups, kept // groups
        return torch.cat([torch.arange(g * per, g * per + keep) for g in range(groups)])
    return torch.arange(kept)


def inherit(teacher: torch.nn.Module, student: torch.nn.Module, groups: int) -> None:
    """Fill every parameter and buffer of `student` with the rule's slice of the teacher's namesake."""
    t_state = teacher.state_dict()
    new = {}
    for name, s in student.state_dict().items():
        t = t_state.get(name)
        if t is None or t.ndim != s.ndim:
            raise SnapbenchError(f"pruned VAE: {name} has no counterpart in the teacher")
        for dim, (a, b) in enumerate(zip(t.shape, s.shape)):
            if a != b:
                t = t.index_select(dim, kept_indices(a, b, groups))
        new[name] = t.clone()
    student.load_state_dict(new)


def prune_vae(vae: AutoencoderKL, prune: float) -> AutoencoderKL:
    """The teacher AutoencoderKL pruned by `prune`, every weight inherited by the channel rule."""
    from diffusers import AutoencoderKL

    cfg = pruned_config(dict(vae.config), prune)
    student = AutoencoderKL(**cfg)
    inherit(vae, student, json_int(cfg, "norm_num_groups", 32))
    return student


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Unscaled latents -> images, through post_quant_conv + decoder (what the pipeline runs)."""
    return vae.decode(latents).sample


def decoder_params(vae: AutoencoderKL) -> int:
    return sum(p.numel() for p in vae.decoder.parameters()) + sum(
        p.numel() for p in (vae.post_quant_conv.parameters() if vae.post_quant_conv is not None else []))


def psnr_db(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> float:
    """PSNR of images in [-1, 1] (range 2), clamped to that range first as a viewer would show them."""
    mse = float((a.clamp(-1, 1) - b.clamp(-1, 1)).double().square().mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


# -- distillation -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DecoderResult:
    out: Path
    step: int
    resumed_from: int
    psnr_untrained_db: float  # pruned, before training, to the teacher decoder's images (held-out latents)
    psnr_distilled_db: float  # pruned and distilled, to the teacher decoder's images
    psnr_teacher_db: float | None  # the teacher's reconstruction to the input images (when images are known)
    params_teacher: int  # decoder + post_quant_conv
    params_student: int
    block_out_channels_teacher: list[int]
    block_out_channels_student: list[int]
    seconds: float
    losses: list[tuple[int, float]]

    def to_dict(self) -> JSONObject:
        d = asdict(self)
        d["out"] = str(self.out)
        for k in ("psnr_untrained_db", "psnr_distilled_db", "psnr_teacher_db"):
            d[k] = None if d[k] is None else round(d[k], 2)
        d["seconds"] = round(self.seconds, 1)
        return d


@dataclass
class LatentSet:
    """Unscaled latents to decode: `train` ones the student learns on, `held_out` ones PSNR is measured on,
    and, when known, the images the held-out latents were encoded from."""

    train: torch.Tensor
    held_out: torch.Tensor
    held_out_images: torch.Tensor | None = None


def distill_decoder(teacher: AutoencoderKL, latents: LatentSet, out: str | Path, config: DecoderDistillConfig, *,
                    teacher_ref: str = "", progress: bool = True,
                    say: Callable[[str], None] = lambda s: None) -> DecoderResult:
    """Prune `teacher` (an AutoencoderKL), distil its decoder into `out`; the same call again resumes."""
    from diffusers import AutoencoderKL

    from snapbench.training.loop import StepBar, step_generator

    out = Path(out)
    teacher = teacher.eval().requires_grad_(False)
    state = _read_state(out, config, teacher_ref)
    if state is not None:
        student = AutoencoderKL.from_pretrained(out, local_files_only=True)
    else:
        if out.exists() and any(out.iterdir()):
            raise SnapbenchError(f"{out}: exists and is not a decoder distillation folder (no {DISTILL_FILE}); "
                                 "pick another --out")
        student = prune_vae(teacher, config.prune)
    untrained = prune_vae(teacher, config.prune).eval()
    with torch.no_grad():
        target_held = decode(teacher, latents.held_out)
        psnr_untrained = psnr_db(decode(untrained, latents.held_out), target_held)
        psnr_teacher = (psnr_db(target_held, latents.held_out_images)
                        if latents.held_out_images is not None else None)
    del untrained

    student.requires_grad_(False)
    train_params = [p for m in (student.decoder, student.post_quant_conv) if m is not None for p in m.parameters()]
    for p in train_params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(train_params, lr=config.learning_rate, weight_decay=0.0)
    start = 0
    losses: list[tuple[int, float]] = []
    seconds0 = 0.0
    if state is not None:
        start, losses, seconds0 = int(state["step"]), [(int(s), float(v)) for s, v in state["losses"]], float(state["seconds"])
        opt.load_state_dict(state["optimizer"])
    t0 = time.time()
    window: list[float] = []
    student.train()
    with StepBar(progress, config.steps, start, "distill-decoder") as advance:
        for step in range(start, config.steps):
            g = step_generator(config.seed, step)
            idx = torch.randint(len(latents.train), (config.batch_size,), generator=g)
            z = latents.train[idx]
            with torch.no_grad():
                target = decode(teacher, z)
            loss = torch.nn.functional.mse_loss(decode(student, z), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            window.append(float(loss.detach()))
            done = step + 1
            if len(window) >= 25 or done == config.steps:
                losses.append((done, round(sum(window) / len(window), 6)))
                window.clear()
            advance(done, losses[-1][1] if losses else None)
            if done % config.save_every == 0 or done == config.steps:
                _save(student, opt, out, config, teacher_ref, done, losses, seconds0 + time.time() - t0)
    student.eval()
    with torch.no_grad():
        psnr_distilled = psnr_db(decode(student, latents.held_out), target_held)
    result = DecoderResult(out, max(start, config.steps), start, psnr_untrained, psnr_distilled, psnr_teacher,
                           decoder_params(teacher), decoder_params(student),
                           list(teacher.config.block_out_channels), list(student.config.block_out_channels),
                           seconds0 + time.time() - t0, losses)
    if (out / DISTILL_FILE).is_file():
        from snapbench.atomic import atomic_write_text

        info = json.loads((out / DISTILL_FILE).read_text())
        info["result"] = {k: v for k, v in result.to_dict().items() if k not in ("out", "losses")}
        atomic_write_text(out / DISTILL_FILE, json.dumps(info, indent=1) + "\n")
    return result


class _Resume(TypedDict):
    """Where a decoder distillation stopped: its step and optimizer (decoder_state.pt), losses and seconds."""

    step: int
    optimizer: dict[str, object]  # torch's optimizer state_dict
    losses: list[list[float]]  # [step, mean loss] pairs, as JSON writes tuples
    seconds: float


def _read_state(out: Path, config: DecoderDistillConfig, teacher_ref: str) -> _Resume | None:
    info_path, state_path = out / DISTILL_FILE, out / STATE_FILE
    if not info_path.is_file():
        return None
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError as e:
        raise SnapbenchError(f"{info_path}: line {e.lineno}: not valid JSON ({e.msg}); remove the folder to "
                             "start over") from None
    if info.get("format") != FORMAT:
        raise SnapbenchError(f"{info_path}: not a snapbench decoder distillation")
    before = info.get("config", {})
    check_same(out, {k: before.get(k) for k in RESUME_FLAGS}, {k: getattr(config, k) for k in RESUME_FLAGS},
               RESUME_FLAGS)
    if info.get("teacher") != teacher_ref:
        raise SnapbenchError(f"{out} holds a distillation of {info.get('teacher')}, not {teacher_ref}; "
                             "use another --out")
    state = load_torch_state(state_path, "distillation state", "delete the run folder to start over, or use another --out")
    return {"step": state["step"], "optimizer": state["optimizer"], "losses": info.get("losses", []),
            "seconds": info.get("seconds", 0.0)}


def _save(student: AutoencoderKL, opt: torch.optim.Optimizer, out: Path, config: DecoderDistillConfig,
          teacher_ref: str, step: int, losses: list[tuple[int, float]], seconds: float) -> None:
    from snapbench.atomic import atomic_path

    with atomic_path(out) as tmp:
        student.save_pretrained(tmp, safe_serialization=True)
        torch.save({"step": step, "optimizer": opt.state_dict()}, tmp / STATE_FILE)
        info = {"format": FORMAT, "teacher": teacher_ref, "step": step, "config": asdict(config),
                "channel_rule": "per GroupNorm group, its first (1 - prune) share of channels",
                "trained": "decoder and post_quant_conv only; encode with the teacher's VAE",
                "losses": losses, "seconds": round(seconds, 1)}
        (tmp / DISTILL_FILE).write_text(json.dumps(info, indent=1) + "\n")
