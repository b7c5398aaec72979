#!/usr/bin/env bash
# `make dev`: try the project without a cluster of your own. Brings the local control plane up
# (tests/cluster/up.sh; harmless when it already runs), installs the CRD, runs the operator against it
# (restarting one an earlier `make dev` started), applies examples/iotmonitor.yaml and shows what it built.
# Ends with the `export KUBECONFIG=...` line to keep using the cluster; `make cluster-down` stops it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

say() { printf '[dev %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

say "starting the local Kubernetes control plane"
export_line=$(tests/cluster/up.sh)
eval "$export_line"
bin=$(tests/cluster/build.sh --print)
kubectl() { "$bin/kubectl" --cache-dir="$(dirname "$KUBECONFIG")/kube-cache" "$@"; }
# shellcheck source=lib/crd.sh
. scripts/lib/crd.sh
kubectl get nodes >&2

# ---- the operator -------------------------------------------------------------------------------
state=$(dirname "$KUBECONFIG")
say "installing the IotMonitor CRD"
install_crd 60

say "building and starting the operator (log: $state/logs/operator.log)"
cargo build -q -p iot-operator
op_bin=$repo/target/debug/iot-operator
pidfile=$state/pids/operator.pid
if [ -f "$pidfile" ] && read -r old _ <"$pidfile" && kill -0 "$old" 2>/dev/null; then
  say "stopping the operator started earlier (PID $old)"
  kill "$old"; while kill -0 "$old" 2>/dev/null; do sleep 0.2; done
fi
mkdir -p "$state/logs" "$state/pids"
# One replica here, so no leader election; the cluster's down.sh stops it with the rest.
LEADER_ELECTION=false HTTP_ADDR=127.0.0.1:0 nohup "$op_bin" run >"$state/logs/operator.log" 2>&1 &
echo "$! $(readlink -f "$op_bin")" >"$pidfile"

say "applying examples/iotmonitor.yaml"
kubectl apply -f examples/iotmonitor.yaml >&2
name=$(kubectl get -f examples/iotmonitor.yaml -o jsonpath='{.metadata.name}')
ns=$(kubectl get -f examples/iotmonitor.yaml -o jsonpath='{.metadata.namespace}')
ns=${ns:-default}
say "waiting for IotMonitor $ns/$name to become Ready (pods run on kwok's simulated nodes)"
ready=1
if ! kubectl wait --for=condition=Ready --timeout=180s -n "$ns" "iotmonitor/$name" >&2; then
  ready=0
  say "not Ready after 180 s; the operator's log ends with:"; tail -n 20 "$state/logs/operator.log" >&2
fi
kubectl get iotmonitors -A >&2
kubectl get statefulsets,deployments,services,hpa,pvc,configmaps,secrets,networkpolicies,serviceaccounts,roles,rolebindings \
  -n "$ns" -l app.kubernetes.io/managed-by=iot-operator >&2
# ---- end of operator steps -----------------------------------------------------------------------

say "use the cluster with the line below; stop it with: make cluster-down"
echo "$export_line"
if [ "$ready" = 0 ]; then
  say "ERROR: IotMonitor $ns/$name did not become Ready (kubectl describe iotmonitor $name says why)"
  exit 1
fi
