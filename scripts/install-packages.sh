#!/usr/bin/env bash
# Installs the Debian packages the tests, the benchmarks and `make run` need, and only those that
# are missing: influxdb (InfluxDB 1.x server) and influxdb-client (the `influx` CLI the
# operator's InfluxDB set-up script uses, tested against a real influxd), libcoap3-bin (libcoap's
# coap-client, the independent CoAP peer of the interoperability test), openssl, curl, iproute2
# (ss), python3 and time (/usr/bin/time: CPU and peak RSS in the benchmarks).
# The local Kubernetes control plane is built separately (tests/cluster/build.sh, `make
# control-plane`): only the operator's tests, the operator benchmark and `make dev` need it.
# Idempotent: a second run checks and prints, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[packages] %s\n' "$*" >&2; }

packages=(influxdb influxdb-client libcoap3-bin openssl curl iproute2 python3 time)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  # policy-rc.d may forbid starting services here; the packages' own daemons are not wanted anyway:
  # tests start their own InfluxDB on free ports.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
else
  say "Debian packages present: ${packages[*]}"
fi

command -v cargo >/dev/null || { say "Rust is required (cargo 1.89+)"; exit 1; }
