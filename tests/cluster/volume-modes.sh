#!/usr/bin/env bash
# Makes the default StorageClass's volumes writable by non-root pods on the real node, as kind's
# default class (local-path, `mkdir -m 0777`) does. The default class `standard` is
# kube-controller-manager's own hostPath provisioner, the only one that serves kwok's simulated
# nodes too; it makes each volume a directory of mode 0750 owned by root, which a pod running under
# the `restricted` Pod Security Standard cannot write, and fsGroup does not apply to hostPath
# volumes. InfluxDB on the real node then crash-looped with
#   run: create server: mkdir all: mkdir /var/lib/influxdb/meta: permission denied
# node.sh starts this loop with the real node and stops it with the rest of the node.
#
# Polled, not watched: the directory exists once the claim is bound, before its pod is even
# scheduled, so a sweep every half second is always ahead of a container start.
set -u
root=${1:-/tmp/hostpath_pv}
while :; do
  if [ -d "$root" ]; then
    find "$root" -mindepth 1 -maxdepth 1 -type d ! -perm -0777 -exec chmod 0777 {} + 2>/dev/null
  fi
  sleep 0.5
done
