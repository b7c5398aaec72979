#!/usr/bin/env bash
# `make run`: the reference "local server" deployment as plain processes — InfluxDB, coap-server,
# sensor-sim and aqi-ingestor — then shows readings landing every few seconds until Ctrl-C.
#
#   SIM_SENSORS, SIM_PLACES, SIM_INTERVAL_SECONDS   simulator settings (default 4, room1,kitchen, 5)
#   AQI_SOURCE      24h | 5min | URL | FILE (default: a bundled sample file, since this machine may
#                   be offline; set AQI_SOURCE=24h for the live Sensor.Community feed)
#   COAP_PORT       UDP port of coap-server (default 5683)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/influxd.sh
. scripts/lib/influxd.sh
RUN=$PWD/.run/local
mkdir -p "$RUN"
say() { printf '[run] %s\n' "$*" >&2; }

say "building release binaries (the first time takes minutes)"
cargo build -q --release -p coap-server -p sensor-sim -p aqi-ingestor
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release

pids=()
cleanup() {
  say "stopping"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  stop_influxd
}
trap cleanup EXIT
trap 'exit 0' INT TERM

start_influxd "$RUN/influxdb"
say "InfluxDB $INFLUX_URL (data in $RUN/influxdb, log $RUN/influxdb/influxd.log)"
export INFLUX_URL

COAP_PORT=${COAP_PORT:-5683}
"$BIN/coap-server" --bind "127.0.0.1:$COAP_PORT" --http-addr 127.0.0.1:0 >"$RUN/coap-server.log" 2>&1 &
pids+=($!)
say "coap-server coap://127.0.0.1:$COAP_PORT (log $RUN/coap-server.log)"

SIM_SENSORS=${SIM_SENSORS:-4} SIM_PLACES=${SIM_PLACES:-room1,kitchen} \
  "$BIN/sensor-sim" --server "127.0.0.1:$COAP_PORT" --http-addr 127.0.0.1:0 >"$RUN/sensor-sim.log" 2>&1 &
pids+=($!)
say "sensor-sim: ${SIM_SENSORS:-4} sensors every ${SIM_INTERVAL_SECONDS:-5} s (log $RUN/sensor-sim.log)"

AQI_SOURCE=${AQI_SOURCE:-$PWD/workloads/aqi-ingestor/tests/fixtures/basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json}
"$BIN/aqi-ingestor" --source "$AQI_SOURCE" --http-addr 127.0.0.1:0 >"$RUN/aqi-ingestor.log" 2>&1 &
pids+=($!)
say "aqi-ingestor from $AQI_SOURCE (log $RUN/aqi-ingestor.log)"
say "try: coap-client-notls -m post -e 23.4 'coap://127.0.0.1:$COAP_PORT/sensors/dht/temperature?place=desk'"
say "Ctrl-C stops everything"

while true; do
  sleep 5
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { say "a process exited; see the logs in $RUN"; exit 1; }
  done
  t=$(influx_count "$INFLUX_URL" dht temperature value 2>/dev/null || echo "?")
  h=$(influx_count "$INFLUX_URL" dht humidity value 2>/dev/null || echo "?")
  a=$(influx_count "$INFLUX_URL" aqi air_quality aqi 2>/dev/null || echo "?")
  last=$(influx_query "$INFLUX_URL" dht 'SELECT last(value) FROM temperature GROUP BY place' 2>/dev/null |
    python3 -c 'import json, sys
series = json.load(sys.stdin)["results"][0].get("series", [])
print("  ".join("%s=%s°C" % (s["tags"]["place"], s["values"][0][1]) for s in series))' 2>/dev/null || true)
  printf '[%s] temperature %s  humidity %s  air_quality(aqi) %s   last: %s\n' "$(date +%H:%M:%S)" "$t" "$h" "$a" "$last"
done
