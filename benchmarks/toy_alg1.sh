#!/bin/bash
# Algorithm 1 on the toy DiT (README, "The goal met the paper's way") (interleaved robust training, the evolved net trains on), and
# the full model given the same number of steps. One heavy process at a time.
set -x
cd "$(dirname "$0")/.."
SB=.venv/bin/snapbench
T() { /usr/bin/time -f "%e s wall, %U s user, %S s sys, %M KB max" "$@"; }
T $SB evolve --model runs/toy-dit-3k --device iphone15pro --target-fraction 0.6 --train-steps 200 --final-steps 500 \
   --out runs/toy-dit-3k-alg1 --json > runs/alg1-evo.json 2> runs/alg1-evo.log
steps=$(.venv/bin/python -c "import json;print(json.load(open('runs/alg1-evo.json'))['train_steps'])")
echo "evolution trained $steps steps" >> runs/alg1-evo.log
# the full model: the same robust steps (interleaved ones and the final ones are all robust here)
T $SB train --model runs/toy-dit-3k --robust --steps $steps --out runs/toy-dit-3k-full-alg1 --json \
   > runs/alg1-full.json 2> runs/alg1-full.log
T .venv/bin/python benchmarks/toy_quality.py runs/toy-dit-3k-alg1 runs/toy-dit-3k-full-alg1 \
   --samples-per-prompt 100 --seed 1 >> runs/quality-heldout.jsonl 2>> runs/alg1-quality.log
echo done > runs/alg1.done
