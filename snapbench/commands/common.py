"""Shared pieces of the command modules: consoles, common options, JSON printing."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from snapbench.console import err, out  # noqa: F401  (re-exported: the commands print through these)

ModelOpt = typer.Option("sd15", "--model", "-m", help="Preset name, arch spec .json, or local diffusers UNet folder.")
WeightsOpt = typer.Option(None, "--weights", help="Local diffusers UNet folder whose weights to load into the spec.")
LatentOpt = typer.Option(64, "--latent", min=1, help="Latent height = width (64 for 512x512 images).")
BatchOpt = typer.Option(2, "--batch", min=1, help="Batch (2 = classifier-free guidance).")
TokensOpt = typer.Option(77, "--tokens", min=1, help="Text tokens in the context.")
JsonOpt = typer.Option(False, "--json", help="Print the data as one JSON document on stdout.")


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def fmt_count(n: float, unit: str = "") -> str:
    """1234567 -> '1.23M'."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}{unit}"
    return f"{n:.0f}{unit}"
