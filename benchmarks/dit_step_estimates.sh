#!/usr/bin/env bash
# Estimated per-step latency (batch 2, the model's own resolution: 1024x1024 for all five presets) of every
# DiT preset on iphone15pro and iphone16promax, with diffusers' attention as traced and with the Neural
# Engine rewrite (split_einsum_v2). One shared cache: the second device converts nothing.
#   SNAPBENCH_CACHE=/tmp/dit-cache bash benchmarks/dit_step_estimates.sh
set -euo pipefail
SNAP="${SNAP:-.venv/bin/snapbench}"
export SNAPBENCH_TABLES="${SNAPBENCH_TABLES:-$(mktemp -d)}"  # rows go to a scratch table, not ./latency_tables
echo "model attention device ms_per_step packages"
for model in ${MODELS:-sana-600m sana-1600m pixart-sigma sd3-medium sd35-medium}; do
  for attention in split_einsum_v2 original; do
    for device in iphone15pro iphone16promax; do
      "$SNAP" profile --model "$model" --device "$device" --attention "$attention" --json 2>/dev/null |
        python3 -c "import json,sys; d=json.load(sys.stdin); print('$model', '$attention', '$device', round(d['model_ms'], 1), d['packages'])"
    done
  done
done
