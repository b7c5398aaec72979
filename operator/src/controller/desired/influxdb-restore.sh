#!/bin/sh
# Restores the backup that the fetch step unpacked into $RESTORE_DIR into this monitor's InfluxDB
# (spec.influxdb.restoreFrom). Runs in the restore Job, with the InfluxDB image. Idempotent, so
# an interrupted Job can run it again:
#  - the marker database iot_restore_in_progress is created before anything else and dropped
#    last: while it exists, what the databases hold is this restore's own work;
#  - each database is restored under a temporary name (influxd restore refuses an existing
#    one), then merged into its real name with SELECT INTO, which writes the same points again
#    when repeated, then the temporary one is dropped.
# Without the marker, a volume that already holds one of the databases is refused (exit 3):
# nothing is written. The set-up sidecar creates no database while a restore is asked for, so
# the workloads cannot write first; they get 5.03 until this is done.
set -eu

MARKER=iot_restore_in_progress
nl='
'
q() {
  influx -host "$INFLUX_HOST" -port "$INFLUX_PORT" -username "$INFLUX_ADMIN_USER" \
    -password "$INFLUX_ADMIN_PASSWORD" -format csv -execute "$1"
}
say() { printf '%s\n' "$1" > "${TERMINATION_LOG:-/dev/termination-log}"; printf '%s\n' "$1" >&2; }
fail() { say "$1"; exit "${2:-1}"; }
databases() { dbs="$nl$(q 'SHOW DATABASES')$nl"; }
has_db() { case "$dbs" in *"${nl}databases,$1$nl"*) return 0 ;; *) return 1 ;; esac; }

name=$(cat "$RESTORE_DIR/name")

# Until InfluxDB answers and its set-up has made the admin user.
tries=0
until out=$(q 'SHOW DATABASES' 2>&1); do
  tries=$((tries + 1))
  [ $((tries % 15)) -eq 1 ] && echo "waiting for InfluxDB at $INFLUX_HOST: $out" >&2
  sleep 2
done
databases

if ! has_db "$MARKER"; then
  for db in $INFLUX_DATABASES; do
    if has_db "$db"; then
      fail "refused: the volume already holds database $db, so nothing was restored and nothing overwritten; restore into a new IotMonitor, or into this one after deleting its data volume (docs/operations.md)" 3
    fi
  done
  q "CREATE DATABASE $MARKER" >/dev/null
fi

for db in $INFLUX_DATABASES; do
  if [ ! -d "$RESTORE_DIR/data/$db" ]; then
    echo "backup $name holds no database $db: it starts empty" >&2
    continue
  fi
  # A temporary database left by an interrupted run is this restore's own: made again.
  q "DROP DATABASE \"${db}_restoring\"" >/dev/null
  # A database backed up without a point has no shard file; influxd restore refuses to restore
  # only its metadata ("DB metadata not changed"), and there is nothing to merge.
  set -- "$RESTORE_DIR/data/$db"/*.tar.gz
  if [ ! -e "$1" ]; then
    echo "backup $name holds database $db without points" >&2
    continue
  fi
  influxd restore -portable -host "$INFLUX_HOST:$INFLUX_RPC_PORT" -db "$db" \
    -newdb "${db}_restoring" "$RESTORE_DIR/data/$db" >&2 \
    || fail "influxd restore of database $db from $name failed (its log has why)"
done

databases
points=0
for db in $INFLUX_DATABASES; do
  # The writer's grant comes right after the database, so the workloads' first writes pass.
  q "CREATE DATABASE \"$db\"" >/dev/null
  q "GRANT ALL ON \"$db\" TO \"$INFLUX_WRITER_USER\"" >/dev/null
  q "GRANT READ ON \"$db\" TO \"$INFLUX_READER_USER\"" >/dev/null
  if has_db "${db}_restoring"; then
    out=$(q "SELECT * INTO \"$db\".\"autogen\".:MEASUREMENT FROM \"${db}_restoring\".\"autogen\"./.*/ GROUP BY *")
    # csv: name,tags,time,written
    for line in $out; do
      case "$line" in result,*) n=${line##*,}; points=$((points + n)) ;; esac
    done
    q "DROP DATABASE \"${db}_restoring\"" >/dev/null
  fi
done
q "DROP DATABASE $MARKER" >/dev/null
say "{\"result\":\"restored\",\"name\":\"$name\",\"points\":$points}"
