#!/usr/bin/env bash
# Stops exactly the processes tests/cluster/up.sh started (by the PIDs it recorded, and only while
# each PID still runs the recorded binary), then removes the state directory. Harmless when nothing
# runs. Set IOT_CLUSTER_KEEP_STATE=1 to keep the state directory (logs, etcd data) for a post-mortem.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lock

if [ ! -e "$STATE" ]; then
  say "nothing to stop: $STATE does not exist"
  exit 0
fi
if [ ! -f "$MARKER" ]; then
  say "$STATE was not made by up.sh: leaving it alone"
  exit 1
fi

# The hostPath provisioner's directories of PVs that still exist (their PVCs were never deleted).
hostpath_dirs=()
if pid_of kube-apiserver >/dev/null; then
  while IFS= read -r d; do
    [[ $d == /tmp/hostpath_pv/* ]] && hostpath_dirs+=("$d")
  done < <(kc get persistentvolumes -o jsonpath='{range .items[*]}{.spec.hostPath.path}{"\n"}{end}' 2>/dev/null || true)
fi

# An operator that `make dev` started against this cluster goes first (it is not a component).
pid_of operator >/dev/null && stop operator
if any_running; then
  stop_all
else
  say "no recorded process is running"
  node_down # mounts, namespace and cgroups outlive a crash of the processes
fi

for d in "${hostpath_dirs[@]+"${hostpath_dirs[@]}"}"; do rm -rf -- "$d"; done
if [ "${IOT_CLUSTER_KEEP_STATE:-0}" = 1 ]; then
  rm -rf "$PIDS"
  say "stopped; state kept in $STATE"
else
  rm -rf --one-file-system "$STATE"
  say "stopped; removed $STATE"
fi
