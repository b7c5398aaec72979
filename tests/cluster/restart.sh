#!/usr/bin/env bash
# Restarts one component of a running local cluster, as a kubelet upgrade or crash would on a real
# node: the pods' containers keep running, and the new kubelet takes them over.
#
#   tests/cluster/restart.sh kubelet
#   tests/cluster/restart.sh network-policy off|on   stop the NetworkPolicy engine and remove its rules,
#                                                    or start it again (the benchmark's side-by-side run)
#
# Uses the same state directory as up.sh (IOT_CLUSTER_DIR) and waits until the node is Ready again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lock
TIMEOUT=${IOT_CLUSTER_TIMEOUT:-120}
t0=$(date +%s)
die() { say "ERROR: $*"; exit 1; }
[ -f "$MARKER" ] || die "no cluster in $STATE (start one with tests/cluster/up.sh)"

case ${1:-} in
kubelet)
  slot=$(node_recorded_slot) || die "the cluster in $STATE has no real node"
  node_vars "$slot"
  pid_of kubelet >/dev/null || die "the real node's kubelet is not running"
  stop kubelet
  node_start_kubelet
  ;;
network-policy)
  slot=$(node_recorded_slot) || die "the cluster in $STATE has no real node"
  node_vars "$slot"
  case ${2:-} in
  off) node_stop_network_policy ;;
  on) pid_of kube-router >/dev/null || node_start_network_policy ;;
  *) die "usage: $0 network-policy off|on" ;;
  esac
  ;;
*)
  echo "usage: $0 kubelet | network-policy off|on" >&2
  exit 2
  ;;
esac
