#!/usr/bin/env bash
# Load test: nothing escapes when the machine is busy. Runs the storm test (every call of
# 32 x 4 x 100 parallel connects counted, under preload and auto, plus the signal and vfork hard
# cases) RUNS times in a row while a second storm of three parallel `nettrap run` connect storms
# runs beside it the whole time, and checks that the background storms counted every call too.
#
#   bash benches/storm.sh            # RUNS=20 by default
#
# Prints one line per run and a final "N of N passed"; exits non-zero on any miss. Not part of
# `cargo test`: it takes minutes and only means something on a loaded machine.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
cargo test --quiet --test processes --no-run 2>/dev/null
NETTRAP=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/nettrap
OUT=$PWD/target/storm-fixtures
make -s -C fixtures/c OUT="$OUT"
WORK=$(mktemp -d)
STOP=$WORK/stop
trap 'touch "$STOP"; wait; rm -rf "$WORK"' EXIT

# The background: three parallel storms of 8 processes x 4 threads x 100 connects, each in its
# own network namespace, again and again; every report must count 3200 calls.
background() {
  local i=0
  while [ ! -e "$STOP" ]; do
    i=$((i + 1))
    for k in 1 2 3; do
      unshare -rn sh -c 'ip link set lo up; exec "$@"' sh \
        "$NETTRAP" run --engine preload --quiet --report "$WORK/bg-$k.json" -- \
        "$OUT/stress" 8 4 100 9 >/dev/null 2>&1 &
    done
    wait
    for k in 1 2 3; do
      python3 - "$WORK/bg-$k.json" <<'PY' || echo "background storm $i/$k: MISSED CALLS" >>"$WORK/bg-errors"
import json, sys
r = json.load(open(sys.argv[1]))
n = sum(c["count"] for c in r["unattributed"]) + sum(c["count"] for t in r["tests"] for c in t["calls"])
lost = r["lost"]
sys.exit(0 if n == 3200 and lost["dropped"] == 0 and lost["torn"] == 0 else 1)
PY
    done
  done
}
background &

passed=0
for i in $(seq 1 "$RUNS"); do
  if cargo test --quiet --test processes every_engine_counts_the_storm_and_hard_cases_exactly \
      >"$WORK/run-$i.log" 2>&1; then
    passed=$((passed + 1)); echo "run $i: ok"
  else
    echo "run $i: FAILED"; tail -20 "$WORK/run-$i.log"
  fi
done
touch "$STOP"; wait
bg_errors=$(cat "$WORK/bg-errors" 2>/dev/null || true)
echo "$passed of $RUNS passed; background storms: ${bg_errors:-every call counted}"
[ "$passed" = "$RUNS" ] && [ -z "$bg_errors" ]
