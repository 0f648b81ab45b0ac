#!/usr/bin/env bash
# History reads under goose (`loadtest history`: getMessageList pages and channelList) against
# `mmsub serve` on the Mattermost stand-in, first without and then with the ScyllaDB tier (the
# scylla-standin node). Prints one JSON line per variant: reads/s, p50/p99 in microseconds,
# and Mattermost requests per read by route.
#
#   scripts/history-bench.sh                 # release build, 30 s per variant, 20 users
#   scripts/history-bench.sh 10s 8           # run time and users
#   MMSUB_BENCH_PROFILE=debug scripts/history-bench.sh 3s 4 --check   # what the test command runs
#
# MMSUB_HISTORY_SHAPE (default "--channels 20 --messages 200 --page-size 20 --pages 5") sets
# the data and the pages read; see `loadtest history --help`.
#
# --check fails the run unless the tier variant's reads made (almost) no Mattermost post
# request and the variant without it made at least one per page read.
set -euo pipefail
cd "$(dirname "$0")/.."

run_time="${1:-30s}"
users="${2:-20}"
check="${3:-}"
profile="${MMSUB_BENCH_PROFILE:-release}"
flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --quiet -p mmsub -p mattermost-standin -p scylla-standin -p mmsub-loadtest --bins
bin="./target/$profile"

work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT INT TERM

# Starts "$@" logging to $work/$name.log and waits for the address it prints.
start() {
  local name=$1 pattern=$2; shift 2
  "$@" >"$work/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do
    addr=$(grep -o "$pattern" "$work/$name.log" | head -n 1 || true)
    [ -n "$addr" ] && return 0
    sleep 0.05
  done
  echo "$name did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# Warnings only, but the line that gives each server's address.
# User plus system CPU seconds a process has used (Linux /proc; 100 ticks a second).
cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }

export RUST_LOG="${RUST_LOG:-warn,mmsub=info}"
# One load generator at 127.0.0.1 as one user: lift the per-client and per-user limits.
export MMSUB_SEND_RATE_PER_USER=off MMSUB_LOGIN_RATE_PER_USER=off MMSUB_LOGIN_RATE_PER_CLIENT=off \
  MMSUB_SIGNUP_RATE_PER_CLIENT=off MMSUB_MAX_HTTP_CONNECTIONS_PER_CLIENT=20000 \
  MMSUB_MAX_WS_CONNECTIONS_PER_CLIENT=20000

variant() {
  local name=$1; shift
  start "mattermost-$name" 'http://127\.0\.0\.1:[0-9]*' "$bin/mattermost-standin" 127.0.0.1:0
  local mattermost=$addr
  start "serve-$name" 'listening on http://127\.0\.0\.1:[0-9]*' env \
    MATTERMOST_SERVER_URL="$mattermost" MATTERMOST_ADMIN_LOGIN_ID=admin \
    MATTERMOST_ADMIN_LOGIN_PASSWORD='Admin-Passw0rd!' "$@" \
    "$bin/mmsub" serve --listen 127.0.0.1:0 --data-dir "$work/data-$name"
  local url=${addr#listening on }
  for _ in $(seq 1 100); do
    curl -sf "$url/readyz" >/dev/null && break
    sleep 0.1
  done
  echo "== $name: goose history reads, $users users for $run_time" >&2
  local serve_pid=${pids[-1]} mattermost_pid=${pids[-2]} scylla_pid=${scylla_pid:-}
  # shellcheck disable=SC2086 # the shape is several flags
  "$bin/loadtest" history --url "$url" --mattermost-url "$mattermost" "${limit[@]}" ${MMSUB_HISTORY_SHAPE:-} \
    -- --users "$users" --hatch-rate "$users" --run-time "$run_time" --quiet --no-reset-metrics --no-print-metrics \
    --report-file "$work/report-$name.html" 2>"$work/goose-$name.log" >"$work/out-$name.txt" || {
    echo "loadtest history failed ($name):" >&2; cat "$work/out-$name.txt" "$work/goose-$name.log" >&2; exit 1; }
  grep '^{' "$work/out-$name.txt" | tail -n 1 | tee "$work/summary-$name.json"
  echo "   CPU seconds over setup and run: mmsub $(cpu "$serve_pid"), Mattermost stand-in $(cpu "$mattermost_pid")${scylla_pid:+, ScyllaDB stand-in $(cpu "$scylla_pid")}" >&2
  [ -n "${MMSUB_BENCH_REPORTS:-}" ] && cp "$work/report-$name.html" "$MMSUB_BENCH_REPORTS/history-$name.html"
  return 0
}

limit=()
variant mattermost
start scylla 'listening on [0-9.:]*' "$bin/scylla-standin" 127.0.0.1:0
scylla=${addr#listening on }
scylla_pid=${pids[-1]}
[ "$check" = --check ] && limit=(--max-post-requests-per-read 0.01)
variant scylla MMSUB_SCYLLA_NODES="$scylla"

if [ "$check" = --check ]; then
  python3 - "$work/summary-mattermost.json" "$work/summary-scylla.json" <<'EOF'
import json, sys
without, with_tier = (json.load(open(p)) for p in sys.argv[1:3])
for name, run in (("without the tier", without), ("with the tier", with_tier)):
    assert run["reads"] > 0 and run["failed"] == 0, (name, run)
assert without["mattermost"]["post_requests_per_read"] >= 0.5, without
assert with_tier["mattermost"]["post_requests_per_read"] <= 0.01, with_tier
print("history-bench: reads without the tier cost %.2f Mattermost post requests each, with it %.4f"
      % (without["mattermost"]["post_requests_per_read"], with_tier["mattermost"]["post_requests_per_read"]))
EOF
fi
