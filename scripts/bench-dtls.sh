#!/usr/bin/env bash
# DTLS benchmark, release builds on loopback (the readings/s of DTLS beside plaintext are in
# bench-coap.sh's table, mode "dtls"):
#   1. full PSK handshakes per second (each from a new port, with the cookie exchange), the same
#      client (coap-server's example `dtls_handshakes`, BENCH_HS_THREADS threads) against
#      coap-server and against libcoap's coap-server-openssl, one after the other;
#   2. what the registry costs: coap-server's RSS with DTLS on and no devices, then with
#      BENCH_DEVICES registered devices;
#   3. what sessions cost: its RSS with one established session per device (BENCH_DEVICES of
#      them, held open by the client, the session table raised to hold them all), and the bytes
#      per idle session; then the same fleet against the default table (1,000 sessions, the
#      quietest evicted when full), whose RSS stays bounded.
# The table goes to stdout and, between its markers, into docs/benchmarks.md.
#
#   BENCH_DEVICES (10000)  BENCH_HS_SECONDS (5)  BENCH_HS_THREADS (8)  BENCH_DOC (docs/benchmarks.md)
set -euo pipefail
# shellcheck source=lib/doc-table.sh
. "$(dirname "$0")/lib/doc-table.sh"
cd "$(dirname "$0")/.."
DEVICES=${BENCH_DEVICES:-10000}; HS_SECONDS=${BENCH_HS_SECONDS:-5}; HS_THREADS=${BENCH_HS_THREADS:-8}
DOC=${BENCH_DOC-docs/benchmarks.md}
say() { printf '[bench-dtls] %s\n' "$*" >&2; }
command -v coap-server-openssl >/dev/null || { echo "needs coap-server-openssl (Debian's libcoap3-bin)" >&2; exit 1; }

cargo build -q --release -p coap-server --example dtls_handshakes
BIN=$PWD/target/release
RUN=$(mktemp -d /tmp/iot-bench-dtls.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$RUN"
}
trap cleanup EXIT
free_udp() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rss_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
key() { head -c 24 /dev/urandom | base64 | tr '+/' '-_'; }

# A server with the devices file $1 (and more flags) on a free port; sets $server and $port.
start_server() {
  port=$(free_udp)
  local file=$1; shift
  RUST_LOG=warn "$BIN/coap-server" --devices-file "$file" --dtls-bind "127.0.0.1:$port" \
    --http-addr 127.0.0.1:0 --influx-url http://127.0.0.1:9 --create-database false "$@" \
    >>"$RUN/server.log" 2>&1 &
  server=$!; pids+=("$server")
  for _ in $(seq 1 50); do ss -uln | grep -q ":$port " && return 0; sleep 0.1; done
  say "coap-server did not start:"; tail -n 20 "$RUN/server.log" >&2; exit 1
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

bench_key=$(key)
printf 'bench bench %s\n' "$bench_key" >"$RUN/one.txt"
: >"$RUN/none.txt"
say "writing $DEVICES devices"
for i in $(seq 1 "$DEVICES"); do printf 'dev-%d place-%d %s\n' "$i" $((i % 50)) "$(key)"; done >"$RUN/fleet.txt"

# 1. Handshakes per second.
start_server "$RUN/one.txt"
cpu0=$(awk '{print $14 + $15}' "/proc/$server/stat")
ours=$("$BIN/examples/dtls_handshakes" rate --server "127.0.0.1:$port" --identity bench --key "$bench_key" \
  --seconds "$HS_SECONDS" --threads "$HS_THREADS")
cpu1=$(awk '{print $14 + $15}' "/proc/$server/stat")
ours_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" -v l="$ours" 'BEGIN {
  split(l, f, /[ =]/); n = f[2]; printf "%.0f", (b - a) / hz * 1e6 / (n > 0 ? n : 1)}')
stop "$server"
say "coap-server: $ours ($ours_cpu µs of server CPU each)"
lport=$(free_udp)
coap-server-openssl -A 127.0.0.1 -p "$lport" -k "$bench_key" -v 0 >"$RUN/libcoap.log" 2>&1 &
libcoap=$!; pids+=("$libcoap"); sleep 1
cpu0=$(awk '{print $14 + $15}' "/proc/$libcoap/stat")
theirs=$("$BIN/examples/dtls_handshakes" rate --server "127.0.0.1:$((lport + 1))" --identity bench \
  --key "$bench_key" --seconds "$HS_SECONDS" --threads "$HS_THREADS")
