#!/usr/bin/env bash
# `make test`: lint, build, start the local control plane, run every test of the workspace, tear
# everything down. Exits non-zero on any failure. Each test starts its own InfluxDB on free ports.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==== %s (%s)\n' "$*" "$(date +%H:%M:%S)" >&2; }
t0=$(date +%s)

step "rustfmt"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "actionlint (.github/workflows)"
# A small Go build the first time (cached in ~/.cache/iot-operator); cargo-deny, which costs minutes
# of compiling, runs in `make lint` only.
scripts/lint-tools.sh actionlint
"$(scripts/lint-tools.sh --print)/actionlint"

step "build"
cargo build --workspace --all-targets

step "images"
# The image tests (tests/images) fail instead of skipping when a tool they need is missing.
export IOT_REQUIRE_IMAGES=1
images/build.sh

step "the tests' S3 server (SeaweedFS; built the first time, about 10 min, then cached)"
# Built here rather than by the first test that starts one (testkit's s3.rs would), so the build
# has a line of its own and does not run inside a test lane.
tests/cluster/build.sh seaweedfs

step "control plane up"
export IOT_CLUSTER_DIR=${IOT_CLUSTER_DIR:-$PWD/.run/test-cluster}
down() { tests/cluster/down.sh || true; }
trap down EXIT
eval "$(tests/cluster/up.sh)"
echo "KUBECONFIG=$KUBECONFIG" >&2

# The images of the stack, for the tests that run it on the cluster's real node (the operator from
# the chart, and the workloads it deploys): --load imports them into the node's containerd (the
# build above made them, so this only imports).
if [ "${IOT_REAL_NODE:-1}" != 0 ]; then
  step "images for the real node"
  images/build.sh --load iot-operator coap-server sensor-sim aqi-ingestor influxdb iot-backup
fi

step "tests"
# Test binaries run side by side in lanes: most tests wait on the cluster (HPA windows, pods
# starting), so one binary after another left the machine idle for most of the run. Each lane
# is one `cargo test` (cargo holds its build lock only while it builds); a lane's binaries run in
# order, and its output lines carry the lane's name. Every lane selects the whole workspace and
# names its test targets: `-p`/`--exclude` would resolve the dependencies' features differently
# from the build step, and each lane would build them again. The order that matters:
#   1. the two binaries that install the chart's cluster-wide operator (it would reconcile every
#      other test's monitors) run while nothing else uses the cluster, beside the tests that need
#      no cluster at all;
#   2. then every other cluster test, the two longest in lanes of their own.
THREADS=${TEST_THREADS:-4}
CLUSTER_WIDE=(operator_helm real_stack)
LONG_LANES=("real_autoscaling" "autoscaling real_influxdb_trouble")
ALONE=(quick_start) # the README's quick start starts a cluster of its own: it runs last, alone
rc=0
lanes=()
lane() { # lane NAME COMMAND...: runs in the background, lines prefixed with [NAME]
  local name=$1; shift
  (
    start=$(date +%s)
    set +e
    "$@" 2>&1 | sed -u "s/^/[$name] /"
    code=${PIPESTATUS[0]}
    echo "[$name] lane done in $(( $(date +%s) - start )) s (exit $code)"
    exit "$code"
  ) &
  lanes+=("$!:$name")
}
wait_lanes() {
  local entry
  for entry in "${lanes[@]}"; do
    wait "${entry%%:*}" || { echo "lane ${entry#*:} failed" >&2; rc=1; }
  done
  lanes=()
}
tests() { # tests [--lib|--bins] TEST...: those test targets of the workspace, in order
  local args=() t
  for t in "$@"; do
    case $t in --lib | --bins) args+=("$t") ;; *) args+=(--test "$t") ;; esac
  done
  cargo test --workspace --no-fail-fast "${args[@]}" -- --test-threads="$THREADS"
}
local_tests() { # every unit test, every other crate's integration tests, then the doc tests
  local code=0
  tests --lib --bins "${other_tests[@]}" || code=1
  cargo test --workspace --doc || code=1
  return "$code"
}
# Every test target not named above, so a new one cannot be left out: iot-e2e's (they need the
# cluster) and the other crates' (they need none).
named=" ${CLUSTER_WIDE[*]} ${LONG_LANES[*]} ${ALONE[*]} "
other_e2e=()
other_tests=()
while read -r package target; do
  if [ "$package" = iot-e2e ]; then
    [[ "$named" == *" $target "* ]] || other_e2e+=("$target")
  else
    other_tests+=("$target")
  fi
done < <(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    for t in p["targets"]:
        if "test" in t["kind"]:
            print(p["name"], t["name"])')

lane local local_tests
# Phase 1 on the cluster: the cluster-wide operators, alone on it.
lane cluster-wide tests "${CLUSTER_WIDE[@]}"
cluster_wide_pid=${lanes[1]%%:*}
wait "$cluster_wide_pid" || { echo "lane cluster-wide failed" >&2; rc=1; }
lanes=("${lanes[0]}")
# Phase 2: everything else on the cluster.
for l in "${LONG_LANES[@]}"; do
  # shellcheck disable=SC2086 # the names are words
  lane "${l%% *}" tests $l
done
lane e2e tests "${other_e2e[@]}"
wait_lanes

step "control plane down"
down
trap - EXIT

step "the README's operator quick start (make dev, kubectl get iotmon, make cluster-down)"
cargo test --workspace --test quick_start || rc=$?

step "done in $(( $(date +%s) - t0 )) s (exit $rc)"
exit "$rc"
