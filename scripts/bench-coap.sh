#!/usr/bin/env bash
# CoAP ingest benchmark: `sensor-sim load` with ONE socket and a FIXED window of outstanding
# confirmable requests → coap-server → a real InfluxDB, release builds on loopback. For each
# server configuration and window: acknowledged readings/s, ack latency percentiles, zero loss
# (points counted in InfluxDB against readings sent and acknowledged), write requests and readings
# per write, CPU seconds of sensor-sim, coap-server and influxd (and their sum per acknowledged
# reading), the load average when the run started and the share of CPU time the hypervisor gave
# to other guests during the run ("stolen": on a shared VM the throughput moves with it). The
# table goes to stdout and, between its markers, into docs/benchmarks.md.
#
#   BENCH_WINDOWS ("1 64 1024")  BENCH_SECONDS (10, per run)  BENCH_SOCKETS (1)
#   BENCH_MODES ("adaptive dtls l0k4 linger20 fixed20")  SERVER_THREADS (coap-server runtime threads, default 2)
#   BENCH_DOC (docs/benchmarks.md; empty: do not write it)
#   BENCH_BEFORE_BIN (a directory with another build's coap-server and sensor-sim, e.g. of an
#   earlier commit: each mode then runs with it as well, right after, in rows marked "before")
# Modes: adaptive = the server's defaults; dtls = the same over DTLS 1.2 with a pre-shared key
# (coaps://, plaintext closed, one registered device per window: its place); linger20 = adaptive with BATCH_LINGER_MS=20 (what the
# operator's default spec sets); fixed20 = --batch-linger-ms 20 --batch-fixed-linger, the fixed
# linger the server had before adaptive batching; lLkK = --batch-linger-ms L --batch-in-flight K.
set -euo pipefail
# shellcheck source=lib/doc-table.sh
. "$(dirname "$0")/lib/doc-table.sh"
cd "$(dirname "$0")/.."
[ -x /usr/bin/time ] || { echo "bench-coap needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
# shellcheck source=lib/influxd.sh
. scripts/lib/influxd.sh
WINDOWS=${BENCH_WINDOWS:-1 64 1024}; SECONDS_PER_RUN=${BENCH_SECONDS:-10}
SOCKETS=${BENCH_SOCKETS:-1}; MODES=${BENCH_MODES:-adaptive dtls l0k4 linger20 fixed20}
DOC=${BENCH_DOC-docs/benchmarks.md}
say() { printf '[bench-coap] %s\n' "$*" >&2; }

cargo build -q --release -p coap-server -p sensor-sim
BIN=$PWD/target/release
RUN=$(mktemp -d /tmp/iot-bench-coap.XXXXXX)
server=""
stop_server() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  server=""
}
cleanup() { stop_server; stop_influxd; rm -rf "$RUN"; }
trap cleanup EXIT

mode_flags() {
  case $1 in
    adaptive | dtls) ;;
    linger20) echo "--batch-linger-ms 20" ;;
    fixed20) echo "--batch-linger-ms 20 --batch-fixed-linger" ;;
    l[0-9]*k[0-9]*) # lLkK: linger L ms, K writes in flight (for exploring the two knobs)
      local l=${1#l}; echo "--batch-linger-ms ${l%k*} --batch-in-flight ${1#*k}" ;;
    *) echo "unknown mode $1" >&2; return 1 ;;
  esac
}
# steal_ticks: CPU time the hypervisor gave to other guests, and all CPU time, in ticks so far.
steal_ticks() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t}' /proc/stat; }
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# batch_totals HTTP: points written and write requests so far, from coap-server's metrics.
batch_totals() {
  curl -sf "http://$1/metrics" | awk '/^influx_batch_points_sum/ {s=$2} /^influx_batch_points_count/ {c=$2} END {print s+0, c+0}'
}
place_count() {
  influx_query "$INFLUX_URL" dht "SELECT count(value) FROM temperature WHERE place = '$1'" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["results"][0].get("series"); print(s[0]["values"][0][1] if s else 0)'
}

start_influxd "$RUN/influxdb"
say "InfluxDB $(influxd version 2>/dev/null | head -n1) at $INFLUX_URL"
rows=()
rss_note=""
failed=0
runs=()
for mode in $MODES; do
  runs+=("$mode:$BIN")
  # Mode dtls needs a "before" build with a DTLS side (any build since issue 20).
  [ -n "${BENCH_BEFORE_BIN:-}" ] && runs+=("$mode:$(cd "$BENCH_BEFORE_BIN" && pwd):before")
