"""What a model folder says about how it was distilled, for the report: its step count (sampling.json,
written by `distill`), its decoder (a `distill-decoder` folder that `distill --decoder` recorded), and
a small sample grid when it is a toy with weights. Where nothing was distilled here, the report says the
paper's figure is an assumption."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

from snapbench.distillation.decoder import DISTILL_FILE
from snapbench.distillation.step_distillation import read_sampling


def distilled_steps(ref: str) -> tuple[int, str] | None:
    """(steps, where that comes from) when `ref` is a distilled folder, else None."""
    if not Path(ref).is_dir():
        return None
    s = read_sampling(ref)
    if s is None:
        return None
    how = "CFG-aware" if s.get("cfg_aware") else "vanilla"
    return int(s["steps"]), f"step-distilled here ({how}, from a {s.get('teacher_steps')}-step teacher)"


def decoder_source(ref: str, spec_name: str) -> str:
    """One sentence on the VAE decoder the report prices for this model, and where its weights come from."""
    settings = read_sampling(ref) if Path(ref).is_dir() else None
    folder = settings.get("decoder") if settings else None
    if folder:
        info_path = Path(folder) / DISTILL_FILE
        try:
            info = json.loads(info_path.read_text())
        except (OSError, json.JSONDecodeError):
            return f"distilled decoder recorded at {folder}, but {info_path} is missing or unreadable"
        r = info.get("result", {})
        psnr = f", PSNR {r['psnr_distilled_db']} dB to the teacher decoder" if r.get("psnr_distilled_db") else ""
        priced = ("SnapFusion's 50%-pruned SD decoder" if spec_name.startswith("snapfusion")
                  else "the full SD-v1.5 decoder")
        return (f"pruned by {info.get('config', {}).get('prune')} and distilled here ({folder}{psnr}); the latency "
                f"shown is {priced}'s, as the converters build it for this model (not re-estimated for this one)")
    if spec_name.startswith("snapfusion"):
        return ("SnapFusion's 50%-pruned decoder as an architecture (the paper's assumption: its quality after "
                "distillation is the paper's claim, not distilled here)")
    return "SD-v1.5's VAE decoder"


def toy_grid_data_uri(ref: str, *, per_prompt: int = 4) -> str | None:
    """A small PNG grid (digits 0-9, `per_prompt` each) as a data: URI, for a toy folder with weights."""
    from snapbench.backbones import resolve_model
    from snapbench.distillation.sample_grid import SampleConfig, generate, grid_image, resolve_steps
    from snapbench.training.checkpoints import load_bundle
    from snapbench.training.toy_digits import DIGIT_PROMPTS, is_toy

    if not Path(ref).is_dir() or resolve_model(ref).weights_dir is None or not is_toy(resolve_model(ref).spec):
        return None
    from PIL import Image

    config = SampleConfig(DIGIT_PROMPTS, None, 5.0, per_prompt, 0)
    images = generate(load_bundle(ref), config, resolve_steps(ref, None))
    buf = io.BytesIO()
    Image.fromarray(grid_image(images, rows=len(DIGIT_PROMPTS), scale=3)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def check_decoder(decoder_folder: str | Path) -> None:
    """Refuse a --decoder that is not a `distill-decoder` folder (before any work, and again on recording)."""
    from snapbench.errors import SnapbenchError

    if not (Path(decoder_folder) / DISTILL_FILE).is_file():
        raise SnapbenchError(f"--decoder {decoder_folder}: not a `snapbench distill-decoder` folder (no {DISTILL_FILE})")


def record_decoder(model_folder: str | Path, decoder_folder: str | Path) -> None:
    """Note in a distilled UNet folder's sampling.json which distilled decoder goes with it."""
    from snapbench.atomic import atomic_write_text
    from snapbench.distillation.step_distillation import SAMPLING_FILE

    check_decoder(decoder_folder)
    settings = {**(read_sampling(model_folder) or {}), "decoder": str(decoder_folder)}
    atomic_write_text(Path(model_folder) / SAMPLING_FILE, json.dumps(settings, indent=1) + "\n")
