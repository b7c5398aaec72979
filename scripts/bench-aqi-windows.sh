#!/usr/bin/env bash
# Memory of the 24-hour windows (aqi-ingestor's own means): what a sensor costs.
#
# The release ingestor runs as a service (dry run, so no database; side port on) on synthetic
# snapshots of N records (../shared/tools/gen_snapshot.py, cached as for bench-aqi.sh), served
# over a local HTTP server (a dry run of a file polls once and exits, with no side port), once
# with the snapshot as its 24-hour source (watermarks only) and once as its 5-minute readings
# (watermarks and a window per PM sensor). After the first cycle it prints VmRSS, the windows
# and the bytes the ingestor accounts for them (aqi_window_bytes). The cost per sensor is the
# growth of (readings RSS - daily RSS) between two sizes, divided by the growth in windows, so
# that fixed costs cancel out.
#
#   BENCH_WINDOW_SIZES (default "15000 150000")
#   AQI_BENCH_DIR, AQI_GEN as for scripts/bench-aqi.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${BENCH_WINDOW_SIZES:-15000 150000}
# shellcheck source=lib/aqi-snapshots.sh
. scripts/lib/aqi-snapshots.sh
say() { printf '[bench-aqi-windows] %s\n' "$*" >&2; }

# shellcheck disable=SC2086 # the sizes are words
ensure_snapshots $SIZES
BIN=$(release_ingestor)
RUN=$(mktemp -d /tmp/iot-bench-windows.XXXXXX)
daemon=""
files=""
cleanup() {
  # `|| true`: the killed processes' status (143) must not become the script's.
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true; fi
  if [ -n "$files" ]; then kill "$files" 2>/dev/null; wait "$files" 2>/dev/null || true; fi
  rm -rf "$RUN"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
metric() { curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }

FILES_PORT=$(free_port)
python3 -m http.server "$FILES_PORT" --bind 127.0.0.1 --directory "$CACHE" >/dev/null 2>&1 &
files=$!
for _ in $(seq 1 100); do
  curl -sf -o /dev/null "http://127.0.0.1:$FILES_PORT/" && break
  sleep 0.1
done

# run MODE N: prints "rss_kb windows window_bytes" after the first cycle.
run() {
  local mode=$1 n=$2 port feed
  port=$(free_port)
  local file="http://127.0.0.1:$FILES_PORT/snap_$n.json"
  if [ "$mode" = daily ]; then
    set -- --source "$file"; feed=daily
  else
    set -- --source none --readings-source "$file"; feed=readings
  fi
  RUST_LOG=warn "$BIN" --dry-run "$@" --poll-seconds 3600 --http-addr "127.0.0.1:$port" \
    >/dev/null 2>"$RUN/log" &
  daemon=$!
  local done="aqi_feed_polls_total{feed=\"$feed\",outcome=\"written\"}"
  for _ in $(seq 1 1200); do
    [ "$(metric "$port" "$done" 2>/dev/null)" = 1 ] && break
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$(metric "$port" "$done")" != 1 ]; then
    say "no cycle done:"; cat "$RUN/log" >&2
    kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
  echo "$(awk '/VmRSS/ {print $2}' "/proc/$daemon/status") $(metric "$port" aqi_window_sensors) $(metric "$port" aqi_window_bytes)"
  kill "$daemon"; wait "$daemon" 2>/dev/null || true; daemon=""
}

say "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
: > "$RUN/results"
for n in $SIZES; do
  # Assigned first, so that a failed run stops the script (set -e).
  daily=$(run daily "$n")
  readings=$(run readings "$n")
  read -r d_rss _ _ <<<"$daily"
  read -r r_rss windows bytes <<<"$readings"
  echo "$n $d_rss $r_rss $windows $bytes" >> "$RUN/results"
done
python3 - "$RUN/results" <<'PY'
import sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1])]
print(f"{'records':>9} {'windows':>9} {'RSS daily MB':>13} {'RSS readings MB':>16} {'accounted MB':>13}")
for n, d, r, w, b in rows:
    print(f"{n:>9,} {w:>9,} {d/1024:>13.1f} {r/1024:>16.1f} {b/1048576:>13.1f}")
if len(rows) >= 2:
    (n0, d0, r0, w0, b0), (n1, d1, r1, w1, b1) = rows[0], rows[-1]
    rss = ((r1 - d1) - (r0 - d0)) * 1024 / (w1 - w0)
    acc = (b1 - b0) / (w1 - w0)
    print(f"per sensor: {rss:.0f} bytes of RSS, {acc:.0f} bytes accounted (table slots, windows, tags)")
PY
