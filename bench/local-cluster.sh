# Sourced by the bench scripts: a local three-replica cluster of a given build.
#
#   start_local_cluster BIN BASE_PORT LOG_FILE [LOG_FILTER]
#
# starts `BIN local-cluster` on a fresh data dir under /tmp and waits for a leader; sets
# LC (its pid), DATA (its folder), LEADER (the leader's id), URLS (the three replica
# URLs, comma-separated) and LEADER_URL. stop_local_cluster stops it and removes DATA.

start_local_cluster() {
  local bin=$1 base=$2 log=$3 filter=${4:-warn}
  DATA=$(mktemp -d /tmp/psc-bench-XXXXXX)
  "$bin" --log "$filter" local-cluster --data-dir "$DATA" --base-port "$base" >"$log" 2>&1 &
  LC=$!
  LEADER=""
  for _ in $(seq 150); do
    LEADER=$(curl -sf "http://127.0.0.1:$base/v1/cluster" | python3 -c 'import json,sys; print(json.load(sys.stdin)["leader"] or "")' 2>/dev/null || true)
    [ -n "$LEADER" ] && break
    sleep 0.2
  done
  [ -n "$LEADER" ] || { echo "no leader after 30 s; see $log" >&2; return 1; }
  URLS="http://127.0.0.1:$base,http://127.0.0.1:$((base + 1)),http://127.0.0.1:$((base + 2))"
  LEADER_URL="http://127.0.0.1:$((base + LEADER - 1))"
}

stop_local_cluster() {
  kill "$LC" 2>/dev/null; wait "$LC" 2>/dev/null; rm -rf "$DATA"
}
