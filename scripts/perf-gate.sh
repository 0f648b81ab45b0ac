#!/usr/bin/env bash
# CI performance gate: instruction counts of the hot path under callgrind, against a baseline.
#
#   scripts/perf-gate.sh            compare with benches/gate-baseline.txt (fails on regression)
#   scripts/perf-gate.sh --update   record the current counts as the new baseline (commit it)
#
# Why instructions: wall-clock timings on a shared 2-core CI machine vary by tens of percent;
# callgrind's instruction count for the same binary and input varies by under 0.02% here
# (benches/README.md). A workload that executes more than THRESHOLD percent more instructions
# than its baseline fails the run. 5% is far above that noise and far below what a real
# hot-path regression costs: one JSON parse + serialization per delivery (per-subscriber JSON
# work, what grouping removed) measured +1,919% on fanout_same and +399% on fanout_ten.
set -euo pipefail
cd "$(dirname "$0")/.."

THRESHOLD="${MMSUB_GATE_THRESHOLD_PERCENT:-5}"
BASELINE=benches/gate-baseline.txt
WORKLOADS=(fanout_same fanout_ten protocol jwt http_mutation)

if ! command -v valgrind >/dev/null; then
    echo "perf-gate: valgrind is required (apt-get install valgrind)" >&2
    exit 1
fi

# One build: cargo's diagnostics go to stderr as usual, so a failed build says why; the JSON
# messages on stdout name the executable.
if ! messages=$(cargo bench --bench gate --no-run --message-format=json-render-diagnostics); then
    echo "perf-gate: building the gate bench failed (disk: $(df -h . | awk 'NR == 2 { print $4 " free" }'))" >&2
    exit 1
fi
binary=$(python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "gate" and m.get("executable"):
        print(m["executable"])' <<<"$messages")
if [[ -z "$binary" ]]; then
    echo "perf-gate: cargo built the gate bench but did not name its executable" >&2
    exit 1
fi

count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='gate::measure*' \
        "$binary" "$1" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

if [[ "${1:-}" == "--update" ]]; then
    {
        echo "# Instructions executed by each workload of benches/gate.rs (scripts/perf-gate.sh --update)."
        for w in "${WORKLOADS[@]}"; do echo "$w $(count "$w")"; done
    } >"$BASELINE"
    cat "$BASELINE"
    exit 0
fi

failed=0
for w in "${WORKLOADS[@]}"; do
    now=$(count "$w")
    base=$(awk -v w="$w" '$1 == w { print $2 }' "$BASELINE")
    if [[ -z "$now" || -z "$base" ]]; then
        echo "perf-gate: no count for $w (now '${now}', baseline '${base}')" >&2
        failed=1
        continue
    fi
    verdict=$(python3 -c "
now, base, limit = $now, $base, $THRESHOLD
change = (now - base) * 100 / base
state = 'REGRESSION' if change > limit else ('faster: consider --update' if change < -limit else 'ok')
print(f'{change:+.2f}% {state}')")
    printf 'perf-gate: %-12s %12s instructions, baseline %12s: %s\n' "$w" "$now" "$base" "$verdict"
    [[ "$verdict" == *REGRESSION* ]] && failed=1
done
if ((failed)); then
    echo "perf-gate: the hot path got slower by more than ${THRESHOLD}% (or could not be measured)." >&2
    echo "perf-gate: if that is intended, run scripts/perf-gate.sh --update and commit the baseline." >&2
    exit 1
fi
