#!/usr/bin/env bash
# `make run`: the reference "local server" deployment as plain processes — InfluxDB, coap-server,
# sensor-sim and aqi-ingestor — then shows readings landing every few seconds until Ctrl-C.
# The sensors are devices: each has a key (in $RUN/devices.txt, made once and kept), the simulator
# sends over DTLS (coaps://, port COAP_PORT+1), and a device `desk-1` is registered for you to try
# with libcoap. Plaintext coap:// stays open on loopback only, beside DTLS.
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
COAPS_PORT=$((COAP_PORT + 1))
SIM_SENSORS=${SIM_SENSORS:-4}
IFS=, read -r -a places <<<"${SIM_PLACES:-room1,kitchen}"
# The device registry: NAME PLACE KEY. Keys are made once (24 random bytes, printable) and kept,
# so a sensor configured with one keeps working across runs.
key() { head -c 24 /dev/urandom | base64 | tr '+/' '-_'; }
devices=$RUN/devices.txt keys=$RUN/keys
touch "$devices"; mkdir -p "$keys"; chmod 700 "$keys"; chmod 600 "$devices"
register() { # NAME PLACE: adds the device unless it is there
  grep -q "^$1 " "$devices" || printf '%s %s %s\n' "$1" "$2" "$(key)" >>"$devices"
}
register desk-1 desk
for i in $(seq 1 "$SIM_SENSORS"); do register "sim-$i" "${places[$(((i - 1) % ${#places[@]}))]}"; done
# The simulator reads each sensor's key from a file named after it, as from a mounted Secret.
while read -r name _ k; do printf '%s' "$k" >"$keys/$name"; done <"$devices"
"$BIN/coap-server" --bind "127.0.0.1:$COAP_PORT" --plaintext true --devices-file "$devices" \
  --dtls-bind "127.0.0.1:$COAPS_PORT" --http-addr 127.0.0.1:0 >"$RUN/coap-server.log" 2>&1 &
pids+=($!)
say "coap-server coaps://127.0.0.1:$COAPS_PORT for $(wc -l <"$devices") devices ($devices), coap://127.0.0.1:$COAP_PORT (loopback) (log $RUN/coap-server.log)"

SIM_SENSORS=$SIM_SENSORS SIM_PLACES=${SIM_PLACES:-room1,kitchen} \
  "$BIN/sensor-sim" --server "127.0.0.1:$COAPS_PORT" --keys-dir "$keys" --http-addr 127.0.0.1:0 \
  >"$RUN/sensor-sim.log" 2>&1 &
pids+=($!)
say "sensor-sim: $SIM_SENSORS sensors (sim-1…) over DTLS every ${SIM_INTERVAL_SECONDS:-5} s (log $RUN/sensor-sim.log)"

AQI_SOURCE=${AQI_SOURCE:-$PWD/workloads/aqi-ingestor/tests/fixtures/basecamp_ml_luftdaten_v1_data_2019-04-16.wrapped.json}
"$BIN/aqi-ingestor" --source "$AQI_SOURCE" --http-addr 127.0.0.1:0 >"$RUN/aqi-ingestor.log" 2>&1 &
pids+=($!)
say "aqi-ingestor from $AQI_SOURCE (log $RUN/aqi-ingestor.log)"
say "try, as the device desk-1 over DTLS:"
say "  coap-client-openssl -u desk-1 -k $(awk '$1 == "desk-1" {print $3}' "$devices") -m post -e 23.4 coaps://127.0.0.1:$COAPS_PORT/sensors/dht/temperature"
say "or anonymously over plaintext (loopback only):"
say "  coap-client-notls -m post -e 23.4 'coap://127.0.0.1:$COAP_PORT/sensors/dht/temperature?place=desk'"
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
