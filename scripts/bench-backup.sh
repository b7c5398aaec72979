#!/usr/bin/env bash
# Backup and restore benchmark (issue 24): InfluxDB's own `influxd backup -portable` and
# `influxd restore -portable` over the RPC port (127.0.0.1), against a real InfluxDB holding
# BENCH_POINTS DHT readings (scripts/lib/backup-bench.py fill), while a steady write load of small
# batches runs (backup-bench.py load). Prints and records:
#   - the fill: points, seconds, points/s;
#   - per backup variant: its time, the backup's size (and as one tar.gz), and the write latency
#     p50 / p99 / max in the BENCH_BASELINE_S seconds before it (no backup running) and during it.
#     One backup of the data takes seconds, too few writes for a p99: each variant runs backups back
#     to back for BENCH_BACKUP_S seconds, and "during" is every write that started while one ran;
#   - the restore of the plain backup into an empty InfluxDB: its time, and every point counted.
# Variants, one after another in the same run against the same data and load:
#   plain      influxd backup as is
#   nice       under `nice -n 19 ionice -c 3` (lowest CPU and I/O priority)
#   cpu-500m   in a cgroup limited to half a CPU, as a CronJob with `limits.cpu: 500m` (root, cgroup
#              v1 cpu controller or v2; skipped otherwise); any cpu-<N>m works
#   cpu-250m   the same with a quarter of a CPU
#
#   BENCH_POINTS (1000000; the recorded figures use 10000000)   BENCH_BASELINE_S (30)
#   BENCH_BACKUP_S (30)   BENCH_VARIANTS ("plain nice cpu-500m cpu-250m")
#   BENCH_DOC (docs/benchmarks.md; empty: do not write it)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/influxd.sh
. scripts/lib/influxd.sh
# shellcheck source=lib/doc-table.sh
. scripts/lib/doc-table.sh
POINTS=${BENCH_POINTS:-1000000}
BASELINE=${BENCH_BASELINE_S:-30}
REPEAT_S=${BENCH_BACKUP_S:-30}
VARIANTS=${BENCH_VARIANTS:-plain nice cpu-500m cpu-250m}
DOC=${BENCH_DOC-docs/benchmarks.md}
PY=scripts/lib/backup-bench.py
DB=dht
say() { printf '[bench-backup] %s\n' "$*" >&2; }

