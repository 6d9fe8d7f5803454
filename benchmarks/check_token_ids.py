"""A full-size text encoder's package, run on CLIP's special token ids without Core ML (Linux too).

    .venv/bin/python benchmarks/check_token_ids.py [--model sd15] [--work DIR]

Converts the model's TextEncoder part as `convert --pipeline` does (fp16, 77 tokens; a preset's seeded
random weights), runs the package's ML program with coremltools' op-level evaluation
(snapbench.converters.mil_eval) on a prompt holding the ids 49406 (start), 0, 2048, 2049, 320, 49407
(end, also the padding), and prints side by side: PSNR of the package's embeddings against PyTorch's,
and PSNR of PyTorch's embeddings for the ids as fp16 would hold them (2049 -> 2048, 49406 / 49407 ->
49408, clamped to the table) against the right ones: what a float16 `input_ids` would have cost.
Apple's acceptance bar is 35 dB. The evaluation is numpy, slow at full size (about a minute).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import snapbench  # noqa: F401  (first: lets torchvision import beside the CPU torch)

IDS = (49406, 0, 2048, 2049, 320, 49407)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15")
    parser.add_argument("--work", default=None, help="folder for the package (default: a temporary one)")
    args = parser.parse_args()

    import torch

    from snapbench.backbones import resolve_model
    from snapbench.converters.ane_attention import psnr
    from snapbench.converters.app_parts import ModelFolder, text_encoder_part
    from snapbench.converters.convert_package import convert_module
    from snapbench.converters.mil_eval import evaluate_package
    from snapbench.converters.options import ConvertOptions

    work = Path(args.work or tempfile.mkdtemp(prefix="snapbench-ids-"))
    work.mkdir(parents=True, exist_ok=True)
    opts = ConvertOptions(tokens=77, mode="deploy")
    part = text_encoder_part(resolve_model(args.model), opts, ModelFolder(None, None, None, None))
    module, _ = part.build()
    start = time.perf_counter()
    dest = work / "TextEncoder.mlpackage"
    convert_module(module, part.io, opts, dest, metadata={}, description=part.title, inputs=part.inputs())
    converted = time.perf_counter() - start
    ids = torch.full((1, opts.tokens), float(IDS[-1]))
    ids[0, :len(IDS)] = torch.tensor(IDS, dtype=torch.float32)
    start = time.perf_counter()
    got = evaluate_package(dest, {"input_ids": ids.numpy()})
    evaluated = time.perf_counter() - start
    with torch.no_grad():
        want = module(ids)
        as_fp16 = module(ids.half().float().clamp(max=float(IDS[-1])))
    print(f"{part.title}, {opts.tokens} tokens, ids {list(IDS)}; converted in {converted:.1f} s, "
          f"evaluated in {evaluated:.1f} s")
    print("| output | package vs PyTorch (dB) | ids as fp16 holds them vs right ids (dB) |")
    print("|---|---|---|")
    for i, name in enumerate(("last_hidden_state", "pooled_outputs")):
        print(f"| {name} | {psnr(want[i], got[name]):.1f} | {psnr(want[i], as_fp16[i]):.1f} |")


if __name__ == "__main__":
    main()
