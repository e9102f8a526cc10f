#!/usr/bin/env bash
# Where the attach path spends CPU: samples the replicas with `perf record` (cpu-clock;
# this VM has no hardware counters) while `bench attach` runs at concurrency 64, then
# groups the self time of every sampled function into HTTP+JSON, forwarding and peer
# transport, Raft, storage and flush, runtime, allocator and kernel.
#
#   bench/profile.sh [SERVER_BIN] [OUT_DIR]
#
# Two runs: traffic through the leader (leader sampled), then through a follower (the
# follower sampled: forwarding). Also counts the leader's fsync-family system calls with
# `perf trace -s`. Off-CPU time (waiting for fsync or the network) is not in a CPU
# profile: compare the latency at concurrency 1 with the fsync latency for that.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/pageserver-controller}
OUT=${2:-target/results/profile-$(basename "$BIN")}
BENCH=./target/release/bench
BASE_PORT=${BASE_PORT:-7101}
SECS=${SECS:-8}
command -v perf >/dev/null || { echo "perf is required (apt-get install linux-perf)" >&2; exit 1; }
mkdir -p "$OUT"
. bench/local-cluster.sh
trap stop_local_cluster EXIT INT TERM
start_local_cluster "$BIN" "$BASE_PORT" "$OUT/cluster.log"
leader=$LEADER
follower=$(( leader % 3 + 1 ))
pid_of() { # the local-cluster child serving replica $1
  for p in $(pgrep -P "$LC"); do
    if tr '\0' ' ' <"/proc/$p/cmdline" | grep -q -- "--id $1 "; then echo "$p"; fi
  done
}
LPID=$(pid_of "$leader"); FPID=$(pid_of "$follower")
echo "leader $leader (pid $LPID), follower $follower (pid $FPID)" | tee "$OUT/summary.txt"

run() { # $1 via, $2 pid to sample, $3 name
  "$BENCH" --url "$URLS" --duration $((SECS + 4)) --runs 1 attach --concurrency 64 --via "$1" >"$OUT/$3.bench.txt" 2>&1 &
  local b=$!
  sleep 2
  perf record -q -F 999 -e cpu-clock -p "$2" -o "$OUT/$3.data" -- sleep "$SECS" 2>/dev/null
  wait "$b"
  perf report -q -i "$OUT/$3.data" --no-children --sort sym --stdio 2>/dev/null >"$OUT/$3.report.txt"
}
run leader "$LPID" via-leader
run follower "$FPID" via-follower-follower
# fsync-family calls on the leader under load, and their time.
"$BENCH" --url "$URLS" --duration 8 --runs 1 attach --concurrency 64 --via leader >"$OUT/trace.bench.txt" 2>&1 &
b=$!
sleep 2
perf trace -s -p "$LPID" -- sleep 4 >"$OUT/leader.trace.txt" 2>&1 || true
wait "$b"

python3 - "$OUT" <<'EOF' | tee -a "$OUT/summary.txt"
import re, sys, pathlib
out = pathlib.Path(sys.argv[1])
# First match wins; patterns are matched against the demangled symbol.
groups = [
    ("flush (fsync, sled)", r"sled::|fsync|fdatasync|sync_file_range|ext4_|jbd2|blk_|nvme|virtio_blk|controller_storage"),
    ("Raft (openraft, bincode)", r"openraft::|bincode::|controller_raft::codec"),
    ("forwarding and peer transport (reqwest, hyper client)", r"reqwest::|hyper_util::client|hyper::client|controller_raft::transport|routing::"),
    ("HTTP + JSON (hyper server, axum, serde_json)", r"hyper::|axum::|serde_json::|serde::|http::|httparse|h2::|tower::|matchit"),
    ("domain (generations registry)", r"pageserver_controller::domain|BTreeMap|btree|hashbrown"),
    ("async runtime (tokio)", r"tokio::|mio::|futures_"),
    ("allocator and memcpy", r"malloc|free|realloc|memcpy|memmove|memset|_int_|cfree|alloc::"),
    ("kernel: network (tcp, loopback)", r"tcp_|ip_|__dev_queue|net_rx|sock_|skb|loopback|__netif|inet_|__sys_|sendmsg|recvmsg|netif|softirq"),
    ("kernel: virtio I/O kicks (disk and network)", r"iowrite|virtqueue|vring|vp_notify"),
    ("kernel: scheduling, futex, epoll (context switches)", r"futex|schedule|__schedule|ep_|epoll|finish_task_switch|try_to_wake|syscall|entry_SYSCALL|do_syscall|_raw_spin|irqentry_exit|exit_to_user|rseq|wake_up|parking_lot"),
]
for name in ["via-leader", "via-follower-follower"]:
    path = out / f"{name}.report.txt"
    if not path.exists():
        continue
    totals = {}
    other = []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(.*)", line)
        if not m:
            continue
        pct, sym = float(m.group(1)), m.group(2).strip()
        for g, pat in groups:
            if re.search(pat, sym):
                totals[g] = totals.get(g, 0) + pct
                break
        else:
            totals["other"] = totals.get("other", 0) + pct
            other.append((pct, sym))
    print(f"\n{name}: share of sampled CPU (self time)")
    for g, v in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {v:5.1f}%  {g}")
    print("  largest unclassified: " + "; ".join(f"{p:.1f}% {s[:60]}" for p, s in sorted(other, reverse=True)[:5]))
EOF
grep -E "fsync|fdatasync|sync_file_range|sendto|recvfrom|write |writev|futex" "$OUT/leader.trace.txt" | head -12 | sed 's/^/  trace: /' | tee -a "$OUT/summary.txt" || true
grep -h "^| attach" "$OUT"/*.bench.txt | tee -a "$OUT/summary.txt"
