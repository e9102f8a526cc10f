#!/usr/bin/env bash
# How much a backup of a big registry holds up writes. Loads SHARDS tenant shards
# (default 1,000,000) into a local cluster of SERVER_BIN, then runs `bench attach`
# through the leader twice: alone, and while a loop takes `backup`s from the leader (one
# every half second, each encoding the whole registry). Snapshots are built the same way
# (a copy taken under the applied-state lock, encoded after), so the second run shows
# what a snapshot build costs writers too.
#
#   bench/stall.sh [SERVER_BIN] [OUT_DIR]
#
# Environment: SHARDS, BASE_PORT (7201), SECS per measured run (10), RUNS (3),
# CONCURRENCY (16). Prints progress while loading; the summaries go to OUT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/pageserver-controller}
OUT=${2:-target/results/stall-$(basename "$BIN")}
BENCH=./target/release/bench
SHARDS=${SHARDS:-1000000}
BASE_PORT=${BASE_PORT:-7201}
SECS=${SECS:-10}
RUNS=${RUNS:-3}
CONCURRENCY=${CONCURRENCY:-16}
mkdir -p "$OUT"
. bench/local-cluster.sh
BACKUPS=""
cleanup() {
  if [ -n "$BACKUPS" ]; then kill "$BACKUPS" 2>/dev/null; fi
  stop_local_cluster
}
trap cleanup EXIT INT TERM
start_local_cluster "$BIN" "$BASE_PORT" "$OUT/cluster.log" info,openraft=warn
leader=$LEADER

echo "stall.sh: loading $SHARDS shards (bench re-attach's preload)" >&2
"$BENCH" --url "$URLS" --runs 1 re-attach --shards "$SHARDS" 2>&1 | tee "$OUT/load.txt" >&2

echo "stall.sh: attach through the leader, no backups" >&2
"$BENCH" --url "$URLS" --duration "$SECS" --runs "$RUNS" attach --concurrency "$CONCURRENCY" --via leader >"$OUT/alone.txt" 2>&1

echo "stall.sh: attach through the leader, backups in a loop" >&2
( n=0; while :; do
    "$BIN" backup --url "$LEADER_URL" --out "$DATA/loop.backup" >/dev/null 2>&1 && n=$((n + 1)) && echo "$n" >"$OUT/backups.count"
    sleep 0.5
  done ) &
BACKUPS=$!
"$BENCH" --url "$URLS" --duration "$SECS" --runs "$RUNS" attach --concurrency "$CONCURRENCY" --via leader >"$OUT/backups.txt" 2>&1
kill "$BACKUPS"; BACKUPS=""

{
  echo "build: $BIN, $SHARDS shards, leader $leader, $(cat "$OUT/backups.count" 2>/dev/null || echo 0) backups taken"
  echo "--- alone"; grep "median of" "$OUT/alone.txt"
  echo "--- with backups"; grep "median of" "$OUT/backups.txt"
  echo "--- memory per replica: now (VmRSS) and peak (VmHWM)"
  for p in $(pgrep -P "$LC"); do
    echo "$(tr '\0' ' ' <"/proc/$p/cmdline" | grep -o -- '--id [0-9]*'): $(grep -E 'VmRSS|VmHWM' "/proc/$p/status" | tr -s ' \t\n' ' ')"
  done
  echo "--- backups as the leader logged them"
  grep "backup taken" "$OUT/cluster.log" | tail -n 3
} | tee "$OUT/summary.txt"
