#!/usr/bin/env bash
# Side by side, in one run: the attach workload against our three replicas, a
# three-member etcd cluster (gRPC and HTTP/JSON gateway) and a single Postgres, all on
# loopback with durable settings, plus a do-nothing HTTP server as the ceiling.
#
#   bench/compare.sh [bench compare flags, e.g. --concurrency 64 --duration 10 --runs 3]
#
# Installs Debian's etcd-server, etcd-client and postgresql if absent (needs root for that), builds the
# release binaries, starts the peers in a temporary folder, runs `bench compare`, and
# removes everything on exit (also on Ctrl-C or failure). Ports: etcd 23791-23793
# (clients) and 23801-23803 (peers), Postgres 54329; override with ETCD_BASE, PG_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

ETCD_BASE=${ETCD_BASE:-2379}
PG_PORT=${PG_PORT:-54329}
PG_BIN=${PG_BIN:-}

step() { printf '== %s\n' "$*" >&2; }

need_install=()
command -v etcd >/dev/null || need_install+=(etcd-server)
command -v etcdctl >/dev/null || need_install+=(etcd-client)
if [ -z "$PG_BIN" ]; then
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/postgres" ] || need_install+=(postgresql)
if [ ${#need_install[@]} -gt 0 ]; then
  step "installing ${need_install[*]}"
  [ "$(id -u)" = 0 ] || { echo "run as root to install ${need_install[*]}" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_install[@]}" >/dev/null
  # Debian's package starts a cluster of its own on 5432; we use a private one.
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
fi

step "building release binaries"
cargo build --release -q -p pageserver-controller -p bench

WORK=$(mktemp -d /tmp/psc-compare-XXXXXX)
chmod 755 "$WORK"
PIDS=()
PG_DATA="$WORK/pg"
cleanup() {
  set +e
  step "cleaning up"
  if [ -f "$PG_DATA/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w stop >/dev/null 2>&1
  fi
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Postgres refuses to run as root: run it as the postgres user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

step "starting a three-member etcd ($(etcd --version | head -1)) in $WORK"
cluster=""
for i in 1 2 3; do
  cluster+="m$i=http://127.0.0.1:$((ETCD_BASE * 10 + 10 + i)),"
done
cluster=${cluster%,}
for i in 1 2 3; do
  client=$((ETCD_BASE * 10 + i))
  peer=$((ETCD_BASE * 10 + 10 + i))
  # etcd always fsyncs its WAL before acknowledging (no --unsafe-no-fsync here).
  etcd --name "m$i" --data-dir "$WORK/etcd-$i" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "$cluster" --initial-cluster-state new --initial-cluster-token psc-bench \
    --logger zap --log-outputs stderr --log-level warn \
    >"$WORK/etcd-$i.log" 2>&1 &
  PIDS+=($!)
done
ETCD_ENDPOINTS="127.0.0.1:$((ETCD_BASE * 10 + 1)),127.0.0.1:$((ETCD_BASE * 10 + 2)),127.0.0.1:$((ETCD_BASE * 10 + 3))"
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >&2

step "starting Postgres ($("$PG_BIN/postgres" --version)) on 127.0.0.1:$PG_PORT, fsync on, synchronous_commit on"
mkdir -p "$PG_DATA" "$WORK/pgsock"
touch "$WORK/pg.log" "$WORK/initdb.log"
if [ "$(id -u)" = 0 ]; then chown postgres: "$PG_DATA" "$WORK/pgsock" "$WORK/pg.log"; fi
as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log"
as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK/pg.log" -w start -o \
  "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$WORK/pgsock \
   -c fsync=on -c synchronous_commit=on -c full_page_writes=on -c wal_sync_method=fdatasync \
   -c max_connections=400 -c shared_buffers=256MB" >/dev/null
as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -Atc \
  "select 'postgres: fsync=' || current_setting('fsync') || ', synchronous_commit=' || current_setting('synchronous_commit')" >&2

step "running bench compare (our cluster is started by the bench itself)"
./target/release/bench compare \
  --etcd "$ETCD_ENDPOINTS" \
  --postgres "host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres" \
  "$@"
