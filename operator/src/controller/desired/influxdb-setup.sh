#!/bin/sh
# Brings InfluxDB's users, databases, retention and downsampling tiers to what the IotMonitor
# asks for. Runs beside influxd on every pod start; each step is idempotent, so restarts,
# upgrades and a volume initialised by an earlier run all converge. Credentials come from the
# environment (a Secret), never from this file. The rest comes from the plan file (the
# operator's `influxdb_plan::plan`, one tab-separated instruction per line), which the sidecar
# re-reads every SETUP_POLL_SECONDS: a changed plan is applied without restarting InfluxDB.
# A failure before the pod is Ready exits non-zero and the kubelet retries with back-off; a
# failure after is logged and retried at the next poll, so InfluxDB stays Ready.
#
#   setup.sh           the sidecar: users, then the plan, then Ready, then backfills and polling
#   setup.sh plan      apply the plan once (databases, retention, tiers' policies and queries)
#   setup.sh backfill  backfill each tier's query not yet marked done
set -eu

PLAN=${SETUP_PLAN:-/setup/plan}
TAB=$(printf '\t')

cli() { influx -host 127.0.0.1 -port "${INFLUX_PORT:-8086}" "$@"; }
admin() { cli -username "$INFLUX_ADMIN_USER" -password "$INFLUX_ADMIN_PASSWORD" -execute "$1"; }
# admin_in DB STATEMENT [influx options...]
admin_in() {
  db=$1 q=$2
  shift 2
  cli -username "$INFLUX_ADMIN_USER" -password "$INFLUX_ADMIN_PASSWORD" -database "$db" "$@" -execute "$q"
}

# The plan's tier policies and queries. A tier's policy that the plan no longer has is kept: its
# points expire by its own duration. Its query is dropped with its backfill mark, so a tier
# added again is backfilled again (over identical points: harmless).
apply_plan() {
  wanted=" "
  dbs=""
  while IFS=$TAB read -r kind db rest; do
    case "$kind" in
      database)
        dbs="$dbs $db"
        admin "CREATE DATABASE \"$db\""
        admin "ALTER RETENTION POLICY \"autogen\" ON \"$db\" DURATION $rest DEFAULT"
        # The writer also reads: the AQI ingestor looks up the newest stored reading per sensor.
        admin "GRANT ALL ON \"$db\" TO \"$INFLUX_WRITER_USER\""
        admin "GRANT READ ON \"$db\" TO \"$INFLUX_READER_USER\""
        ;;
      run) admin_in "$db" "$rest" >/dev/null ;;
      policy)
        rp=${rest%%"$TAB"*} keep=${rest#*"$TAB"}
        if policy_exists "$db" "$rp"; then
          admin "ALTER RETENTION POLICY \"$rp\" ON \"$db\" DURATION $keep"
        else
          admin "CREATE RETENTION POLICY \"$rp\" ON \"$db\" DURATION $keep REPLICATION 1"
          # A new policy holds nothing: whatever mark says otherwise is from an older one.
          admin_in "$db" "DELETE FROM \"downsampling_backfill\" WHERE \"rp\" = '$rp'"
          echo "created retention policy $rp on $db ($keep)"
        fi
        ;;
      cq)
        name=${rest%%"$TAB"*} statement=${rest#*"$TAB"}
        wanted="$wanted$db/$name "
        if ! query_exists "$db" "$name"; then
          admin_in "$db" "$statement"
          echo "created continuous query $name on $db"
        fi
        ;;
    esac
  done <"$PLAN"
  # Queries of ours (ds_) that the plan no longer has: a removed or changed tier.
  for db in $dbs; do
    for name in $(queries_of "$db"); do
      case "$wanted" in
        *" $db/$name "*) ;;
        *)
          admin_in "$db" "DROP CONTINUOUS QUERY \"$name\" ON \"$db\""
          admin_in "$db" "DELETE FROM \"downsampling_backfill\" WHERE \"cq\" = '$name'"
          echo "dropped continuous query $name on $db"
          ;;
      esac
    done
  done
}

policy_exists() {
  out=$(admin_in "$1" "SHOW RETENTION POLICIES ON \"$1\"" -format csv)
  for line in $out; do
    [ "${line%%,*}" = "$2" ] && return 0
  done
  return 1
}

# Names of the database's continuous queries that begin with ds_ (CSV rows: db,name,"query").
queries_of() {
  out=$(admin_in "$1" "SHOW CONTINUOUS QUERIES" -format csv)
  printf '%s\n' "$out" | while IFS=, read -r qdb qname _; do
    case "$qdb/$qname" in "$1"/ds_*) echo "$qname" ;; esac
  done
}

