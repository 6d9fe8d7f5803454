"""Op records of the packages that published latencies refer to, for calibration.

A reference point (a published or measured latency of a whole component: the text encoder per run, the
UNet per denoising step, the VAE decoder per image) is priced exactly as `snapbench profile` prices that
component: the packages come from `snapbench.latency.model_latency.profile_packages` (the converters'
profile-mode packages, from `<cache>/packages/` or converted now), and the component's figure is
the sum over them of count x estimate (the UNet: one package per unique block signature, counted once
per block that has it; 6-bit means the converters' real palettized packages). Calibration is therefore
fitted on the very programs profile prices.

Only the op records are kept (no weights): shipped beside this module in `reference_ops/`, one JSON file
per reference program, so calibration runs offline on a fresh clone; anything else is cached under
`<cache>/reference_ops/`. Write the shipped files with

    python -m snapbench.calibration.reference_programs --ship unet:sd15:original:16:2 ...
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from snapbench.errors import SnapbenchError
from snapbench.profilers.estimate.program_ops import (
    RECORDS_VERSION,
    OpRecord,
    read_records_doc,
    write_records_doc,
)
from snapbench.settings import RunSettings

Component = Literal["text_encoder", "unet", "vae_decoder"]

# Bumped when what the converters emit for profile mode changes in a way the key below cannot see
# (the key covers the settings, the model's config and the record format).
_PACKAGES_VERSION = 2


@dataclass(frozen=True)
class ReferenceProgram:
    """Which packages: a component of a model preset under given settings (as `snapbench profile` takes them)."""

    component: Component
    model: str = "sd15"  # a preset name of snapbench.specs
    attention: str = "original"
    weight_bits: int = 16
    batch: int = 2  # the UNet's batch (CFG); profile runs the text encoder and VAE decoder at batch 1
    latent: int = 64
    tokens: int = 77

    def settings(self) -> RunSettings:
        return RunSettings(attention=self.attention, weight_bits=self.weight_bits, batch=self.batch,
                           latent=self.latent, tokens=self.tokens)

    def key(self) -> str:
        cfg = json.dumps({**self.__dict__, "config": _model_config(self.model), "packages": _PACKAGES_VERSION,
                          "rec": RECORDS_VERSION}, sort_keys=True, default=str)
        return hashlib.sha256(cfg.encode()).hexdigest()[:16]

    def slug(self) -> str:
        return f"{self.component}-{self.model}-{self.attention}-w{self.weight_bits}-b{self.batch}-l{self.latent}"


@dataclass(frozen=True)
class ReferencePart:
    """One package's op records and how many times its latency counts in the component's figure."""

    name: str
    count: int
    records: tuple[OpRecord, ...]


def cache_dir() -> Path:
    from snapbench.paths import cache_root

    return cache_root() / "reference_ops"


def shipped_dir() -> Path:
    """Op records of the calibration programs shipped with the package, so calibration runs anywhere."""
    return Path(str(resources.files("snapbench.calibration") / "reference_ops"))


def reference_parts(program: ReferenceProgram, *, convert: bool = True) -> list[ReferencePart]:
    """The op records of the packages profile prices for `program`: shipped, else cached, else read from
    the converters' packages (converting what is missing, minutes) and cached."""
    key = program.key()
    name = f"{program.slug()}-{key}.json"
    for path in (shipped_dir() / name, cache_dir() / name):
        parts = load_parts(path, key=key)
        if parts is not None:
            return parts
    if not convert:
        raise SnapbenchError(f"no op records for {program.slug()} shipped or under {cache_dir()}; "
                             "run `snapbench calibrate` once on a machine with coremltools to build them")
    parts = parts_from_packages(program)
    save_parts(cache_dir() / name, parts, key=key, source=program.slug())
    return parts


def parts_from_packages(program: ReferenceProgram, *, progress: bool = False) -> list[ReferencePart]:
    from snapbench.backbones import resolve_model
    from snapbench.latency.model_latency import profile_packages
    from snapbench.profilers.estimate.program_ops import read_op_records

    pkgs = profile_packages(resolve_model(program.model), program.settings(), program.component, progress=progress)
    return [ReferencePart(p.key, p.count, tuple(read_op_records(p.path))) for p in pkgs]


def save_parts(path: Path, parts: list[ReferencePart], *, key: str, source: str) -> None:
    payload = {"parts": [{"name": p.name, "count": p.count, "ops": [r.to_json() for r in p.records]}
                         for p in parts]}
    write_records_doc(path, payload, key=key, source=source)


def load_parts(path: Path, *, key: str | None = None) -> list[ReferencePart] | None:
    """Parts saved by `save_parts`, or None when missing, stale or damaged."""
    return read_records_doc(path, key=key, parse=lambda doc: [
        ReferencePart(p["name"], int(p["count"]), tuple(OpRecord.from_json(r) for r in p["ops"]))
        for p in doc["parts"]])


def _model_config(model: str) -> dict:
    try:
        text = (resources.files("snapbench.specs") / "presets" / f"{model}.json").read_text()
    except FileNotFoundError:
        raise SnapbenchError(f"no model preset {model!r} in snapbench/specs/presets") from None
    doc = json.loads(text)
    return {k: v for k, v in doc.items() if not k.startswith("_")}


if __name__ == "__main__":
    # build op records: python -m snapbench.calibration.reference_programs [--ship] comp:model:att:bits:batch
    import sys
    import time

    args = sys.argv[1:]
    ship = "--ship" in args
    for spec in [a for a in args if a != "--ship"]:
        comp, model, att, bits, batch = spec.split(":")
        prog = ReferenceProgram(comp, model, att, int(bits), int(batch))  # type: ignore[arg-type]
        t0 = time.time()
        parts = parts_from_packages(prog, progress=True)
        out = (shipped_dir() if ship else cache_dir()) / f"{prog.slug()}-{prog.key()}.json"
        save_parts(out, parts, key=prog.key(), source=prog.slug())
        print(f"{spec}: {len(parts)} packages, {sum(p.count for p in parts)} uses, "
              f"{sum(len(p.records) for p in parts)} ops -> {out} in {time.time() - t0:.0f} s", flush=True)