done
n_run=0
for run in "${runs[@]}"; do
  IFS=: read -r mode bin tag <<<"$run"
  n_run=$((n_run + 1))
  label=$mode${tag:+ ($tag)}
  port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  http=127.0.0.1:$(free_port)
  secure=()
  if [ "$mode" = dtls ]; then
    # One device per window, named after the window's place, so each run's points are its own.
    key=$(head -c 24 /dev/urandom | base64 | tr '+/' '-_')
    for w in warmup $WINDOWS; do
      p=bench-$n_run-$mode${tag:+-$tag}-w$w; [ "$w" = warmup ] && p=warmup-$n_run
      printf '%s %s %s\n' "$p" "$p" "$key"
    done >"$RUN/devices-$n_run.txt"
    port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    secure=(--devices-file "$RUN/devices-$n_run.txt" --dtls-bind "127.0.0.1:$port")
  fi
  # as_sender PLACE: sensor-sim's flags to send as PLACE (a device over DTLS, or a query tag).
  as_sender() {
    if [ "$mode" = dtls ]; then echo "--identity $1 --key $key"; else echo "--place $1"; fi
  }
  # shellcheck disable=SC2046
  RUST_LOG=warn TOKIO_WORKER_THREADS=${SERVER_THREADS:-2} "$bin/coap-server" --bind "127.0.0.1:$port" \
    --http-addr "$http" --influx-url "$INFLUX_URL" --queue-capacity 200000 $(mode_flags "$mode") \
    "${secure[@]}" >"$RUN/server-$mode${tag:+-$tag}.log" 2>&1 &
  server=$!
  for _ in $(seq 1 100); do influx_query "$INFLUX_URL" '' 'SHOW DATABASES' | grep -q '"dht"' && break; sleep 0.1; done
  # A short warm-up (connections to InfluxDB, its first shard), not measured.
  # shellcheck disable=SC2046
  RUST_LOG=warn "$bin/sensor-sim" load --server "127.0.0.1:$port" --duration 1 --sockets 1 --window 16 \
    $(as_sender "warmup-$n_run") --json >/dev/null
  for w in $WINDOWS; do
    place="bench-$n_run-$mode${tag:+-$tag}-w$w" # a mode may run twice: each run its own points
    load=$(cut -d' ' -f1 /proc/loadavg)
    cpu_server=$(cpu_secs "$server"); cpu_influx=$(cpu_secs "$INFLUX_PID")
    say "$label: window $w × $SOCKETS socket(s) for ${SECONDS_PER_RUN} s (load average $load)"
    before=$(batch_totals "$http")
    steal0=$(steal_ticks)
    rc=0
    # shellcheck disable=SC2046
    RUST_LOG=warn /usr/bin/time -o "$RUN/$place.time" -f '%U %S %M' "$bin/sensor-sim" load \
      --server "127.0.0.1:$port" --duration "$SECONDS_PER_RUN" --sockets "$SOCKETS" --window "$w" \
      $(as_sender "$place") --drain 60 --json >"$RUN/$place.json" || rc=$?
    cpu_server=$(awk -v a="$cpu_server" -v b="$(cpu_secs "$server")" 'BEGIN {printf "%.1f", b - a}')
    cpu_influx=$(awk -v a="$cpu_influx" -v b="$(cpu_secs "$INFLUX_PID")" 'BEGIN {printf "%.1f", b - a}')
    after=$(batch_totals "$http")
    stolen=$(awk -v a="$steal0" -v b="$(steal_ticks)" 'BEGIN {split(a, x, " "); split(b, y, " ");
      d = y[2] - x[2]; printf "%.0f %%", (d > 0 ? 100 * (y[1] - x[1]) / d : 0)}')
    stored=$(place_count "$place")
    row=$(python3 - "$RUN/$place.json" "$stored" "$label" "$w" "$load" "$cpu_server" "$cpu_influx" "$rc" \
      "$RUN/$place.time" "$before" "$after" "$stolen" <<'PY'
import json, sys
s = json.load(open(sys.argv[1])); stored = int(sys.argv[2])
mode, w, load, cs, ci, rc, timef, before, after, stolen = sys.argv[3:]
user, system, _ = open(timef).read().split()[-3:]
sim = float(user) + float(system)
(p0, n0), (p1, n1) = (map(float, x.split()) for x in (before, after))
writes = int(n1 - n0); per_write = (p1 - p0) / max(writes, 1)
per_reading = (sim + float(cs) + float(ci)) * 1e6 / max(s["acked"], 1)
ok = stored == s["acked"] == s["readings"] and s["failed"] == 0 and rc == "0"
lost = f"0 of {s['readings']:,}" if ok else f"MISMATCH: sent {s['readings']:,}, acked {s['acked']:,}, stored {stored:,}"
print(f"| {mode} | {w} | **{s['acked_per_sec']:,.0f}** | {s['latency_ms_p50']:.2f} / {s['latency_ms_p99']:.2f} / "
      f"{s['latency_ms_max']:.1f} ms | {lost} | {s['retransmissions']} | {writes:,} × {per_write:,.0f} | "
      f"{sim:.1f} / {cs} / {ci} | {per_reading:.1f} µs | {load} / {stolen} |")
sys.exit(0 if ok else 1)
PY
) || failed=1
    say "$row"
    rows+=("$row")
  done
  rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$server/status")
  say "$label: coap-server peak RSS $rss MB"
  rss_note="${rss_note:+$rss_note, }$label $rss MB"
  stop_server
done

table=$(
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)), \`scripts/bench-coap.sh\`: $SOCKETS socket(s), ${SECONDS_PER_RUN} s per run, coap-server with ${SERVER_THREADS:-2} threads."
  echo
  echo "| server | window | acked readings/s | ack latency p50 / p99 / max | lost | retransmissions | writes × readings | CPU s sensor-sim / coap-server / influxd | CPU per reading | load avg at start / CPU stolen |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Peak RSS of coap-server: $rss_note."
)
echo "$table"
write_doc_table "$DOC" bench-coap "$table"
exit "$failed"
