#!/usr/bin/env bash
# AQI processing benchmark: synthetic Sensor.Community snapshots of 15k, 50k, 150k and 1.5M records
# (../shared/tools/gen_snapshot.py, cached) through the release aqi-ingestor.
#
#  1. processing: `--source FILE --dry-run --once` with stdout to /dev/null — parse, validate,
#     DAQI, dedup and line protocol, no database — with the default threads (one per usable CPU)
#     and in order on one thread (`--threads 1`), run in turn. Prints the process's wall time
#     (best and median of BENCH_RUNS runs, with process start and exit), its CPU time (user +
#     system, median: steadier than wall time on a shared machine), the poll's own time as the
#     ingestor logs it, records/s, and the peak RSS (from /usr/bin/time).
#     With BENCH_BEFORE_BIN (another build's aqi-ingestor, or a directory holding one, e.g. of an
#     earlier commit) each run is followed by the same run of that build, in rows marked
#     "before/": the two builds alternate, so a machine whose speed drifts hits both alike.
#  2. into InfluxDB: one poll of the 15k snapshot (about the size of the real network) into a
#     real InfluxDB, points counted afterwards; then the ingestor as a service (side port on)
#     polling the 15k file, with its peak RSS once the poll is done: the "running ingestor" figure.
#
#   BENCH_SIZES (default "15000 50000 150000 1500000")   BENCH_RUNS (3)   CARGO_TARGET_DIR
#   BENCH_BEFORE_BIN (see 1.; only the processing runs use it)
#   AQI_BENCH_DIR (snapshot cache, default ~/.cache/iot-operator/aqi-bench)
#   AQI_GEN (generator, default ../shared/tools/gen_snapshot.py next to this repository)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/influxd.sh
. scripts/lib/influxd.sh
SIZES=${BENCH_SIZES:-15000 50000 150000 1500000}
RUNS=${BENCH_RUNS:-3}
# shellcheck source=lib/aqi-snapshots.sh
. scripts/lib/aqi-snapshots.sh
say() { printf '[bench-aqi] %s\n' "$*" >&2; }

[ -x /usr/bin/time ] || { say "needs /usr/bin/time (Debian package 'time')"; exit 1; }
# shellcheck disable=SC2086 # the sizes are words
ensure_snapshots $SIZES
BIN=$(release_ingestor)
BEFORE=""
if [ -n "${BENCH_BEFORE_BIN:-}" ]; then
  BEFORE=$BENCH_BEFORE_BIN
  [ -d "$BEFORE" ] && BEFORE=$BEFORE/aqi-ingestor
  [ -x "$BEFORE" ] || { say "BENCH_BEFORE_BIN: no aqi-ingestor at $BEFORE"; exit 1; }
  BEFORE=$(cd "$(dirname "$BEFORE")" && pwd)/$(basename "$BEFORE")
fi
RUN=$(mktemp -d /tmp/iot-bench-aqi.XXXXXX)
daemon=""
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  stop_influxd; rm -rf "$RUN"
}
trap cleanup EXIT

# measure LABEL RECORDS ARGS...: runs the ingestor ($BIN, or $bin when set) once under
# /usr/bin/time; appends "label records wall_s rss_kb cpu_s poll_s written" to $RUN/results.
measure() {
  local label=$1 n=$2; shift 2
  RUST_LOG=info /usr/bin/time -f '%e %M %U %S' -o "$RUN/time" "${bin:-$BIN}" --once \
    --log-format json "$@" >/dev/null 2>"$RUN/log" || { say "run failed:"; tail -5 "$RUN/log" >&2; exit 1; }
  local wall rss user sys
  local poll written
  poll=$(python3 -c 'import json,sys
for l in open(sys.argv[1]):
    try: d=json.loads(l)
    except ValueError: continue
    if d.get("message")=="poll done": print(d["seconds"], d["written"])' "$RUN/log")
  read -r wall rss user sys < "$RUN/time"
  echo "$label $n $wall $rss $(python3 -c "print(round($user + $sys, 2))") $poll" >> "$RUN/results"
}

report() {
  python3 - "$RUN/results" <<'PY'
import sys, statistics, collections
rows = collections.OrderedDict()
for line in open(sys.argv[1]):
    label, n, wall, rss, cpu, poll, written = line.split()
    rows.setdefault((label, int(n)), []).append(
        (float(wall), int(rss), float(cpu), float(poll), int(written)))
print(f"{'run':<27}{'records':>10}  {'wall s best/med':>16}  {'records/s best/med (wall)':>26}"
      f"  {'CPU s med':>9}  {'poll s med':>10}  {'records/s (poll)':>16}  {'peak RSS MB':>11}")
for (label, n), runs in rows.items():
    walls = sorted(r[0] for r in runs)
    best, med = walls[0], statistics.median(walls)
    cpu = statistics.median(r[2] for r in runs)
    poll = statistics.median(r[3] for r in runs)
    rate = lambda s: f"{n / s:,.0f}" if s > 0 else "-"
    rss = max(r[1] for r in runs) / 1024
    print(f"{label:<27}{n:>10,}  {best:>7.2f} / {med:<6.2f}  {rate(best):>12} / {rate(med):<11}"
          f"  {cpu:>9.2f}  {poll:>10.3f}  {rate(poll):>16}  {rss:>11.1f}")
PY
}

say "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
say "processing (dry run to /dev/null), $RUNS runs each"
: > "$RUN/results"
[ -n "$BEFORE" ] && say "before: $BEFORE"
for n in $SIZES; do
  for _ in $(seq 1 "$RUNS"); do
    for threads in "" 1; do
      label=dry-run${threads:+/1-thread}
      args=(--dry-run ${threads:+--threads "$threads"} --source "$CACHE/snap_$n.json")
      bin="" measure "$label" "$n" "${args[@]}"
      [ -z "$BEFORE" ] || bin=$BEFORE measure "before/$label" "$n" "${args[@]}"
    done
  done
done
report

say "into InfluxDB (one poll each, fresh database per size)"
start_influxd "$RUN/influxdb"
: > "$RUN/results"
for n in $SIZES; do
  # The synthetic 150k snapshot has ~136,000 distinct sensor ids, over InfluxDB's default
  # max-values-per-tag (100,000); the real network has about a tenth of that.
  [ "$n" -gt 15000 ] && continue
  measure "influx" "$n" --source "$CACHE/snap_$n.json" --influx-url "$INFLUX_URL" --influx-db "bench_$n"
  got=$(influx_count "$INFLUX_URL" "bench_$n" air_quality latitude)
  want=$(tail -1 "$RUN/results" | awk '{print $7}')
  [ "$got" = "$want" ] || { say "InfluxDB holds $got points, the ingestor wrote $want"; exit 1; }
  say "  $n records: $got points stored = readings written"
done
report

say "running service: first poll of the 15k snapshot, side port on"
port=$(free_port)
RUST_LOG=warn "$BIN" --source "$CACHE/snap_15000.json" --influx-url "$INFLUX_URL" --influx-db bench_service \
  --http-addr "127.0.0.1:$port" >"$RUN/service.log" 2>&1 &
daemon=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/metrics" 2>/dev/null | grep -q '^aqi_polls_total{outcome="written"} 1' && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/metrics" | grep -q '^aqi_polls_total{outcome="written"} 1' || {
  say "the service did not complete a poll"; cat "$RUN/service.log" >&2; exit 1; }
printf 'service after one 15k poll: VmHWM %s MB, VmRSS %s MB\n' \
  "$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$daemon/status")" \
  "$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$daemon/status")"
