#!/usr/bin/env bash
# `make bench`: every benchmark; figures and commands are recorded in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== CoAP ingest (scripts/bench-coap.sh)"
scripts/bench-coap.sh
if [ -x scripts/bench-aqi.sh ]; then
  echo; echo "== AQI processing (scripts/bench-aqi.sh)"
  scripts/bench-aqi.sh
fi
