#!/bin/bash
# Interleaved A/B runs of one benchmark on two builds of the service.
#
#   examples/ab/run.sh NAME ROUNDS BENCH [ARGS...]
#
# BASE_DIR / MAIN_DIR: the two checkouts (e.g. `git worktree add /tmp/base <commit>`);
# BASE_TARGET / MAIN_TARGET: their cargo target dirs, each built first with
# `CARGO_TARGET_DIR=… cargo build --release --examples --bins`. Each round runs base,
# then main, from its own checkout, and keeps the last stdout line (the benchmark's
# JSON) as $OUT/NAME.{base,main}.ROUND.json (stderr beside it). Do not build or run
# anything else meanwhile: both sides share the machine.
set -euo pipefail
name=$1; rounds=$2; bench=$3; shift 3
out=${OUT:-/tmp/ab}
mkdir -p "$out"
for r in $(seq 1 "$rounds"); do
  for side in base main; do
    if [ "$side" = base ]; then dir=$BASE_DIR; target=$BASE_TARGET; else dir=$MAIN_DIR; target=$MAIN_TARGET; fi
    echo "== $name $side round $r $(date +%T)" >&2
    (cd "$dir" && "$target/release/examples/$bench" "$@") \
      > "$out/$name.$side.$r.log" 2> "$out/$name.$side.$r.err"
    tail -1 "$out/$name.$side.$r.log" > "$out/$name.$side.$r.json"
  done
done
