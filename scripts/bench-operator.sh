#!/usr/bin/env bash
# Operator at scale: for each N and each namespace count, a fresh local control plane
# (tests/cluster/up.sh) with enough kwok nodes for the pods, the release operator, and N IotMonitors
# with `spec: {}` applied at once.
# Measures the time from apply to all Ready, reconciles and API writes per monitor (the operator's
# own metrics, and every client's requests from the API server's apiserver_request_total), the
# operator's peak RSS and CPU seconds, and its writes during BENCH_QUIET_SECONDS quiet seconds
# (must be zero). A timeline (every BENCH_SAMPLE_SECONDS: monitors Ready, pods created / bound to
# a node / ready, reconciles so far, the operator's RSS; pods and monitors followed by a watch) and
# the CPU seconds of every control-plane process from apply to all Ready show where the time goes.
# The table goes to stdout and, between its markers, into docs/benchmarks.md.
#
#   BENCH_MONITORS ("100 300 1000")  BENCH_NODES (default: enough for 5 pods per monitor, 110 per node)
#   BENCH_NAMESPACES ("1 10": how many namespaces the monitors are spread over, a list: a row for each
#   N and each count; with more than one the operator watches every namespace. Kubernetes' own
#   controllers match every pod change against every Service of the pod's namespace, so one
#   namespace costs kube-controller-manager work that grows with the square of the monitors in it)
#   BENCH_READY_TIMEOUT (900 s per N)  BENCH_QUIET_SECONDS (60)  BENCH_SAMPLE_SECONDS (5)
#   BENCH_APPLY_JOBS (4: kubectl processes applying the monitors in parallel)
#   BENCH_DOC (docs/benchmarks.md; empty: do not write it)  BENCH_KEEP (1: keep the run directory)
#   OPERATOR_BIN (an operator binary to use instead of building the release one)
#   IOT_CLUSTER_QPS (passed to tests/cluster/up.sh: the request rate of kube-controller-manager's
#   controllers and kube-scheduler; default here 100: at their own defaults, 20 and 50 a second,
#   the Deployment controller sets the pace, not the operator (docs/benchmarks.md); empty: those)
#   IOT_HPA_SYNC_SECONDS (passed to tests/cluster/up.sh; default here 15, Kubernetes' own: the tests'
#   5 s would have the HPA controller sync every monitor's two HPAs three times as often as a real
#   cluster does)
set -euo pipefail
# shellcheck source=lib/doc-table.sh
. "$(dirname "$0")/lib/doc-table.sh"
# shellcheck source=lib/crd.sh
. "$(dirname "$0")/lib/crd.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '[bench-operator %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
SIZES=${BENCH_MONITORS:-100 300 1000}
LAYOUTS=${BENCH_NAMESPACES:-1 10}
export IOT_HPA_SYNC_SECONDS=${IOT_HPA_SYNC_SECONDS:-15}
export IOT_CLUSTER_QPS=${IOT_CLUSTER_QPS-100}
APPLY_JOBS=${BENCH_APPLY_JOBS:-4}
TIMEOUT=${BENCH_READY_TIMEOUT:-900}; QUIET=${BENCH_QUIET_SECONDS:-60}; SAMPLE=${BENCH_SAMPLE_SECONDS:-5}
DOC=${BENCH_DOC-docs/benchmarks.md}
RUN=$(mktemp -d /tmp/iot-bench-operator.XXXXXX)
export IOT_CLUSTER_DIR=$RUN/cluster
BIN=$(tests/cluster/build.sh --print)
kubectl() { "$BIN/kubectl" --cache-dir="$RUN/kube-cache" "$@"; }

if [ -n "${OPERATOR_BIN:-}" ]; then
  OP=$(readlink -f "$OPERATOR_BIN") # e.g. a build made elsewhere; its profile goes into the table
else
  cargo build -q --release -p iot-operator
  OP=$repo/target/release/iot-operator
