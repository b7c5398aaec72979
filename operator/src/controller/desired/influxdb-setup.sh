#!/bin/sh
# Brings InfluxDB's users, databases and retention to what the IotMonitor asks for. Runs beside
# influxd on every pod start; each step is idempotent, so restarts, upgrades and a volume
# initialised by an earlier run all converge. Credentials come from the environment (a Secret),
# never from this file. Any failure exits non-zero and the kubelet retries with back-off.
set -eu

cli() { influx -host 127.0.0.1 -port "${INFLUX_PORT:-8086}" "$@"; }
admin() { cli -username "$INFLUX_ADMIN_USER" -password "$INFLUX_ADMIN_PASSWORD" -execute "$1"; }

# Wait for the HTTP API (the first start of a large data directory can take a while).
while :; do
  out=$(cli -execute 'SHOW DATABASES' 2>&1 || true)
  case "$out" in
    *"Failed to connect"*|*"connection refused"*) sleep 1 ;;
    *) break ;;
  esac
done

# An empty volume has no users: InfluxDB then accepts exactly one unauthenticated statement
# kind, creating the first admin.
case "$out" in
  *"create admin user first"*)
    cli -execute "CREATE USER \"$INFLUX_ADMIN_USER\" WITH PASSWORD '$INFLUX_ADMIN_PASSWORD' WITH ALL PRIVILEGES"
    echo "created the admin user"
    ;;
esac

ensure_user() {
  # CREATE USER fails when the user exists; SET PASSWORD then makes the Secret authoritative.
  admin "CREATE USER \"$1\" WITH PASSWORD '$2'" >/dev/null 2>&1 || true
  admin "SET PASSWORD FOR \"$1\" = '$2'"
}
ensure_user "$INFLUX_WRITER_USER" "$INFLUX_WRITER_PASSWORD"
ensure_user "$INFLUX_READER_USER" "$INFLUX_READER_PASSWORD"

# A restore (spec.influxdb.restoreFrom) makes the databases from the backup: until it has (its
# marker database gone), none is created here, so nothing is written into them first. The pod
# is Ready meanwhile, so the restore reaches it and the workloads reach InfluxDB, which answers
# their writes "database not found": coap-server answers 5.03 and the senders retry. A volume
# that already holds the databases goes on at once (the restore refuses it).
if [ -n "${INFLUX_RESTORE:-}" ]; then
  trap 'exit 0' TERM INT
  touch "${SETUP_DONE_FILE:-/tmp/setup-done}"
  nl='
'
  while :; do
    dbs="$nl$(cli -username "$INFLUX_ADMIN_USER" -password "$INFLUX_ADMIN_PASSWORD" -format csv -execute 'SHOW DATABASES')$nl"
    waiting=""
    case "$dbs" in *"${nl}databases,iot_restore_in_progress$nl"*) waiting="the restore is running" ;; esac
    for db in $INFLUX_DATABASES; do
      case "$dbs" in *"${nl}databases,$db$nl"*) ;; *) waiting="database $db is not restored yet" ;; esac
    done
    [ -z "$waiting" ] && break
    echo "waiting for the restore of $INFLUX_RESTORE: $waiting"
    sleep 2
  done
fi

for db in $INFLUX_DATABASES; do
  admin "CREATE DATABASE \"$db\""
  admin "ALTER RETENTION POLICY \"autogen\" ON \"$db\" DURATION $INFLUX_RETENTION DEFAULT"
  # The writer also reads: the AQI ingestor looks up the newest stored reading per sensor.
  admin "GRANT ALL ON \"$db\" TO \"$INFLUX_WRITER_USER\""
  admin "GRANT READ ON \"$db\" TO \"$INFLUX_READER_USER\""
done

echo "InfluxDB users and databases are set up"
touch "${SETUP_DONE_FILE:-/tmp/setup-done}"
# Stay up so the pod stays Ready (readiness is this file) without restarting the setup. As PID 1
# the shell ignores SIGTERM unless trapped, and `wait` lets the trap run at once, so the pod
# stops promptly instead of after its grace period.
sleeper=""
trap 'kill $sleeper 2>/dev/null; exit 0' TERM INT
while :; do
  sleep 3600 &
  sleeper=$!
  wait $sleeper || true
done