query_exists() {
  for name in $(queries_of "$1"); do
    [ "$name" = "$2" ] && return 0
  done
  return 1
}

# Every query without a mark: the raw points from the oldest stored up to the end of the
# interval its query took over at, in chunks of whole intervals (bounded memory), then the mark.
# Points already written by the query are written again with the same values: harmless.
backfill() {
  while IFS=$TAB read -r kind db cq rp every chunk head group; do
    [ "$kind" = backfill ] || continue
    marks=$(admin_in "$db" "SELECT * FROM \"iot_meta\".\"downsampling_backfill\" WHERE \"cq\" = '$cq'" -format csv)
    case "$marks" in *"$cq"*) continue ;; esac
    oldest=$(oldest_raw "$db")
    now=$(date +%s)
    end=$(( now / every * every + every ))
    if [ -n "$oldest" ]; then
      start=$(( oldest / every * every ))
      echo "backfilling $rp on $db from $start to $end ($(( (end - start + chunk - 1) / chunk )) chunks)"
      while [ "$start" -lt "$end" ]; do
        stop=$(( start + chunk ))
        [ "$stop" -gt "$end" ] && stop=$end
        admin_in "$db" "$head WHERE time >= ${start}s AND time < ${stop}s $group" >/dev/null
        start=$stop
      done
    fi
    admin_in "$db" "INSERT INTO iot_meta downsampling_backfill,cq=$cq,rp=$rp done=true 0"
    echo "backfilled $rp on $db"
  done <"$PLAN"
}

# Epoch seconds of the oldest raw point of the database, empty when it has none. CSV rows are
# measurement,time,... with a header per measurement.
oldest_raw() {
  out=$(admin_in "$1" "SELECT * FROM \"$1\".\"autogen\"./.*/ ORDER BY time ASC LIMIT 1" -format csv -precision s)
  printf '%s\n' "$out" | {
    oldest=""
    while IFS=, read -r _ time _; do
      case "$time" in ''|*[!0-9]*) continue ;; esac
      if [ -z "$oldest" ] || [ "$time" -lt "$oldest" ]; then oldest=$time; fi
    done
    echo "$oldest"
  }
}

case "${1:-}" in
  plan) apply_plan; exit 0 ;;
  backfill) backfill; exit 0 ;;
esac

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
  touch "${SETUP_DONE_FILE:-/tmp/setup-done}"
  trap 'exit 0' TERM INT
  nl='
'
  while :; do
    dbs="$nl$(cli -username "$INFLUX_ADMIN_USER" -password "$INFLUX_ADMIN_PASSWORD" -format csv -execute 'SHOW DATABASES')$nl"
    waiting=""
    case "$dbs" in *"${nl}databases,iot_restore_in_progress$nl"*) waiting="the restore is running" ;; esac
    while IFS=$TAB read -r kind db _; do
      [ "$kind" = database ] || continue
      case "$dbs" in *"${nl}databases,$db$nl"*) ;; *) waiting="database $db is not restored yet" ;; esac
    done <"$PLAN"
    [ -z "$waiting" ] && break
    echo "waiting for the restore of $INFLUX_RESTORE: $waiting"
    sleep 2
  done
  trap - TERM INT
fi

# Each pass runs in a new shell: `set -e` holds there whatever this one is doing.
applied=$(cat "$PLAN")
sh "$0" plan
echo "InfluxDB users and databases are set up"
touch "${SETUP_DONE_FILE:-/tmp/setup-done}"

# Stay up so the pod stays Ready (readiness is the file above) without restarting the setup,
# backfilling once (after Ready: writes go on meanwhile) and applying a changed plan. As PID 1
# the shell ignores SIGTERM unless trapped, and `wait` lets the trap run at once, so the pod
# stops promptly instead of after its grace period.
child=""
trap 'kill $child 2>/dev/null; exit 0' TERM INT
run() {
  sh "$0" "$1" &
  child=$!
  wait $child
}
backfilled=false
while :; do
  plan=$(cat "$PLAN")
  if [ "$plan" != "$applied" ]; then
    if run plan; then
      applied=$plan backfilled=false
      echo "applied the changed plan"
    else
      echo "the changed plan failed; retrying in ${SETUP_POLL_SECONDS:-10} s"
    fi
  fi
  if [ "$backfilled" = false ] && [ "$plan" = "$applied" ]; then
    if run backfill; then backfilled=true; else echo "backfill failed; retrying"; fi
  fi
  sleep "${SETUP_POLL_SECONDS:-10}" &
  child=$!
  wait $child || true
done
