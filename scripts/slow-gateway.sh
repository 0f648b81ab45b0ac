#!/usr/bin/env bash
# Does a gateway that reads nothing slow the others down? Runs the same load on a fresh
# `scripts/cluster.sh` with and without gateway 3 frozen (SIGSTOP) for 30 s mid-run, in
# alternating order, and prints one JSON line per run and one per pair: the p50/p99 of the
# subscribers on gateways 1 and 2, and frozen p99 / calm p99.
#
# Each run is two `loadtest fanout` processes started together:
# - measured: 200 subscribers over 20 channels on gateways 1 and 2, 8,000 messages at 200/s
#   through both API nodes (40 s);
# - the slow gateway's load: 100 subscribers over 10 other channels, all on gateway 3, 9,000
#   messages at 200/s. Its channels share the topic's partitions with the measured ones, so
#   the relays forward to gateway 3 from the same partitions, in the same loop, as to the
#   others: a relay that waited on it would delay them.
# In the frozen run, gateway 3 is stopped 8 s after the start, for 30 s, then continued.
#
# Gateway 3 and the slow gateway's load run at the lowest CPU priority (nice 19) in both runs.
# In a cluster they are other machines; here they share two cores with the measured path, and
# gateway 3's return (30 s of events to catch up and fan out at once, its clients resuming)
# would otherwise be measured as CPU taken from gateways 1 and 2, not as anything the relays do.
# Each run also prints the broker's CPU per 5 s: tansu's memory storage costs more per fetch
# as the topic grows, in both runs alike, and that is most of the p99's climb late in a run.
#
#   scripts/slow-gateway.sh        # release build, 2 pairs
#   scripts/slow-gateway.sh 3      # 3 pairs
#
# A benchmark, run by hand on an otherwise idle machine: it needs the ports scripts/cluster.sh
# needs. The suite checks delivery in the same fault (tests/cluster:
# a_gateway_that_reads_nothing_for_30_s_is_let_go_then_sent_what_it_missed, and the chaos soak);
# this measures time, which a test must not.
set -euo pipefail
cd "$(dirname "$0")/.."

pairs="${1:-2}"
cargo build --release --quiet -p mmsub-loadtest
work=$(mktemp -d)
. scripts/lib/fresh-cluster.sh
trap 'stop_cluster; rm -rf "$work"' EXIT INT TERM
lt=./target/release/loadtest
api=http://127.0.0.1:8101,http://127.0.0.1:8102

# One run on a fresh cluster: $1 names it, $2 is "frozen" or "calm".
run() {
  local name=$1 case=$2
  start_cluster "$name"
  local gateway3 broker
  gateway3=$(cluster_pids "$name" | awk '{print $NF}')
  broker=$(cluster_pids "$name" | awk '{print $1}')
  for task in /proc/"$gateway3"/task/*; do renice -n 19 -p "${task##*/}" >/dev/null; done
  python3 - "$broker" >"$work/$name-broker.txt" <<'PY' &
import sys, time
# The broker's CPU (% of one core) per 5 s, for 50 s.
def ticks():
    with open(f"/proc/{sys.argv[1]}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])
last, out = ticks(), []
for _ in range(10):
    time.sleep(5)
    now = ticks()
    out.append(round((now - last) / 5))
    last = now
print(" ".join(map(str, out)))
PY
  local sampler=$!
  nice -n 19 "$lt" fanout --url "$api" --ws-url http://127.0.0.1:8203 --subscribers 100 --channels 10 \
    --messages 9000 --rate 200 --timeout-secs 100 >"$work/$name-slow.json" 2>/dev/null &
  local slow=$!
  "$lt" fanout --url "$api" --ws-url http://127.0.0.1:8201,http://127.0.0.1:8202 \
    --subscribers 200 --channels 20 --messages 8000 --rate 200 --timeout-secs 100 \
    >"$work/$name.json" 2>/dev/null &
  local measured=$!
  if [ "$case" = frozen ]; then
    sleep 8
    kill -STOP "$gateway3"
    sleep 30
    kill -CONT "$gateway3"
  fi
  wait "$measured"
  wait "$slow" || true
  wait "$sampler" || true
  stop_cluster
}

for pair in $(seq 1 "$pairs"); do
  # Alternating order: the minutes' drift falls on both cases alike.
  if [ $((pair % 2)) -eq 1 ]; then order="calm frozen"; else order="frozen calm"; fi
  for case in $order; do
    run "$pair-$case" "$case"
  done
  python3 - "$pair" "$work" <<'EOF'
import json, sys
pair, work = sys.argv[1], sys.argv[2]
def last(path):
    try:
        return json.loads(open(path).read().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return None
p99 = {}
for case in ("calm", "frozen"):
    report, slow = last(f"{work}/{pair}-{case}.json"), last(f"{work}/{pair}-{case}-slow.json")
    p99[case] = report["latency_us"]["p99"] / 1000
    print(json.dumps({
        "pair": int(pair),
        "case": case,
        "lost": report["lost"],
        "duplicates": report["duplicates"],
        "p50_ms": report["latency_us"]["p50"] / 1000,
        "p99_ms": p99[case],
        "max_ms": report["latency_us"]["max"] / 1000,
        "p99_ms_by_second": [round(b["p99"] / 1000) for b in report.get("latency_by_second_us", [])],
        "broker_cpu_pct_by_5s": [int(x) for x in open(f"{work}/{pair}-{case}-broker.txt").read().split()],
        "slow_gateway_subscribers": None if slow is None else {
            "delivered": slow["delivered"], "expected": slow["expected"], "lost": slow["lost"],
        },
    }))
print(json.dumps({"pair": int(pair), "frozen_p99_over_calm": round(p99["frozen"] / p99["calm"], 2)}))
EOF
done
