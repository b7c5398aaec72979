#!/usr/bin/env bash
# `make bench`: every benchmark; figures and commands are recorded in docs/benchmarks.md.
# BENCH_ONLY="coap dtls aqi backup operator netpol" picks some of them (default: all; netpol needs root,
# and backup's cpu-limit variants do).
set -euo pipefail
cd "$(dirname "$0")/.."
only=" ${BENCH_ONLY:-coap dtls aqi backup operator netpol} "
if [[ $only == *" coap "* ]]; then
  echo "== CoAP ingest (scripts/bench-coap.sh)"
  scripts/bench-coap.sh
fi
if [[ $only == *" dtls "* ]]; then
  echo; echo "== DTLS handshakes and sessions (scripts/bench-dtls.sh)"
  scripts/bench-dtls.sh
fi
if [[ $only == *" aqi "* ]] && [ -x scripts/bench-aqi.sh ]; then
  echo; echo "== AQI processing (scripts/bench-aqi.sh)"
  scripts/bench-aqi.sh
  echo; echo "== AQI 24-hour windows (scripts/bench-aqi-windows.sh)"
  scripts/bench-aqi-windows.sh
fi
if [[ $only == *" backup "* ]]; then
  echo; echo "== Backup and restore (scripts/bench-backup.sh)"
  scripts/bench-backup.sh
fi
if [[ $only == *" operator "* ]]; then
  echo; echo "== Operator at scale (scripts/bench-operator.sh)"
  scripts/bench-operator.sh
fi
if [[ $only == *" netpol "* ]]; then
  echo; echo "== NetworkPolicies on the real node (scripts/bench-netpol.sh)"
  scripts/bench-netpol.sh
fi
