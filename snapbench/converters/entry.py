"""The one conversion entry point: `convert(ConvertRequest(...)) -> ConvertResult`.

What to convert is data (`ConvertRequest.part`), not a choice among functions: every block of the
backbone (one package per block or signature; a DiT's blocks by `converters/convert_dit.py`), one whole
model or pipeline part, or the app pipeline for Apple's Swift package. Every kind lands in one folder with
a manifest and hands back the same `ConvertResult`, so callers (the `convert` command, the profile
command's package cache) never ask which kind they got.

    from snapbench.converters.entry import ConvertRequest, convert
    result = convert(ConvertRequest(resolve_model("sd15"), Path("build/sd15"), ConvertOptions()))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from snapbench.backbones import DitBackbone, backbone_for
from snapbench.console import say
from snapbench.converters.components import convert_component
from snapbench.converters.convert_blocks import convert_model
from snapbench.converters.convert_dit import convert_dit
from snapbench.converters.options import ConvertOptions
from snapbench.converters.pipeline import convert_pipeline
from snapbench.converters.result import ConvertResult
from snapbench.errors import SnapbenchError
from snapbench.locks import FolderBusy, wait_while_locked
from snapbench.model.loading import ModelSource

# blocks: one package per block (deploy) or signature (profile); unet: the whole UNet (or its two chunks);
# text_encoder / vae_decoder: that pipeline part; pipeline: every part of the app, deploy mode.
Part = Literal["blocks", "unet", "text_encoder", "vae_decoder", "pipeline"]
PARTS: tuple[str, ...] = get_args(Part)


@dataclass(frozen=True)
class ConvertRequest:
    source: ModelSource  # the backbone (its UNet weights, if any, are the source's)
    out_dir: Path  # new, or a folder of ours for this model: reused and resumed
    options: ConvertOptions = ConvertOptions()
    part: Part = "blocks"
    weights: Path | None = None  # the text encoder's / VAE's folder, or a pipeline folder holding them
    vae_encoder: bool = False  # pipeline: also the VAE encoder (image-to-image)
    compile: bool = False  # pipeline: also .mlmodelc folders (macOS)
    drop_text_encoders: tuple[str, ...] = ()  # pipeline of a DiT: text encoders left out (clip-l, clip-g, t5, gemma)
    progress: bool = True  # a progress bar on stderr
    say: Callable[[str], None] | None = None  # one line per package, where a converter has no bar (DiTs)
    # a cache folder other snapbench runs convert into too (two profiles at once): wait for the one writing
    # there and reuse what it made, instead of refusing as a folder the user named is refused
    shared_folder: bool = False

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise SnapbenchError(f"cannot convert {self.part!r}: one of {', '.join(PARTS)}")
        if (self.vae_encoder or self.compile or self.drop_text_encoders) and self.part != "pipeline":
            raise SnapbenchError("--vae-encoder, --compile and --drop-text-encoder go with --pipeline")
        if self.options.chunks != 1 and self.part not in ("unet", "pipeline"):
            raise SnapbenchError("--chunks applies to the UNet only (--whole, --component unet or --pipeline)")


def convert(request: ConvertRequest) -> ConvertResult:
    """Convert what `request` names into `request.out_dir` (packages + manifest.json)."""
    while True:
        try:
            return _convert(request)
        except FolderBusy as busy:
            if not request.shared_folder or busy.folder.resolve() != Path(request.out_dir).resolve():
                raise
            say(f"{busy.folder}: waiting for another snapbench{f' (pid {busy.pid})' if busy.pid else ''} "
                "converting these packages; what it finishes is reused")
            wait_while_locked(busy.folder)


def _convert(r: ConvertRequest) -> ConvertResult:
    dit = backbone_for(r.source).name == DitBackbone.name
    if r.part == "blocks" and dit:
        # a DiT block can have several outputs (SD3's joint block returns both streams): its own converter
        return convert_dit(r.source, r.out_dir, r.options, say=r.say)
    if r.part == "unet" and dit:  # --whole: the whole transformer in one package
        from snapbench.converters.dit_whole import whole_dit_single
        from snapbench.converters.whole_model import convert_single

        return convert_single(whole_dit_single(r.source, r.options), r.out_dir, r.options, progress=r.progress)
    if r.part in ("text_encoder", "vae_decoder") and dit:
        raise SnapbenchError(f"--component {r.part} is for UNet models; a DiT's text encoders and VAE decoder "
                             "convert with --pipeline")
    if r.part == "blocks":
        return convert_model(r.source, r.out_dir, r.options, progress=r.progress)
    if r.part == "pipeline":
        return convert_pipeline(r.source, r.out_dir, r.options, weights=r.weights, vae_encoder=r.vae_encoder,
                                compile=r.compile, progress=r.progress, drop_text_encoders=r.drop_text_encoders)
    return convert_component(r.part, r.source, r.out_dir, r.options, weights=r.weights, progress=r.progress)