cpu1=$(awk '{print $14 + $15}' "/proc/$libcoap/stat")
theirs_cpu=$(awk -v a="$cpu0" -v b="$cpu1" -v hz="$(getconf CLK_TCK)" -v l="$theirs" 'BEGIN {
  split(l, f, /[ =]/); n = f[2]; printf "%.0f", (b - a) / hz * 1e6 / (n > 0 ? n : 1)}')
stop "$libcoap"
say "coap-server-openssl: $theirs ($theirs_cpu µs of server CPU each)"

# 2. The registry's cost.
start_server "$RUN/none.txt"; sleep 1; rss_none=$(rss_mb "$server"); stop "$server"
ulimit -n $((DEVICES + 1024)) 2>/dev/null || true
# hold_fleet FLAGS...: a server with the fleet, its RSS, then every device holding a session;
# sets rss_fleet, kb_fleet, held, rss_sessions, kb_sessions.
hold_fleet() {
  start_server "$RUN/fleet.txt" "$@"; sleep 1
  rss_fleet=$(rss_mb "$server"); kb_fleet=$(rss_kb "$server")
  : >"$RUN/hold.out"
  "$BIN/examples/dtls_handshakes" hold --server "127.0.0.1:$port" --devices-file "$RUN/fleet.txt" \
    --sessions "$DEVICES" >"$RUN/hold.out" 2>&1 &
  holder=$!; pids+=("$holder")
  for _ in $(seq 1 600); do grep -q '^held=' "$RUN/hold.out" && break; sleep 0.5; done
  held=$(sed -n 's/^held=\([0-9]*\).*/\1/p' "$RUN/hold.out")
  sleep 2 # the server's timer gives idle sessions' buffers back once a second
  rss_sessions=$(rss_mb "$server"); kb_sessions=$(rss_kb "$server")
  stop "$holder"; stop "$server"
}
hold_fleet --dtls-max-sessions "$DEVICES"
say "RSS: no devices $rss_none MB, $DEVICES devices $rss_fleet MB"
per_session=$(awk -v a="$kb_fleet" -v b="$kb_sessions" -v n="${held:-0}" 'BEGIN {printf "%.0f", (b - a) * 1024 / (n > 0 ? n : 1)}')
say "RSS with $held sessions: $rss_sessions MB ($per_session bytes per idle session)"
all_sessions=$rss_sessions; all_held=$held
hold_fleet
say "RSS with the default table after $held handshakes: $rss_sessions MB"

table=$(
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), \`scripts/bench-dtls.sh\`, OpenSSL $(openssl version | cut -d' ' -f2), load average at start $(cut -d' ' -f1 /proc/loadavg)."
  echo
  echo "| what | coap-server | libcoap coap-server-openssl |"
  echo "|---|---|---|"
  echo "| full PSK handshakes/s ($HS_THREADS client threads, ${HS_SECONDS} s, new port each) | **$(echo "$ours" | sed 's/.*per_second=//')** ($(echo "$ours" | sed 's/ seconds.*//')) | $(echo "$theirs" | sed 's/.*per_second=//') ($(echo "$theirs" | sed 's/ seconds.*//')) |"
  echo "| server CPU per handshake | $ours_cpu µs | $theirs_cpu µs |"
  echo
  echo "| coap-server RSS | MB |"
  echo "|---|---|"
  echo "| DTLS on, no devices | $rss_none |"
  echo "| $DEVICES registered devices | $rss_fleet |"
  echo "| $DEVICES registered devices, ${all_held:-0} established sessions at once (one per device, --dtls-max-sessions $DEVICES) | **$all_sessions** |"
  echo "| per idle session | $per_session bytes |"
  echo "| the same fleet, default table (1,000 sessions, the quietest evicted) | $rss_sessions |"
)
echo "$table"
write_doc_table "$DOC" bench-dtls "$table"