fi
profile=$(basename "$(dirname "$OP")")
op_pid=""
stop_operator() {
  if [ -n "$op_pid" ]; then kill "$op_pid" 2>/dev/null || true; wait "$op_pid" 2>/dev/null || true; fi
  op_pid=""
}
follow_pids=()
# follow NAME RESOURCE TEMPLATE [SELECTOR]: every state of every RESOURCE (in every namespace; the
# names are unique across them; only those with SELECTOR's labels), a line each through TEMPLATE
# (which prints the name first), appended to $RUN/NAME-$tag.txt by a watch that starts again
# whenever the API server ends it. A watch rather than a list every few seconds: at N=1000, listing
# 5,000 pods every 5 s cost the API server and kubectl a share of the two cores being measured.
follow() {
  local out=$RUN/$1-$tag.txt
  : >"$out"
  (while [ ! -e "$RUN/stop-following" ]; do
    kubectl get "$2" --all-namespaces ${4:+-l "$4"} --watch -o go-template="$3" >>"$out" 2>/dev/null || sleep 1
  done) &
  follow_pids+=($!)
}
stop_following() {
  local p
  touch "$RUN/stop-following"
  for p in ${follow_pids[@]+"${follow_pids[@]}"}; do
    pkill -P "$p" 2>/dev/null || true # its kubectl; the loop then sees the stop file
    wait "$p" 2>/dev/null || true
  done
  follow_pids=()
  rm -f "$RUN/stop-following"
}
# latest NAME: the last line followed for each object.
latest() { awk '{last[$1] = $0} END {for (k in last) print last[k]}' "$RUN/$1-$tag.txt"; }
cleanup() {
  stop_following
  stop_operator
  tests/cluster/down.sh >/dev/null 2>&1 || true
  [ "${BENCH_KEEP:-0}" = 1 ] && say "run directory kept: $RUN" || rm -rf "$RUN"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_secs() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$1/stat"; }
rss_mb() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_now_mb() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
# op_metric NAME: the sum of an operator metric over its labels.
op_metric() { curl -sf "http://$op_http/metrics" | awk -v m="$1" '{k = $1; sub(/\{.*/, "", k)} k == m {s += $NF} END {print s + 0}'; }
# api_requests: every client's requests by verb and resource, from the API server ("VERB:resource
# count" a line; watches left out). Writes are POST PUT PATCH APPLY DELETE DELETECOLLECTION.
api_requests() {
  kubectl get --raw /metrics | awk '
    /^apiserver_request_total\{/ && !/verb="WATCH"/ {
      match($0, /verb="[^"]*"/); v = substr($0, RSTART + 6, RLENGTH - 7)
      match($0, /resource="[^"]*"/); r = substr($0, RSTART + 10, RLENGTH - 11)
      match($0, /subresource="[^"]*"/); s = substr($0, RSTART + 13, RLENGTH - 14)
      w[v ":" (s == "" ? r : r "/" s)] += $NF
    }
    END { for (k in w) print k, w[k] }' | sort
}
# cpu_by_process: "name CPU-seconds" of every process up.sh recorded, and the operator's.
cpu_by_process() {
  local f pid
  for f in "$IOT_CLUSTER_DIR"/pids/*.pid; do
    read -r pid _ <"$f" || continue
    [ -r "/proc/$pid/stat" ] && echo "$(basename "$f" .pid) $(cpu_secs "$pid")"
  done | sort
}
# machine_jiffies: "busy all" CPU time of the whole machine so far (busy: all but idle and iowait).
machine_jiffies() { awk '/^cpu / {t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }
monitors_yaml() { # N PART PARTS: every PARTS-th monitor, from PART + 1 (names unique across namespaces)
  local i all=($namespaces)
  for ((i = $2 + 1; i <= $1; i += $3)); do
    printf -- '---\napiVersion: iot.operator.dev/v1alpha1\nkind: IotMonitor\nmetadata:\n  name: m%04d\n  namespace: %s\nspec: {}\n' "$i" "${all[$(((i - 1) % ${#all[@]}))]}"
  done
}
# go-templates, not jsonpath: an object without status yet prints nothing instead of an error.
READY_TEMPLATE='{{.metadata.name}} {{range .status.conditions}}{{if eq .type "Ready"}}{{.status}}{{end}}{{end}}{{"\n"}}'
POD_TEMPLATE='{{.metadata.name}} {{or .spec.nodeName "-"}} {{range .status.conditions}}{{if eq .type "Ready"}}{{.status}}{{end}}{{end}}{{"\n"}}'
ready_count() { latest monitors | awk '$2 == "True" {r++} END {print r + 0}'; }
# awaiting_metrics: monitors whose Autoscaling condition is Unknown or False: their HPAs have
# no metrics yet (Unknown while young, False after two minutes without: a loaded metrics-server
# can take longer at N=1000). The condition turns True, one status write each, when metrics-server
# has them; that is a change, not an idle write, so the quiet seconds start after it.
awaiting_metrics() {
  kubectl get iotmonitors --all-namespaces -o go-template='{{range .items}}{{range .status.conditions}}{{if eq .type "Autoscaling"}}{{.status}}{{end}}{{end}}{{"\n"}}{{end}}' |
    grep -cE '^(Unknown|False)$' || true
}
MANAGED_BY_LABEL=app.kubernetes.io/managed-by=iot-operator # on every pod of a stack
# pod_counts: "created bound ready"
pod_counts() { latest pods | awk '{n++} $2 != "-" {b++} $3 == "True" {r++} END {printf "%d %d %d", n, b, r}'; }

rows=()
failed=0
for n in $SIZES; do for k in $LAYOUTS; do
  tag=$n-${k}ns label="N=$n in $k namespace(s)"
  nodes=${BENCH_NODES:-$(((n * 5 + 109) / 110 + 2))}
  say "$label: a fresh control plane with $nodes kwok nodes"
  tests/cluster/down.sh >/dev/null 2>&1 || true
  # kwok nodes only: the benchmark needs no real containers.
  eval "$(IOT_REAL_NODE=0 IOT_CLUSTER_NODES=$nodes tests/cluster/up.sh 2>"$RUN/up-$tag.log")"
  install_crd 60
  if [ "$k" = 1 ]; then
    namespaces=bench scope=bench
  else
    namespaces=$(seq -f 'bench-%03g' 1 "$k" | tr '\n' ' ') scope="" # scope "": every namespace
  fi
  for ns in $namespaces; do kubectl create namespace "$ns" >/dev/null; done
  op_http=127.0.0.1:$(free_port)
  # One replica, so no leader election; pids/operator.pid lets down.sh stop it after a crash.
  # MALLOC_ARENA_MAX: as the operator's image sets it (images/images.conf).
  MALLOC_ARENA_MAX=${MALLOC_ARENA_MAX:-1} LEADER_ELECTION=false HTTP_ADDR=$op_http WATCH_NAMESPACE=$scope RUST_LOG=info \
    "$OP" run >"$RUN/operator-$tag.log" 2>&1 &
  op_pid=$!
  echo "$op_pid $(readlink -f "$OP")" >"$IOT_CLUSTER_DIR/pids/operator.pid"
  for _ in $(seq 1 100); do curl -sf "http://$op_http/metrics" >/dev/null && break; sleep 0.2; done
  api_requests >"$RUN/api-before-$tag.txt"
  for ((j = 0; j < APPLY_JOBS; j++)); do monitors_yaml "$n" "$j" "$APPLY_JOBS" >"$RUN/monitors-$tag-$j.yaml"; done

  follow monitors iotmonitors "$READY_TEMPLATE"
  follow pods pods "$POD_TEMPLATE" "$MANAGED_BY_LABEL"
  say "$label: applying $n IotMonitors"
  cpu_by_process >"$RUN/cpu-before-$tag.txt"; read -r busy0 all0 < <(machine_jiffies)
  t0=$(date +%s.%N)
  # A few kubectl processes at once: one sends its objects one after the other.
  apply_pids=()
  for ((j = 0; j < APPLY_JOBS; j++)); do kubectl apply -f "$RUN/monitors-$tag-$j.yaml" >/dev/null & apply_pids+=($!); done
  for p in "${apply_pids[@]}"; do wait "$p"; done
  t_applied=$(date +%s.%N)
  timeline=$RUN/timeline-$tag.txt
  echo "seconds ready pods_created pods_bound pods_ready reconciles operator_writes operator_rss_mb" >"$timeline"
  ready=0; next_row=0
  # Ready is checked every second (it is read from the watch's file, which costs the cluster
  # nothing); the timeline gets a row every $SAMPLE seconds and at the end.
  while :; do
    ready=$(ready_count)
    now=$(date +%s.%N)
    el=$(awk -v a="$t0" -v b="$now" 'BEGIN {printf "%.0f", b - a}')
    if [ "$el" -ge "$next_row" ] || [ "$ready" -ge "$n" ]; then
      echo "$el $ready $(pod_counts) $(op_metric iot_operator_reconciles_total) $(op_metric iot_operator_api_writes_total) $(rss_now_mb "$op_pid")" >>"$timeline"
      next_row=$((el + SAMPLE))
    fi
    [ "$ready" -ge "$n" ] && break
    if [ "$el" -ge "$TIMEOUT" ]; then say "$label: only $ready of $n Ready after $TIMEOUT s"; break; fi
    sleep 1
  done
  t_ready=$(date +%s.%N)
  stop_following
  secs=$(awk -v a="$t0" -v b="$t_ready" 'BEGIN {printf "%.0f", b - a}')
  apply_secs=$(awk -v a="$t0" -v b="$t_applied" 'BEGIN {printf "%.1f", b - a}')
  reconciles=$(op_metric iot_operator_reconciles_total)
  writes=$(op_metric iot_operator_api_writes_total)
  errors=$(op_metric iot_operator_reconcile_errors_total)
  dur_sum=$(op_metric iot_operator_reconcile_duration_seconds_sum)
  cpu_ready=$(cpu_secs "$op_pid")
  cpu_by_process >"$RUN/cpu-ready-$tag.txt"; read -r busy1 all1 < <(machine_jiffies)
  api_requests >"$RUN/api-ready-$tag.txt"

  # Quiet means settled: a monitor that is Ready may still wait for its HPAs' first metrics, and
  # the Autoscaling condition turning True then is a real change, not an idle write.
  settle_start=$(date +%s)
  while [ "$(awaiting_metrics)" -gt 0 ] && [ $(($(date +%s) - settle_start)) -lt 180 ]; do sleep "$SAMPLE"; done
  settle_secs=$(($(date +%s) - settle_start))
  api_requests >"$RUN/api-settled-$tag.txt"
  writes_settle=$(awk -v a="$writes" -v b="$(op_metric iot_operator_api_writes_total)" 'BEGIN {print b - a}')
  # The table's per-monitor figures count up to here; the quiet ones from here.
  writes=$(op_metric iot_operator_api_writes_total); reconciles=$(op_metric iot_operator_reconciles_total)
  errors=$(op_metric iot_operator_reconcile_errors_total)
  dur_sum=$(op_metric iot_operator_reconcile_duration_seconds_sum)
  say "$label: $ready Ready after $secs s; HPA metrics in $settle_secs s more ($writes_settle status writes); $QUIET quiet seconds"
  sleep "$QUIET"
  writes_quiet=$(awk -v a="$writes" -v b="$(op_metric iot_operator_api_writes_total)" 'BEGIN {print b - a}')
  reconciles_quiet=$(awk -v a="$reconciles" -v b="$(op_metric iot_operator_reconciles_total)" 'BEGIN {print b - a}')
  api_requests >"$RUN/api-quiet-$tag.txt"
  rss=$(rss_mb "$op_pid"); cpu=$(cpu_secs "$op_pid")
  status="$ready of $n"
  [ "$ready" -ge "$n" ] && [ "$writes_quiet" = 0 ] || failed=1
  row=$(awk -v n="$n" -v k="$k" -v nodes="$nodes" -v st="$status" -v s="$secs" -v ap="$apply_secs" -v r="$reconciles" \
    -v w="$writes" -v e="$errors" -v d="$dur_sum" -v rss="$rss" -v c1="$cpu_ready" -v c2="$cpu" \
    -v wq="$writes_quiet" -v rq="$reconciles_quiet" -v load="$(cut -d' ' -f1 /proc/loadavg)" 'BEGIN {
      printf "| %d | %d | %d | %s | **%s s** (apply %s s) | %.1f (%d errors) | %.1f | %.2f s | %s MB | %s s / %s s | %d (%d reconciles) | %s |",
        n, k, nodes, st, s, ap, r / n, e, w / n, (r > 0 ? d / r : 0), rss, c1, c2, wq, rq, load }')
  say "$row"
  rows+=("$row")
  # Every client's requests from apply to all Ready, by verb and resource, for the notes.
  join -a1 -a2 -e0 -o 0,1.2,2.2 "$RUN/api-before-$tag.txt" "$RUN/api-ready-$tag.txt" |
    awk -v n="$n" '{d = $3 - $2; if (d > 0) printf "%s %d (%.1f per monitor)\n", $1, d, d / n}' |
    sort -k2 -nr >"$RUN/api-delta-$tag.txt"
  join -a1 -a2 -e0 -o 0,1.2,2.2 "$RUN/api-settled-$tag.txt" "$RUN/api-quiet-$tag.txt" |
    awk '{d = $3 - $2; if (d > 0) printf "%s %d\n", $1, d}' | sort -k2 -nr >"$RUN/api-quiet-delta-$tag.txt"
  {
    echo "$label: API requests by verb and resource, apply → all Ready (every client):"; sed 's/^/  /' "$RUN/api-delta-$tag.txt" | head -40
    echo "$label: API requests during the quiet seconds (every client):"; sed 's/^/  /' "$RUN/api-quiet-delta-$tag.txt" | head -20
    busy=$(awk -v b0="$busy0" -v a0="$all0" -v b1="$busy1" -v a1="$all1" 'BEGIN {printf "%.0f", 100 * (b1 - b0) / (a1 - a0)}')
    echo "$label: CPU seconds by process, apply → all Ready (the machine's $(nproc) cores $busy % busy):"
    join "$RUN/cpu-before-$tag.txt" "$RUN/cpu-ready-$tag.txt" |
      awk -v s="$secs" -v c="$(nproc)" '{d = $3 - $2; printf "  %s %.1f (%.0f %% of the cores)\n", $1, d, 100 * d / (s * c)}' | sort -k2 -nr
    echo "$label: timeline (s ready created bound pods-ready reconciles operator-writes operator-RSS-MB):"; sed 's/^/  /' "$timeline"
  } | tee "$RUN/notes-$tag.txt" >&2
  stop_operator
  tests/cluster/down.sh >/dev/null 2>&1 || true
done; done

table=$(
  qps=${IOT_CLUSTER_QPS:+kube-controller-manager and kube-scheduler at $IOT_CLUSTER_QPS requests/s}
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) cores, \`scripts/bench-operator.sh\` ($profile build of the operator, one replica; ${qps:-control-plane client rates at their defaults}; HPA sync every ${IOT_HPA_SYNC_SECONDS} s)."
  echo
  echo "| monitors | namespaces | kwok nodes | Ready | time to all Ready | reconciles per monitor | operator API writes per monitor | mean reconcile | operator peak RSS | CPU at Ready / after quiet | operator writes in ${QUIET} quiet s | load avg at end |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
)
echo "$table"
write_doc_table "$DOC" bench-operator "$table"
exit "$failed"
