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

step "build"
cargo build --workspace --all-targets

step "images"
# The image tests (tests/images) fail instead of skipping when a tool they need is missing.
export IOT_REQUIRE_IMAGES=1
images/build.sh

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
  images/build.sh --load iot-operator coap-server sensor-sim aqi-ingestor influxdb
fi

step "tests"
rc=0
# The README's quick start starts a whole cluster of its own: it runs below, alone.
cargo test --workspace --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" \
  --skip readme_operator_quick_start || rc=$?

step "control plane down"
down
trap - EXIT

step "the README's operator quick start (make dev, kubectl get iotmon, make cluster-down)"
cargo test -p iot-e2e --test quick_start -- readme_operator_quick_start || rc=$?

step "done in $(( $(date +%s) - t0 )) s (exit $rc)"
exit "$rc"