RUN=$(mktemp -d /tmp/iot-bench-backup.XXXXXX)
load_pid="" cgroup=""
cleanup() {
  touch "$RUN/stop"
  if [ -n "$load_pid" ]; then wait "$load_pid" 2>/dev/null || true; fi
  if [ -n "$cgroup" ]; then rmdir "$cgroup" 2>/dev/null || true; fi
  if [ -n "${SOURCE_PID:-}" ]; then INFLUX_PID=$SOURCE_PID stop_influxd; fi
  stop_influxd
  rm -rf "$RUN"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

# settle PID: waits (at most 5 min) until the process uses under 5 % of a CPU over 5 s, so that
# the compactions after the fill do not count as the backup's doing.
settle() {
  local pid=$1 before after
  for _ in $(seq 1 60); do
    before=$(awk '{print $14 + $15}' "/proc/$pid/stat"); sleep 5
    after=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    [ $((after - before)) -lt $((5 * $(getconf CLK_TCK) / 20)) ] && return 0
  done
  say "influxd still busy after 5 min; measuring anyway"
}

# make_cgroup MILLICORES: a new cgroup in $cgroup with that much CPU (as a container's limits.cpu:
# MILLICORES × 100 µs per 100 ms), in cgroup v1's cpu controller or v2's; fails when there is none
# this user may write.
make_cgroup() {
  local v1=/sys/fs/cgroup/cpu v2=/sys/fs/cgroup/unified quota=$(($1 * 100))
  if [ -w "$v1" ]; then
    cgroup=$v1/iot-bench-backup-$$; mkdir -p "$cgroup"
    echo 100000 >"$cgroup/cpu.cfs_period_us"; echo "$quota" >"$cgroup/cpu.cfs_quota_us"
  elif [ -w "$v2/cgroup.subtree_control" ] && grep -qw cpu "$v2/cgroup.controllers"; then
    cgroup=$v2/iot-bench-backup-$$; mkdir -p "$cgroup"; echo "$quota 100000" >"$cgroup/cpu.max"
  else
    return 1
  fi
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
say "machine: $(nproc) cores, load $load_start, $(influxd version)"
start_influxd "$RUN/source"
SOURCE_PID=$INFLUX_PID SOURCE_URL=$INFLUX_URL SOURCE_RPC=$INFLUX_RPC
influx_query "$SOURCE_URL" "" "CREATE DATABASE $DB" >/dev/null
say "filling $DB with $POINTS points"
read -r filled fill_s fill_rate < <(python3 "$PY" fill "$SOURCE_URL" "$DB" "$POINTS")
say "  $filled points in $fill_s s ($fill_rate points/s); waiting for compactions to settle"
settle "$SOURCE_PID"
say "  data on disk: $(du -sh "$RUN/source/data" | cut -f1), WAL $(du -sh "$RUN/source/wal" | cut -f1)"

python3 "$PY" load "$SOURCE_URL" "$DB" "$RUN/latency" "$RUN/stop" 3600 &
load_pid=$!
: >"$RUN/results"
for variant in $VARIANTS; do
  sleep "$BASELINE"
  dir=$RUN/backup-$variant
  backup=(influxd backup -portable -host "127.0.0.1:$SOURCE_RPC" "$dir")
  case $variant in
  plain) ;;
  nice) backup=(nice -n 19 ionice -c 3 "${backup[@]}") ;;
  cpu-*m)
    millicores=${variant#cpu-}
    make_cgroup "${millicores%m}" || { say "skipped $variant: no writable cgroup cpu controller (needs root)"; continue; }
    # shellcheck disable=SC2016 # $$ is the inner shell's: it moves itself, then becomes the backup
    backup=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$cgroup" "${backup[@]}") ;;
  *) say "unknown variant $variant"; exit 1 ;;
  esac
  say "backup ($variant), back to back for ${REPEAT_S} s, while the write load runs"
  first=$(now)
  echo "$(secs "$BASELINE" "$first") $first" >"$RUN/before"
  : >"$RUN/during"
  while :; do
    rm -rf "$dir"
    t0=$(now)
    "${backup[@]}" >"$RUN/backup.log" 2>&1 || { say "backup failed:"; tail -5 "$RUN/backup.log" >&2; exit 1; }
    t1=$(now)
    echo "$t0 $t1" >>"$RUN/during"
    python3 -c "import sys; sys.exit($t1 - $first < $REPEAT_S)" && break
  done
  if [ -n "$cgroup" ]; then rmdir "$cgroup"; cgroup=""; fi
  read -r took runs < <(python3 "$PY" spans "$RUN/during")
  size=$(du -sb "$dir" | cut -f1)
  targz=$(tar -C "$dir" -czf - . | wc -c)
  read -r b50 b99 bmax bn < <(python3 "$PY" window "$RUN/latency" "$RUN/before")
  read -r d50 d99 dmax dn < <(python3 "$PY" window "$RUN/latency" "$RUN/during")
  echo "$variant $took $runs $size $targz $b50 $b99 $bmax $bn $d50 $d99 $dmax $dn" >>"$RUN/results"
  say "  $runs backups, median $took s, $((size / 1024 / 1024)) MiB; write p99 $b99 ms before, $d99 ms during"
done
touch "$RUN/stop"; wait "$load_pid"; load_pid=""
bulk=$(influx_query "$SOURCE_URL" "$DB" "SELECT count(value) FROM temperature, humidity WHERE place != 'live'" |
  python3 -c 'import json,sys; print(sum(s["values"][0][1] for s in json.load(sys.stdin)["results"][0]["series"]))')
[ "$bulk" = "$filled" ] || { say "the source holds $bulk of the $filled points written"; exit 1; }

# The restores read the plain variant's backup, or the first variant's when plain did not run.
source_backup=$RUN/backup-plain
[ -d "$source_backup" ] || source_backup=$RUN/backup-${VARIANTS%% *}
say "restore of the $(basename "$source_backup") backup into an empty InfluxDB"
start_influxd "$RUN/target"
t0=$(now)
influxd restore -portable -host "127.0.0.1:$INFLUX_RPC" "$source_backup" >"$RUN/restore.log" 2>&1 ||
  { say "restore failed:"; tail -5 "$RUN/restore.log" >&2; exit 1; }
restore_s=$(secs "$t0" "$(now)")
restored=$(influx_query "$INFLUX_URL" "$DB" "SELECT count(value) FROM temperature, humidity WHERE place != 'live'" |
  python3 -c 'import json,sys; print(sum(s["values"][0][1] for s in json.load(sys.stdin)["results"][0]["series"]))')
