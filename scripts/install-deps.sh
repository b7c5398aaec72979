#!/usr/bin/env bash
# Installs what the tests, benchmarks and `make run` need, and only what is missing:
#   - Debian packages: influxdb (InfluxDB 1.x server) and influxdb-client (the `influx` CLI the
#     operator's InfluxDB set-up script uses, tested against a real influxd), libcoap3-bin (libcoap's coap-client, the
#     independent CoAP peer of the interoperability test), openssl, curl, iproute2 (ss, ip), time
#     (/usr/bin/time: CPU and peak RSS in the benchmarks);
#     umoci, skopeo, busybox-static, binutils and runc for `make images` (images/build.sh) and
#     for running the images in tests;
#   - the local cluster's real node: containerd and runc (the container runtime),
#     containernetworking-plugins (bridge, host-local, portmap, loopback), iptables (kube-proxy),
#     socat (the node's path to the loopback-only API server), util-linux (nsenter);
#   - the local control plane's binaries, built from Go modules into ~/.cache/iot-operator
#     (tests/cluster/build.sh; the first build takes several minutes).
# Idempotent: a second run checks and prints, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[deps] %s\n' "$*" >&2; }

packages=(influxdb influxdb-client libcoap3-bin openssl curl iproute2 python3 time
  umoci skopeo busybox-static binutils runc
  containerd containernetworking-plugins iptables socat util-linux)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  # policy-rc.d may forbid starting services here; the packages' own daemons are not wanted anyway:
  # tests start their own InfluxDB on free ports, and the local cluster its own containerd.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  say "Debian packages present: ${packages[*]}"
fi

command -v go >/dev/null || { say "Go is required to build the control plane (go 1.26+)"; exit 1; }
command -v cargo >/dev/null || { say "Rust is required (cargo 1.89+)"; exit 1; }
tests/cluster/build.sh
