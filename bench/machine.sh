#!/usr/bin/env bash
# Prints what BENCHMARKS.md records about the machine: cores, memory, disk, load, and the
# latency of one synchronous 4 KiB write (dd with O_DSYNC: a write plus a data sync, as
# a log append with fsync costs) in the folder where the benchmark's data dirs live.
set -euo pipefail
DIR=${1:-${TMPDIR:-/tmp}}
echo "- nproc: $(nproc); memory: $(free -h | awk '/Mem:/ {print $2}') total, $(free -h | awk '/Mem:/ {print $7}') available"
echo "- kernel: $(uname -r); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "- disk ($DIR): $(df -h "$DIR" | awk 'NR==2 {print $1", "$2" size, "$4" free, mounted on "$6}')"
echo "- load average: $(cut -d' ' -f1-3 /proc/loadavg)"
f=$(mktemp "$DIR/fsync-probe-XXXXXX")
trap 'rm -f "$f"' EXIT
for n in 1 2 3; do
  out=$(dd if=/dev/zero of="$f" bs=4k count=2000 oflag=dsync 2>&1 | tail -1)
  secs=$(echo "$out" | sed -E 's/.* copied, ([0-9.]+) s.*/\1/')
  awk -v s="$secs" -v n="$n" 'BEGIN { printf "- synchronous 4 KiB write (dd oflag=dsync, 2000 writes), run %d: %.3f ms each\n", n, s * 1000 / 2000 }'
done
