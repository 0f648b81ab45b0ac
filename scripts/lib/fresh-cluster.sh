# Sourced by the cluster benchmarks (scripts/cold-start.sh, scripts/slow-gateway.sh): one fresh
# `scripts/cluster.sh` at a time, on the ports it needs (8065, 8101–8102, 8201–8203, 8301–8302,
# 7401–7402, 9092, and /metrics on 9101–9102, 9201–9203, 9301–9302). The caller sets `work` (a scratch directory) and traps EXIT with
# `stop_cluster`.

cluster=""
cluster_ports=":(8065|8101|8102|8201|8202|8203|8301|8302|7401|7402|9092|9101|9102|9201|9202|9203|9301|9302) "

# Starts a cluster named $1 in its own process group and waits (at most 10 min, the first
# start builds) until it printed its pids, which come after "cluster ready".
start_cluster() {
  local name=$1
  wait_for_free_ports
  MMSUB_CLUSTER_LOGS="$work/logs-$name" setsid scripts/cluster.sh >"$work/cluster-$name.out" 2>&1 &
  cluster=$!
  for _ in $(seq 1 6000); do
    grep -q "^server pids: " "$work/cluster-$name.out" && return 0
    kill -0 "$cluster" 2>/dev/null || { cat "$work/cluster-$name.out" >&2; exit 1; }
    sleep 0.1
  done
  echo "the cluster did not become ready" >&2
  exit 1
}

# The pids scripts/cluster.sh printed for cluster $1, in its start order (gateway 3 last).
cluster_pids() {
  sed -n 's/^server pids: //p' "$work/cluster-$1.out"
}

# Stops the running cluster (every process of its group) and waits until its ports are free.
stop_cluster() {
  [ -n "$cluster" ] || return 0
  kill -- -"$cluster" 2>/dev/null || true
  wait "$cluster" 2>/dev/null || true
  cluster=""
  wait_for_free_ports
}

# The next cluster binds the same ports: wait (at most 30 s) until nothing listens on them.
wait_for_free_ports() {
  for _ in $(seq 1 300); do
    ss -Hltn | awk '{print $4" "}' | grep -Eq "$cluster_ports" || return 0
    sleep 0.1
  done
  echo "ports scripts/cluster.sh needs are in use:" >&2
  ss -Hltnp | grep -E "$cluster_ports" >&2
  exit 1
}
