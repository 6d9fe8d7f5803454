#!/usr/bin/env bash
# Golden outputs for restructurings that must not change behaviour (issue 19): `inspect --json`,
# `profile --json` (estimate backend, fresh cache and tables) and `report --json` for the default models
# and their tiny twins, into OUT. Run it on main and on the branch, then compare:
#
#   git stash -u; OUT=/tmp/golden/before benchmarks/golden_outputs.sh; git stash pop   # or a copy of main
#   OUT=/tmp/golden/after benchmarks/golden_outputs.sh
#   .venv/bin/python benchmarks/compare_golden.py /tmp/golden/before /tmp/golden/after
#
# About 7 minutes on the shared 2-core machine (the tiny twins are converted for real; the full-size
# models read the shipped tables). SNAPBENCH: the command (default .venv/bin/snapbench).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT to an empty folder}
SB=${SNAPBENCH:-.venv/bin/snapbench}
mkdir -p "$OUT"
export SNAPBENCH_CACHE="$OUT.cache" SNAPBENCH_TABLES="$OUT.tables"
for m in sd15 snapfusion sd15-tiny snapfusion-tiny; do
  $SB inspect --model $m --json > "$OUT/inspect-$m.json" 2> "$OUT/inspect-$m.err"; echo "inspect $m: exit $?"
  $SB profile --model $m --device iphone14pro --json > "$OUT/profile-$m.json" 2> "$OUT/profile-$m.err"
  echo "profile $m: exit $?"
done
$SB report --json -o "$OUT/report-default.html" > /dev/null 2> "$OUT/report-default.err"; echo "report default: exit $?"
$SB report --baseline sd15-tiny --candidate snapfusion-tiny --json -o "$OUT/report-tiny.html" > /dev/null \
  2> "$OUT/report-tiny.err"; echo "report tiny: exit $?"
