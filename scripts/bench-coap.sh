#!/usr/bin/env bash
# CoAP ingest benchmark: sensor-sim's load mode → coap-server → a real InfluxDB, all release
# builds on loopback. Reports acknowledged readings/s, ack latency percentiles, zero loss verified
# by counting the points in InfluxDB, and the peak RSS of coap-server and sensor-sim.
#
#   BENCH_COUNT (default 500000)  BENCH_CONNECTIONS (16)  BENCH_WINDOW (128)  BENCH_BATCH (1000, the server default)
#   SERVER_THREADS (coap-server runtime threads, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/influxd.sh
. scripts/lib/influxd.sh
COUNT=${BENCH_COUNT:-500000}; CONNS=${BENCH_CONNECTIONS:-16}; WINDOW=${BENCH_WINDOW:-128}
BATCH=${BENCH_BATCH:-1000}
say() { printf '[bench-coap] %s\n' "$*" >&2; }

cargo build -q --release -p coap-server -p sensor-sim
BIN=$PWD/target/release
RUN=$(mktemp -d /tmp/iot-bench-coap.XXXXXX)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  stop_influxd; rm -rf "$RUN"
}
trap cleanup EXIT

start_influxd "$RUN/influxdb"
port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn TOKIO_WORKER_THREADS=${SERVER_THREADS:-2} "$BIN/coap-server" --bind "127.0.0.1:$port" --http-addr 127.0.0.1:0 \
  --influx-url "$INFLUX_URL" --batch-size "$BATCH" --queue-capacity 200000 >"$RUN/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do influx_query "$INFLUX_URL" dht 'SHOW MEASUREMENTS' >/dev/null 2>&1 && \
  influx_query "$INFLUX_URL" '' 'SHOW DATABASES' | grep -q '"dht"' && break; sleep 0.1; done

say "$COUNT readings over $CONNS connections × window $WINDOW, batches of $BATCH"
# Peak RSS of sensor-sim: the maximum resident size of a waited-for child, from getrusage.
python3 - "$BIN/sensor-sim" "$port" "$COUNT" "$CONNS" "$WINDOW" > "$RUN/summary.json" <<'PY'
import resource, subprocess, sys, json
bin, port, count, conns, window = sys.argv[1:]
p = subprocess.run([bin, "load", "--server", f"127.0.0.1:{port}", "--count", count,
                    "--connections", conns, "--window", window, "--json"],
                   stdout=subprocess.PIPE, env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"})
summary = json.loads(p.stdout)
summary["sim_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
summary["exit_code"] = p.returncode
print(json.dumps(summary))
PY
server_rss=$(awk '/VmHWM/ {print $2/1024}' "/proc/$server/status")
stored=$(influx_count "$INFLUX_URL" dht temperature value)
python3 - "$RUN/summary.json" "$stored" "$server_rss" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); stored = int(sys.argv[2]); rss = float(sys.argv[3])
print(f"readings sent      {s['readings']}")
print(f"acked              {s['acked']}  (failed {s['failed']}, retransmissions {s['retransmissions']}, 5.03 {s['unavailable']})")
print(f"stored in InfluxDB {stored}  -> {'zero loss' if stored == s['acked'] == s['readings'] else 'MISMATCH'}")
print(f"throughput         {s['acked_per_sec']:.0f} acked readings/s over {s['elapsed_secs']:.2f} s")
print(f"ack latency        p50 {s['latency_ms_p50']:.2f} ms  p99 {s['latency_ms_p99']:.2f} ms  max {s['latency_ms_max']:.2f} ms")
print(f"peak RSS           coap-server {rss:.1f} MB   sensor-sim {s['sim_peak_rss_mb']:.1f} MB")
sys.exit(0 if stored == s['acked'] == s['readings'] else 1)
PY
