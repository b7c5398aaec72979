#!/usr/bin/env bash
# Installs the Debian packages the tests, the benchmarks and `make run` need, and only those that
# are missing: influxdb (InfluxDB 1.x server) and influxdb-client (the `influx` CLI the
# operator's InfluxDB set-up script uses, tested against a real influxd), libcoap3-bin (libcoap's
# coap-client-notls and coap-client-openssl, the independent CoAP and CoAP-over-DTLS peers of the
# interoperability tests), libssl-dev and pkg-config (the DTLS clients link the system's OpenSSL),
# cmake and libclang-dev (coap-server's DTLS, Mbed TLS, is compiled from the crate's sources and
# its bindings generated with libclang),
# openssl, curl, iproute2
# (ss, ip), python3 and time (/usr/bin/time: CPU and peak RSS in the benchmarks); umoci, skopeo,
# busybox-static, binutils and runc for `make images` (images/build.sh) and for running the images
# in tests; and for the local cluster's real node: containerd and runc (the container runtime),
# containernetworking-plugins (bridge, host-local, portmap, loopback), iptables (kube-proxy),
# socat (the node's path to the loopback-only API server), util-linux (nsenter), ipset (kube-router's
# NetworkPolicy firewall on the real node); shellcheck, which actionlint runs on the workflows' shell
# steps (`make test`, `make lint`).
# The local Kubernetes control plane is built separately (tests/cluster/build.sh, `make
# control-plane`): only the operator's tests, the operator benchmark and `make dev` need it.
# Idempotent: a second run checks and prints, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[packages] %s\n' "$*" >&2; }

packages=(influxdb influxdb-client libcoap3-bin libssl-dev pkg-config cmake libclang-dev openssl curl iproute2 python3 time
  umoci skopeo busybox-static binutils runc
  containerd containernetworking-plugins iptables socat util-linux ipset shellcheck)
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

command -v cargo >/dev/null || { say "Rust is required (cargo 1.89+)"; exit 1; }
