#!/usr/bin/env bash
# Restarts one component of a running local cluster, as a kubelet upgrade or crash would on a real
# node: the pods' containers keep running, and the new kubelet takes them over.
#
#   tests/cluster/restart.sh kubelet
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
*)
  echo "usage: $0 kubelet" >&2
  exit 2
  ;;
esac