say "  $restore_s s; $restored of $filled points back"
[ "$restored" = "$filled" ] || { say "points lost in the restore"; exit 1; }

# The operator's restore (influxdb-restore.sh): into a temporary database, then merged into the
# real one with SELECT INTO, so readings written meanwhile are kept. Its time and influxd's peak
# memory, on a fresh InfluxDB.
say "the operator's restore: into ${DB}_restoring, then SELECT INTO $DB"
stop_influxd
start_influxd "$RUN/target-merge"
t0=$(now)
influxd restore -portable -host "127.0.0.1:$INFLUX_RPC" -db "$DB" -newdb "${DB}_restoring" "$source_backup" \
  >"$RUN/restore-merge.log" 2>&1 || { say "restore failed:"; tail -5 "$RUN/restore-merge.log" >&2; exit 1; }
t1=$(now)
influx_query "$INFLUX_URL" "" "CREATE DATABASE \"$DB\"" >/dev/null
influx_query "$INFLUX_URL" "$DB" \
  "SELECT * INTO \"$DB\".\"autogen\".:MEASUREMENT FROM \"${DB}_restoring\".\"autogen\"./.*/ GROUP BY *" >"$RUN/merge.json"
t2=$(now)
if grep -q '"error"' "$RUN/merge.json"; then say "the merge failed: $(head -c 400 "$RUN/merge.json")"; exit 1; fi
merge_restore_s=$(secs "$t0" "$t1"); merge_s=$(secs "$t1" "$t2")
merge_peak_mb=$(awk '/^VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$INFLUX_PID/status")
merged=$(influx_query "$INFLUX_URL" "$DB" "SELECT count(value) FROM temperature, humidity WHERE place != 'live'" |
  python3 -c 'import json,sys; print(sum(s["values"][0][1] for s in json.load(sys.stdin)["results"][0]["series"]))')
say "  restore $merge_restore_s s, merge $merge_s s, influxd peak RSS $merge_peak_mb MB; $merged of $filled points"
[ "$merged" = "$filled" ] || { say "points lost in the merge: $(head -c 300 "$RUN/merge.json")"; exit 1; }

table=$(python3 - "$RUN/results" "$filled" "$fill_s" "$fill_rate" "$restore_s" "$BASELINE" \
  "$(nproc)" "$load_start" "$(cut -d' ' -f1-3 /proc/loadavg)" "$merge_restore_s" "$merge_s" "$merge_peak_mb" <<'PY'
import sys, datetime
results, points, fill_s, rate, restore_s, base, cores, load0, load1, mr, ms, mpeak = sys.argv[1:13]
mib = lambda b: f"{int(b) / 2**20:,.1f} MiB"
print(f"Measured {datetime.date.today()} on {cores} cores, `BENCH_POINTS={points} scripts/bench-backup.sh`: "
      f"{int(points):,} points written in {fill_s} s ({int(rate):,} points/s); write load 20 readings "
      f"every 20 ms on one connection; \"no backup\": the {base} s before the variant's backups; "
      f"load average {load0} at the start, {load1} at the end.\n")
print("| backup | time (median of runs) | size (tar.gz) | write p50 / p99 / max, no backup | write p50 / p99 / max, during | p99 during ÷ without |")
print("|---|---|---|---|---|---|")
for line in open(results):
    v, t, runs, size, targz, b50, b99, bmax, bn, d50, d99, dmax, dn = line.split()
    ratio = f"{float(d99) / float(b99):.1f}×" if "-" not in (b99, d99) else "-"
    print(f"| {v} | {t} s ({runs}) | {mib(size)} ({mib(targz)}) | {b50} / {b99} / {bmax} ms ({bn} writes) "
          f"| {d50} / {d99} / {dmax} ms ({dn} writes) | **{ratio}** |")
print(f"\nRestore of the plain backup into an empty InfluxDB (`influxd restore -portable`): **{restore_s} s**, "
      f"all {int(points):,} points counted back.")
print(f"\nThe operator's restore (into a temporary database, then `SELECT * INTO` the real one): "
      f"**{float(mr) + float(ms):.1f} s** ({mr} s restore, {ms} s merge), influxd's peak RSS {mpeak} MB, "
      f"all {int(points):,} points counted back.")
PY
)
echo "$table"
write_doc_table "$DOC" bench-backup "$table"
