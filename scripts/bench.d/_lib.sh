# Shared helpers of the benchmark parts (sourced, not run: it is not executable, so
# scripts/bench skips it). Each part builds the release binaries once, starts a throwaway
# PostgreSQL (pg_cluster) and the relay (the real tidewire-relay binary) as background
# processes, and stops exactly the processes it started (by pid) on exit.
#
# Environment:
#   BENCH_TARGET_DIR  cargo target directory for the release build (default: target)
#   BENCH_SECONDS     seconds of publishing per measurement (default per part)
#   BENCH_SKIP_BUILD  set to 1 to use the binaries already in $BENCH_TARGET_DIR/release

set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p artifacts/bench
target_dir=${BENCH_TARGET_DIR:-target}
bin="$target_dir/release"
work=$(mktemp -d /tmp/tidewire-bench.XXXXXX)
started_pids=()

build_release() {
  if [ "${BENCH_SKIP_BUILD:-0}" = 1 ]; then return 0; fi
  CARGO_TARGET_DIR="$target_dir" cargo build --release --locked --quiet \
    -p tidewire-tests --bins -p tidewire-relay --bin tidewire-relay
}

cleanup() {
  local pid
  for pid in "${started_pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${started_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# start_pg: a migrated throwaway cluster; sets DATABASE_URL and PG_PID (the postmaster).
start_pg() {
  "$bin/pg_cluster" --url-file "$work/pg.url" --pid-file "$work/pg.pid" --max-connections 300 \
    > "$work/pg_cluster.log" 2>&1 &
  started_pids+=($!)
  for _ in $(seq 1 300); do
    [ -s "$work/pg.url" ] && [ -s "$work/pg.pid" ] && break
    sleep 0.1
  done
  DATABASE_URL=$(cat "$work/pg.url")
  PG_PID=$(cat "$work/pg.pid")
  export DATABASE_URL PG_PID
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  local port=$1
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on $port" >&2
  return 1
}

# launch NAME PORT COMMAND...: COMMAND in the background (log: $work/NAME-PORT.log), stopped on
# exit; sets LAUNCHED_PID and waits until something listens on PORT.
launch() {
  local name=$1 port=$2
  shift 2
  "$@" > "$work/$name-$port.log" 2>&1 &
  LAUNCHED_PID=$!
  started_pids+=("$LAUNCHED_PID")
  wait_port "$port"
}

# stop_pid PID: SIGTERM a process this script launched and wait for it.
stop_pid() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

# start_relay [flags...]: the relay on a free port; sets RELAY_ADDR and RELAY_PID.
start_relay() {
  local port
  port=$(free_port)
  RELAY_ADDR="127.0.0.1:$port"
  launch relay "$port" "$bin/tidewire-relay" --listen "$RELAY_ADDR" --max-connections 25000 \
    --log warn "$@"
  RELAY_PID=$LAUNCHED_PID
}

# stop_relay: SIGTERM the relay started last and wait for it.
stop_relay() { stop_pid "$RELAY_PID"; }

# start_baseline [flags...]: fanout_baseline on a free port; sets BASELINE_ADDR/BASELINE_PID.
start_baseline() {
  local port
  port=$(free_port)
  BASELINE_ADDR="127.0.0.1:$port"
  launch baseline "$port" "$bin/fanout_baseline" --listen "$BASELINE_ADDR" "$@"
  BASELINE_PID=$LAUNCHED_PID
}

stop_baseline() { stop_pid "$BASELINE_PID"; }

# start_bun: the Bun peer (tests/peers/bun/peer.js: uWebSockets pub/sub fed by PostgreSQL
# LISTEN) on a free port, installed from the npm registry on first use; sets BUN_ADDR/BUN_PID.
start_bun() {
  local port peer=tests/peers/bun
  if [ ! -x "$peer/node_modules/.bin/bun" ]; then
    (cd "$peer" && npm ci --no-audit --no-fund --loglevel=error)
  fi
  port=$(free_port)
  BUN_ADDR="127.0.0.1:$port"
  launch bun "$port" env PORT="$port" DATABASE_URL="$DATABASE_URL" \
    "$peer/node_modules/.bin/bun" "$peer/peer.js"
  BUN_PID=$LAUNCHED_PID
}

stop_bun() { stop_pid "$BUN_PID"; }

# psql_value SQL: one value from the benchmark cluster.
psql_value() {
  psql "$DATABASE_URL" -qtAX -c "$1"
}

# metric NAME: the sum of a Prometheus counter on the relay.
metric() {
  curl -s "http://$RELAY_ADDR/metrics" | awk -v name="$1" '$1 == name || index($1, name "{") == 1 { sum += $2 } END { print sum + 0 }'
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ)"
