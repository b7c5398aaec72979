# shellcheck shell=bash
# install_crd [TIMEOUT_SECONDS]: server-side applies crds/iotmonitor.yaml with the caller's `kubectl`
# (a command or shell function) and waits until IotMonitors can be used: the CRD Established, and
# the resource served. The one way dev, load-test and bench-operator install the CRD.
#
# Why not `kubectl wait --for=condition=Established`: it fails at once, instead of waiting, while a
# CRD just created has no status.conditions yet ("<nil> is of the type <nil>"). So the condition is
# polled, and the wait then covers the moment discovery still lags behind Established.

IOT_CRD=iotmonitors.iot.operator.dev

install_crd() {
  local timeout=${1:-60} crd_file deadline established=""
  crd_file="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/crds/iotmonitor.yaml"
  kubectl apply --server-side --force-conflicts -f "$crd_file" >&2 || return 1
  deadline=$((SECONDS + timeout))
  until [ "$established" = True ] && kubectl get "$IOT_CRD" --all-namespaces --request-timeout=5s >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "the CRD $IOT_CRD is not usable after ${timeout}s (Established: ${established:-no status yet})" >&2
      return 1
    fi
    sleep 0.5
    established=$(kubectl get crd "$IOT_CRD" \
      -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null || true)
  done
  echo "the CRD $IOT_CRD is established and served" >&2
}
