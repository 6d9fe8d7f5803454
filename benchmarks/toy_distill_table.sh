#!/usr/bin/env bash
# The toy's step-distillation table (issue 11; README "Distill: fewer steps"): a v-prediction toy-digits
# teacher, then 32 -> 8 step distillation CFG-aware and vanilla from it, each scored against the 32-step
# teacher and the undistilled model at 8 steps on the same fresh noise. Writes OUT/cfg-aware.json and
# OUT/vanilla.json (`distill --json`: {"teacher": E, "student": E, "undistilled": E, "run": ...}) and
# prints both tables. Every stage resumes: run it again after an interruption.
#
#   benchmarks/toy_distill_table.sh                          # defaults below; trains the teacher first
#   TEACHER=runs/toy OUT=runs/table benchmarks/toy_distill_table.sh   # reuse a trained teacher
#   DISTILL_STEPS=3 TRAIN_STEPS=3 EVAL_SAMPLES=2 OUT=/tmp/t benchmarks/toy_distill_table.sh   # smoke test
#   MODEL=toy-digits-dit OUT=runs/dit-table benchmarks/toy_distill_table.sh   # the DiT toy (issue 21)
#
# Settings (environment): OUT, MODEL (the toy the teacher is trained from: toy-digits or toy-digits-dit),
# TEACHER (a trained folder; empty: train one of MODEL in OUT/teacher), TRAIN_STEPS,
# DISTILL_STEPS, BATCH, LR, GUIDANCE_MIN/GUIDANCE_MAX (the CFG-aware loss's U[w_min, w_max]),
# EVAL_GUIDANCE, EVAL_SAMPLES (per digit), EVAL_SEED (other fresh noise: rescores finished runs without
# training, into OUT/<name>-seed<N>.json), THREADS (torch CPU threads), SNAPBENCH (the command;
# default .venv/bin/snapbench if present, else snapbench). Training and distillation run on
# accelerate's default device (a GPU if one is visible); scoring runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-runs/toy-distill-table}
MODEL=${MODEL:-toy-digits}
TEACHER=${TEACHER:-}
TRAIN_STEPS=${TRAIN_STEPS:-1000}
DISTILL_STEPS=${DISTILL_STEPS:-700}
BATCH=${BATCH:-32}
LR=${LR:-1e-4}
GUIDANCE_MIN=${GUIDANCE_MIN:-1}
GUIDANCE_MAX=${GUIDANCE_MAX:-9}
EVAL_GUIDANCE=${EVAL_GUIDANCE:-1,3,5,7,9}
EVAL_SAMPLES=${EVAL_SAMPLES:-50}
THREADS=${THREADS:-1}
EVAL_SEED=${EVAL_SEED:-}
SUFFIX=${EVAL_SEED:+-seed$EVAL_SEED}
if [[ -z ${SNAPBENCH:-} ]]; then
    if [[ -x .venv/bin/snapbench ]]; then SNAPBENCH=.venv/bin/snapbench; else SNAPBENCH="python -m snapbench"; fi
fi
read -r -a SB <<<"$SNAPBENCH"
mkdir -p "$OUT"

if [[ -z $TEACHER ]]; then
    TEACHER=$OUT/teacher
    echo "== teacher: $MODEL, v-prediction, $TRAIN_STEPS steps -> $TEACHER ($(date -u +%T))" >&2
    "${SB[@]}" train --model "$MODEL" --normal --prediction-type v_prediction --steps "$TRAIN_STEPS" \
        --save-every 250 --threads "$THREADS" --out "$TEACHER" --json >"$OUT/teacher.json"
fi

distill() {  # $1: cfg-aware | vanilla
    echo "== $1 distillation 32 -> 8, $DISTILL_STEPS steps ($(date -u +%T))" >&2
    "${SB[@]}" distill --model "$TEACHER" --teacher-steps 32 --student-steps 8 "--$1" \
        --guidance-min "$GUIDANCE_MIN" --guidance-max "$GUIDANCE_MAX" --steps "$DISTILL_STEPS" \
        --batch-size "$BATCH" --lr "$LR" --save-every 100 --eval-guidance "$EVAL_GUIDANCE" \
        --eval-samples "$EVAL_SAMPLES" ${EVAL_SEED:+--eval-seed "$EVAL_SEED"} --threads "$THREADS" \
        --out "$OUT/student-$1" --json >"$OUT/$1$SUFFIX.json.part"
    mv "$OUT/$1$SUFFIX.json.part" "$OUT/$1$SUFFIX.json"
}
distill cfg-aware
distill vanilla

python3 - "$OUT" "$SUFFIX" <<'EOF'
import json, sys
out, suffix = sys.argv[1], sys.argv[2]
runs = {name: json.load(open(f"{out}/{name}{suffix}.json")) for name in ("cfg-aware", "vanilla")}
rows = [("teacher, 32 steps", runs["cfg-aware"]["teacher"]), ("undistilled, 8 steps", runs["cfg-aware"]["undistilled"]),
        ("vanilla distillation, 8 steps", runs["vanilla"]["student"]),
        ("CFG-aware distillation, 8 steps", runs["cfg-aware"]["student"])]
ws = list(rows[0][1]["quality"])
for metric, title in (("quality", "quality (higher is better)"), ("fd", "Frechet distance (lower is better)")):
    print(f"| {title} | " + " | ".join(f"w={w}" for w in ws) + " |")
    print("|---|" + "---|" * len(ws))
    for name, e in rows:
        fmt = "{:.3f}" if metric == "quality" else "{:.2f}"
        print(f"| {name} | " + " | ".join(fmt.format(e[metric][w]) for w in ws) + " |")
    print()
for name, r in runs.items():
    print(f"{name}: {r['run']['step']} steps, {r['run']['seconds']} s of distillation")
EOF
