#!/usr/bin/env bash
# `make load-test`: the reference scaling experiment, recorded. The reference policy, unchanged
# (the CRD's defaults: 1–5 replicas, out above 60 % CPU for 180 s, in below 42 % for 900 s, one
# step per 150 s), on the local control plane, with coap-server, InfluxDB and the load on the real
# node. `iot-loadtest --target coap` loads it for LOAD_SECONDS, then records until the HPA
# is back at one replica (at most SETTLE_SECONDS), and docs/autoscaling.md is rewritten from the
# recorded timeline (LOAD_TEST_OUT/timeline.csv; the plot is copied to docs/autoscaling/). About 30 minutes; bounded
# by LOAD_SECONDS + SETTLE_SECONDS + 2 min. Not part of `make test`.
#
# Knobs: LOAD_SECONDS (480), SETTLE_SECONDS (1500), LOAD_RATE readings/s (100), LOAD_DEVICES (32:
# devices over DTLS, each reading from a new source port, so that it spreads over the pods), COAP_CPU_REQUEST
# (10m: small, so a modest load on this 2-core machine is well above 60 % of it),
# LOAD_TEST_OUT (target/load-test), IOT_CLUSTER_DIR (.run/load-test-cluster; a running cluster
# there is reused and left running, one started here is stopped at the end).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '[load-test %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

LOAD_SECONDS=${LOAD_SECONDS:-480}
SETTLE_SECONDS=${SETTLE_SECONDS:-1500}
LOAD_RATE=${LOAD_RATE:-100}
LOAD_DEVICES=${LOAD_DEVICES:-32}
COAP_CPU_REQUEST=${COAP_CPU_REQUEST:-10m}
OUT=${LOAD_TEST_OUT:-$repo/target/load-test}
export IOT_CLUSTER_DIR=${IOT_CLUSTER_DIR:-$repo/.run/load-test-cluster}
ns=load-test

say "building the operator, the load-test tool and the images of the stack"
# The debug build: the operator and the recorder do little work a second, and it is the build
# the tests keep warm.
cargo build -q -p iot-operator -p iot-loadtest
op_bin=$repo/target/debug/iot-operator
loadtest_bin=$repo/target/debug/iot-loadtest

started_here=0
if [ ! -s "$IOT_CLUSTER_DIR/kubeconfig" ]; then started_here=1; fi
say "starting the local control plane in $IOT_CLUSTER_DIR (kept if it already runs)"
eval "$(tests/cluster/up.sh)"
bin=$(tests/cluster/build.sh --print)
kubectl() { "$bin/kubectl" --cache-dir="$IOT_CLUSTER_DIR/kube-cache" "$@"; }
# shellcheck source=lib/crd.sh
. scripts/lib/crd.sh
images/build.sh --load coap-server sensor-sim influxdb

op_pid=
cleanup() {
  [ -n "$op_pid" ] && kill "$op_pid" 2>/dev/null || true
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  if [ "$started_here" = 1 ]; then tests/cluster/down.sh || true; fi
}
trap cleanup EXIT

say "CRD, namespace $ns, the operator (log: $IOT_CLUSTER_DIR/load-test-operator.log)"
install_crd 60
kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >&2
WATCH_NAMESPACE=$ns LEADER_ELECTION=false HTTP_ADDR=127.0.0.1:0 \
  "$op_bin" run >"$IOT_CLUSTER_DIR/load-test-operator.log" 2>&1 &
op_pid=$!

real="nodeSelector: {iot-operator.dev/node: real}, tolerations: [{key: iot-operator.dev/real-node, operator: Exists, effect: NoSchedule}]"
influx_image=$(images/build.sh --ref influxdb)
# spec.autoscaling is left out: its defaults are the reference policy. Plain CoAP stays closed:
# the load is devices over DTLS.
kubectl apply -n "$ns" -f - >&2 <<YAML
apiVersion: iot.operator.dev/v1alpha1
kind: IotMonitor
metadata: {name: lab}
spec:
  influxdb: {image: $influx_image, storage: {size: 256Mi, storageClassName: local-path}, $real}
  coap: {resources: {cpuRequest: $COAP_CPU_REQUEST}, $real}
  simulator: {enabled: false, $real}
  aqi: {enabled: false}
YAML
say "waiting for the stack to be Ready"
kubectl wait -n "$ns" --for=condition=Ready --timeout=600s iotmonitor/lab >&2
kubectl get iotmon -n "$ns" >&2

profile=$(mktemp)
printf 'coap:\n  rate: %s\n  durationSeconds: %s\n  sockets: 4\n  window: 4\n' \
  "$LOAD_RATE" "$LOAD_SECONDS" >"$profile"
say "load: $LOAD_RATE readings/s from $LOAD_DEVICES devices for $LOAD_SECONDS s, then recording until back at 1 replica (at most $SETTLE_SECONDS s)"
rc=0
"$loadtest_bin" --monitor lab --namespace "$ns" --target coap --profile "$profile" \
  --devices "$LOAD_DEVICES" --duration "$LOAD_SECONDS" --settle "$SETTLE_SECONDS" \
  --until-scaled-in --out "$OUT" || rc=$?
rm -f "$profile"
say "iot-loadtest exit status $rc (2: a latency threshold missed; the timeline is still written)"
[ -s "$OUT/timeline.csv" ] || { say "no timeline recorded"; exit 1; }

mkdir -p docs/autoscaling
cp "$OUT/timeline.png" "$OUT/timeline.svg" docs/autoscaling/
scripts/autoscaling-doc.sh "$OUT/timeline.csv" "$LOAD_RATE" "$LOAD_SECONDS" "$COAP_CPU_REQUEST" \
  "$LOAD_DEVICES" >docs/autoscaling.md
say "wrote docs/autoscaling.md and docs/autoscaling/timeline.{png,svg} (the CSV: $OUT/timeline.csv)"
