"""Shared pieces of the command modules: consoles, common options, JSON printing."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from snapbench.console import err, out  # noqa: F401  (re-exported: the commands print through these)
from snapbench.formatting import fmt_count  # noqa: F401  (re-exported: the commands' table cells)

if TYPE_CHECKING:
    from snapbench.model.loading import ModelSource

ModelOpt = typer.Option("sd15", "--model", "-m",
                        help="Preset name, arch spec .json, local diffusers UNet folder, or hub id in the local HF cache.")
WeightsOpt = typer.Option(None, "--weights", help="Diffusers UNet folder (or hub id) whose weights to load into the spec.")
VariantOpt = typer.Option(None, "--variant",
                          help="Weights variant, e.g. fp16 for diffusion_pytorch_model.fp16.safetensors "
                               "[default: the plain file, else the only variant present].")
SubfolderOpt = typer.Option(None, "--subfolder", help="Folder inside the model folder or hub snapshot (e.g. unet).")
RevisionOpt = typer.Option(None, "--revision", help="Hub snapshot: branch, tag or commit [default: main].")
LatentOpt = typer.Option(None, "--latent", min=1, show_default=False,
                         help="Latent height = width [default: the model config's sample_size; SD: 64, a 512x512 image].")
BatchOpt = typer.Option(2, "--batch", min=1, help="Batch (2 = classifier-free guidance).")
TokensOpt = typer.Option(77, "--tokens", min=1, help="Text tokens in the context.")
JsonOpt = typer.Option(False, "--json", help="Print the data as one JSON document on stdout.")


def model_source(model: str, weights: str | None = None, variant: str | None = None,
                 subfolder: str | None = None, revision: str | None = None) -> ModelSource:
    """`--model` with `--weights` and the hub options, resolved once per command: the library takes the
    `ModelSource` and never resolves a name again."""
    from snapbench.backbones import resolve_model

    return resolve_model(model, weights=weights, variant=variant, subfolder=subfolder, revision=revision)


def resolved_latent(source: ModelSource, latent: int | None) -> int:
    """--latent, else the model's own (its config's sample_size)."""
    from snapbench.model.loading import model_latent

    return latent if latent is not None else model_latent(source.spec)


def messages(as_json: bool) -> Callable[[str], None] | None:
    """Where a converter's per-package lines go: stderr, unless --json output is piped (a script reads it)."""
    return None if as_json and not err.is_terminal else (lambda msg: err.print(msg, markup=False, highlight=False))


def without_float_noise(data: object) -> object:
    """Floats at 12 significant digits: 0.05170000000000001 prints as 0.0517; no figure here has more."""
    if isinstance(data, float):
        return float(f"{data:.12g}") if math.isfinite(data) else data
    if isinstance(data, dict):
        return {k: without_float_noise(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [without_float_noise(v) for v in data]
    return data


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(without_float_noise(data), indent=2, default=str) + "\n")
    sys.stdout.flush()


def default_learning_rate(model: str) -> float:
    """`train`'s and `evolve`'s AdamW rate when --lr is not given: the toy's 1e-3, 1e-5 for fine-tuning a
    real checkpoint (evolution's steps continue the robust training, so they take its rate)."""
    from snapbench.training.toy_digits import TOY_PRESET

    return 1e-3 if TOY_PRESET in model or is_toy_ref(model) else 1e-5


def is_toy_ref(model: str) -> bool:
    """Whether `--model` names the toy (a preset, or a folder trained from it); a bad model is False here and
    reported by the command's own function."""
    from snapbench.backbones import resolve_model
    from snapbench.errors import SnapbenchError
    from snapbench.training.toy_digits import is_toy

    try:
        return is_toy(resolve_model(model).spec)
    except SnapbenchError:
        return False
