#!/usr/bin/env bash
# DTLS benchmark, release builds on loopback (the readings/s of DTLS beside plaintext are in
# bench-coap.sh's table, mode "dtls"):
#   1. full PSK handshakes per second (each from a new port, with the cookie exchange), the same
#      client (coap-server's example `dtls_handshakes`, BENCH_HS_THREADS threads) against
#      coap-server and against libcoap's coap-server-openssl, one after the other;
#   2. what the registry costs: coap-server's RSS with DTLS on and no devices, then with
#      BENCH_DEVICES registered devices;
#   3. what sessions cost: its RSS with one established session per device (BENCH_DEVICES of
#      them, held open by the client, the session table holding them all), each used once as a
#      device does right after its handshake (a CoAP ping), and the bytes per session; then the
#      same with sessions never used after their handshake.
# With BENCH_BEFORE_BIN (a directory holding another build's coap-server, e.g. the previous
# commit's target/release), 1 to 3 run for that build too, right after this one's, in a column
# of its own (BENCH_BEFORE_LABEL names it).
# The table goes to stdout and, between its markers, into docs/benchmarks.md.
#
#   BENCH_DEVICES (10000)  BENCH_HS_SECONDS (5)  BENCH_HS_THREADS (8)  BENCH_DOC (docs/benchmarks.md)
#   BENCH_BEFORE_BIN  BENCH_BEFORE_LABEL (before)
set -euo pipefail
# shellcheck source=lib/doc-table.sh
. "$(dirname "$0")/lib/doc-table.sh"
cd "$(dirname "$0")/.."
DEVICES=${BENCH_DEVICES:-10000}; HS_SECONDS=${BENCH_HS_SECONDS:-5}; HS_THREADS=${BENCH_HS_THREADS:-8}
DOC=${BENCH_DOC-docs/benchmarks.md}
BEFORE=${BENCH_BEFORE_BIN:-}; BEFORE_LABEL=${BENCH_BEFORE_LABEL:-before}
if [ -n "$BEFORE" ]; then
  [ -d "$BEFORE" ] || BEFORE=$(dirname "$BEFORE")
  [ -x "$BEFORE/coap-server" ] || { echo "BENCH_BEFORE_BIN: no coap-server in $BEFORE" >&2; exit 2; }
  BEFORE=$(cd "$BEFORE" && pwd)
fi
say() { printf '[bench-dtls] %s\n' "$*" >&2; }
command -v coap-server-openssl >/dev/null || { echo "needs coap-server-openssl (Debian's libcoap3-bin)" >&2; exit 1; }

cargo build -q --release -p coap-server --bins --example dtls_handshakes
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

SERVER_BIN=$BIN/coap-server
# A server ($SERVER_BIN) with the devices file $1 (and more flags) on a free port; sets $server and $port.
start_server() {
  port=$(free_udp)
  local file=$1; shift
  RUST_LOG=warn "$SERVER_BIN" --devices-file "$file" --dtls-bind "127.0.0.1:$port" \
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
python3 - "$DEVICES" >"$RUN/fleet.txt" <<'PY'
import base64, os, sys
for i in range(1, int(sys.argv[1]) + 1):
    key = base64.urlsafe_b64encode(os.urandom(24)).decode()
    print(f"dev-{i} place-{i % 50} {key}")
PY

# handshake_rate: handshakes/s against $SERVER_BIN; sets rate and rate_cpu.
handshake_rate() {
  start_server "$RUN/one.txt"
  local cpu0 cpu1
  cpu0=$(awk '{print $14 + $15}' "/proc/$server/stat")
  rate=$("$BIN/examples/dtls_handshakes" rate --server "127.0.0.1:$port" --identity bench --key "$bench_key" \
    --seconds "$HS_SECONDS" --threads "$HS_THREADS")
  cpu1=$(awk '{print $14 + $15}' "/proc/$server/stat")
  rate_cpu=$(cpu_per "$cpu0" "$cpu1" "$rate")
  stop "$server"
}
# cpu_per CPU0 CPU1 LINE: microseconds of CPU per handshake of the client's LINE.
cpu_per() {
  awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" -v l="$3" 'BEGIN {
    split(l, f, /[ =]/); n = f[2]; printf "%.0f", (b - a) / hz * 1e6 / (n > 0 ? n : 1)}'
}

ulimit -n $((DEVICES + 1024)) 2>/dev/null || true
# hold_fleet HOLD_FLAGS: a server ($SERVER_BIN) with the fleet and room for every session, its
# RSS, then every device holding a session; sets rss_fleet, kb_fleet, held, rss_sessions,
# kb_sessions.
hold_fleet() {
  start_server "$RUN/fleet.txt" --dtls-max-sessions "$DEVICES"; sleep 1
  rss_fleet=$(rss_mb "$server"); kb_fleet=$(rss_kb "$server")
  : >"$RUN/hold.out"
  # shellcheck disable=SC2086 # HOLD_FLAGS is empty or one flag
  "$BIN/examples/dtls_handshakes" hold --server "127.0.0.1:$port" --devices-file "$RUN/fleet.txt" \
    --sessions "$DEVICES" $1 >"$RUN/hold.out" 2>&1 &
  holder=$!; pids+=("$holder")
  for _ in $(seq 1 600); do grep -q '^held=' "$RUN/hold.out" && break; sleep 0.5; done
  held=$(sed -n 's/^held=\([0-9]*\).*/\1/p' "$RUN/hold.out")
  sleep 2 # let the last answers go out and the server's timer run
  rss_sessions=$(rss_mb "$server"); kb_sessions=$(rss_kb "$server")
  stop "$holder"; stop "$server"
}
per_session() { awk -v a="$1" -v b="$2" -v n="${3:-0}" 'BEGIN {printf "%.0f", (b - a) * 1024 / (n > 0 ? n : 1)}'; }

