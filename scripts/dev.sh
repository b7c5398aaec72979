#!/usr/bin/env bash
# `make dev`: try the project without a cluster of your own. Brings the local control plane up
# (tests/cluster/up.sh; harmless when it already runs), then - once the operator exists - installs the
# CRD, runs the operator against it, applies examples/iotmonitor.yaml and shows what it built.
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
kubectl get nodes >&2

# ---- OPERATOR STEPS: not written yet, because the operator cannot run yet -------------------------
# When `iot-operator run` exists, this is where make dev will:
#   1. install the CRD:   kubectl apply --server-side -f crds/iotmonitor.yaml
#                         kubectl wait --for=condition=Established crd/<iotmonitors CRD name>
#   2. run the operator:  cargo build -p iot-operator, start `iot-operator run` in the background
#                         with KUBECONFIG set, its PID and log under .run/ (stopped by make cluster-down)
#   3. apply the sample:  kubectl apply -f examples/iotmonitor.yaml
#   4. show the result:   kubectl get iotmonitors; kubectl get all,pvc,hpa,configmap,secret -l <our labels>
say "the operator does not exist yet, so make dev stops here: the control plane is up and empty"
# ---- end of operator steps -----------------------------------------------------------------------

say "use the cluster with the line below; stop it with: make cluster-down"
echo "$export_line"
