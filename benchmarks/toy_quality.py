"""Score toy-digits model folders on held-out noise with the evolution's own judge (issue 21, item 5).

The evolution scores candidates on at most 80 images (seed 0), whose standard error is several points of
quality; this rescores finished folders on more images from another seed so that "share of the full
model's quality" is not read from noise. Prints one JSON object per folder: quality (mean probability of
the asked digit, `ToyEvalConfig` at the evolution's 10 steps and CFG 2) and its standard error.

    .venv/bin/python benchmarks/toy_quality.py runs/toy-dit runs/toy-dit-evo --samples-per-prompt 100 --seed 1
"""

from __future__ import annotations

import argparse
import json

import torch

from snapbench.evolution.evaluators import ToyEvalConfig
from snapbench.training.checkpoints import load_bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folders", nargs="+")
    ap.add_argument("--samples-per-prompt", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--guidance", type=float, default=2.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    config = ToyEvalConfig(samples_per_prompt=args.samples_per_prompt, steps=args.steps, guidance=args.guidance,
                           seed=args.seed)
    evaluator = config.build()
    for folder in args.folders:
        bundle = load_bundle(folder)
        bundle.model.eval()
        spp = config.samples_per_prompt
        # per-sample scores (their mean is evaluate()'s quality), so the standard error comes with it
        scores = torch.tensor(evaluator.sample_scores(bundle, bundle.model, [frozenset()], range(10 * spp))[0])
        print(json.dumps({"folder": folder, "quality": round(float(scores.mean()), 4),
                          "stderr": round(float(scores.std() / len(scores) ** 0.5), 4), "images": len(scores)}),
              flush=True)


if __name__ == "__main__":
    main()
