#!/usr/bin/env bash
# Is a freshly started cluster as fast in its first second as in its tenth? Starts
# `scripts/cluster.sh` from nothing, and the moment it prints "cluster ready" runs the fan-out
# load of README "Running as a cluster" (300 subscribers, 30 channels, 10,000 messages at
# 1,000 msgs/s); then stops the cluster. Repeats RUNS times (each on a fresh cluster) and prints
# one JSON line per run: the run's p50/p99, the p99 of the messages sent in each second, and
# first / tenth, the ratio of second 1's p99 to second 10's.
#
#   scripts/cold-start.sh          # release build, 2 runs
#   scripts/cold-start.sh 4        # 4 runs
#
# A benchmark, run by hand on an otherwise idle machine: it needs ports 8065, 8101–8102,
# 8201–8203, 8301–8302, 7401–7402 and 9092 free, as scripts/cluster.sh does.
set -euo pipefail
cd "$(dirname "$0")/.."

runs="${1:-2}"
cargo build --release --quiet -p mmsub-loadtest
work=$(mktemp -d)
. scripts/lib/fresh-cluster.sh
trap 'stop_cluster; rm -rf "$work"' EXIT INT TERM

for run in $(seq 1 "$runs"); do
  start_cluster "$run"
  ./target/release/loadtest fanout --url http://127.0.0.1:8101,http://127.0.0.1:8102 \
    --ws-url http://127.0.0.1:8201,http://127.0.0.1:8202,http://127.0.0.1:8203 \
    --subscribers 300 --channels 30 --messages 10000 --rate 1000 2>/dev/null >"$work/fanout-$run.json"
  stop_cluster
  python3 - "$run" "$work/fanout-$run.json" <<'EOF'
import json, sys
run, path = sys.argv[1], sys.argv[2]
report = json.loads(open(path).read().strip().splitlines()[-1])
seconds = [s["p99"] / 1000 for s in report["latency_by_second_us"]]
first, tenth = seconds[0], seconds[9] if len(seconds) > 9 else None
print(json.dumps({
    "run": int(run),
    "lost": report["lost"],
    "p50_ms": report["latency_us"]["p50"] / 1000,
    "p99_ms": report["latency_us"]["p99"] / 1000,
    "p99_by_second_ms": seconds[:12],
    "first_over_tenth": round(first / tenth, 2) if tenth else None,
}))
EOF
done