# measure COLUMN: everything for $SERVER_BIN, in variables suffixed _COLUMN.
measure() {
  local c=$1
  handshake_rate
  say "$c: $rate ($rate_cpu µs of server CPU each)"
  printf -v "rate_$c" '%s' "$rate"; printf -v "rate_cpu_$c" '%s' "$rate_cpu"
  local none
  start_server "$RUN/none.txt"; sleep 1; none=$(rss_mb "$server"); stop "$server"
  printf -v "rss_none_$c" '%s' "$none"
  hold_fleet ""
  printf -v "rss_fleet_$c" '%s' "$rss_fleet"; printf -v "held_$c" '%s' "$held"
  printf -v "rss_used_$c" '%s' "$rss_sessions"
  printf -v "per_used_$c" '%s' "$(per_session "$kb_fleet" "$kb_sessions" "$held")"
  say "$c: RSS no devices $none MB, $DEVICES devices $rss_fleet MB, $held sessions used once $rss_sessions MB"
  hold_fleet --no-ping
  printf -v "held_unused_$c" '%s' "$held"; printf -v "rss_unused_$c" '%s' "$rss_sessions"
  printf -v "per_unused_$c" '%s' "$(per_session "$kb_fleet" "$kb_sessions" "$held")"
  say "$c: $held sessions never used after the handshake: $rss_sessions MB"
}

SERVER_BIN=$BIN/coap-server measure now
if [ -n "$BEFORE" ]; then SERVER_BIN=$BEFORE/coap-server measure before; fi

lport=$(free_udp)
coap-server-openssl -A 127.0.0.1 -p "$lport" -k "$bench_key" -v 0 >"$RUN/libcoap.log" 2>&1 &
libcoap=$!; pids+=("$libcoap"); sleep 1
cpu0=$(awk '{print $14 + $15}' "/proc/$libcoap/stat")
theirs=$("$BIN/examples/dtls_handshakes" rate --server "127.0.0.1:$((lport + 1))" --identity bench \
  --key "$bench_key" --seconds "$HS_SECONDS" --threads "$HS_THREADS")
cpu1=$(awk '{print $14 + $15}' "/proc/$libcoap/stat")
theirs_cpu=$(cpu_per "$cpu0" "$cpu1" "$theirs")
stop "$libcoap"
say "coap-server-openssl: $theirs ($theirs_cpu µs of server CPU each)"

per_second() { echo "${1##*per_second=}"; }
counts() { echo "${1%% seconds*}"; }
# row TITLE NOW BEFORE [LIBCOAP]
row() {
  if [ -n "$BEFORE" ]; then echo "| $1 | $2 | $3 | ${4:--} |"; else echo "| $1 | $2 | ${4:--} |"; fi
}
table=$(
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores ($(uname -m)), \`scripts/bench-dtls.sh\`, load average at start $(cut -d' ' -f1 /proc/loadavg)."
  echo
  if [ -n "$BEFORE" ]; then
    echo "| what | coap-server | $BEFORE_LABEL | libcoap coap-server-openssl |"
    echo "|---|---|---|---|"
  else
    echo "| what | coap-server | libcoap coap-server-openssl |"
    echo "|---|---|---|"
  fi
  row "full PSK handshakes/s ($HS_THREADS client threads, ${HS_SECONDS} s, new port each)" \
    "**$(per_second "${rate_now:-}")** ($(counts "${rate_now:-}"))" \
    "$(per_second "${rate_before:-}") ($(counts "${rate_before:-}"))" \
    "$(per_second "$theirs") ($(counts "$theirs"))"
  row "server CPU per handshake" "${rate_cpu_now:-} µs" "${rate_cpu_before:-} µs" "$theirs_cpu µs"
  row "RSS, DTLS on, no devices" "${rss_none_now:-} MB" "${rss_none_before:-} MB"
  row "RSS, $DEVICES registered devices" "${rss_fleet_now:-} MB" "${rss_fleet_before:-} MB"
  row "RSS, ${held_now:-0} established sessions at once (one per device, each used once)" \
    "**${rss_used_now:-} MB**" "${rss_used_before:-} MB"
  row "per session" "**${per_used_now:-} bytes**" "${per_used_before:-} bytes"
  row "RSS, ${held_unused_now:-0} sessions never used after the handshake" \
    "${rss_unused_now:-} MB (${per_unused_now:-} bytes each)" "${rss_unused_before:-} MB (${per_unused_before:-} bytes each)"
)
echo "$table"
write_doc_table "$DOC" bench-dtls "$table"
