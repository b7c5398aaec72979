#!/usr/bin/env bash
# NetworkPolicies on the real node: what the policy engine (kube-router's firewall, node.sh) adds to
# `tests/cluster/up.sh`, and to the CoAP path's latency between two pods on the real node, side by
# side in one run.
#   1. up.sh of a fresh cluster without the engine (IOT_NETWORK_POLICY=0) and with it, alternately,
#      BENCH_UP_ROUNDS times each; the last one (with) stays up.
#   2. The release operator and an IotMonitor on the real node (InfluxDB, coap-server with plain CoAP
#      and its default-deny policies; no simulator, no ingestor), then a load pod on the real node
#      (sensor-sim load, one socket, window BENCH_WINDOW, BENCH_SECONDS) sending to the coap-server
#      Service: acknowledged readings/s and ack latency p50 / p99 with the engine on, then off
#      (tests/cluster/restart.sh network-policy off: no rule of it left), BENCH_ROUNDS times.
# The table goes to stdout and, between its markers, into docs/benchmarks.md. Needs root (the real
# node) and the control plane's binaries (tests/cluster/build.sh).
#
#   BENCH_UP_ROUNDS (2)  BENCH_ROUNDS (3)  BENCH_SECONDS (10)  BENCH_WINDOW (1)
#   BENCH_DOC (docs/benchmarks.md; empty: do not write it)  BENCH_KEEP (1: keep the run directory)
set -euo pipefail
# shellcheck source=lib/doc-table.sh
. "$(dirname "$0")/lib/doc-table.sh"
# shellcheck source=lib/crd.sh
. "$(dirname "$0")/lib/crd.sh"
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { printf '[bench-netpol %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
UP_ROUNDS=${BENCH_UP_ROUNDS:-2}; ROUNDS=${BENCH_ROUNDS:-3}
SECS=${BENCH_SECONDS:-10}; WINDOW=${BENCH_WINDOW:-1}
DOC=${BENCH_DOC-docs/benchmarks.md}
RUN=$(mktemp -d /tmp/iot-bench-netpol.XXXXXX)
export IOT_CLUSTER_DIR=$RUN/cluster
BIN=$(tests/cluster/build.sh --print)
kubectl() { "$BIN/kubectl" --kubeconfig="$IOT_CLUSTER_DIR/kubeconfig" --cache-dir="$RUN/kube-cache" "$@"; }
NS=bench-netpol
op_pid=""
cleanup() {
  if [ -n "$op_pid" ]; then kill "$op_pid" 2>/dev/null || true; wait "$op_pid" 2>/dev/null || true; fi
  tests/cluster/down.sh >/dev/null 2>&1 || true
  if [ "${BENCH_KEEP:-0}" = 1 ]; then say "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT

cargo build -q --release -p iot-operator
OP=$repo/target/release/iot-operator

# ---- 1. up.sh without and with the engine --------------------------------------------------------
up_times=()
for ((r = 1; r <= UP_ROUNDS; r++)); do
  for engine in 0 1; do
    t0=$(date +%s%N)
    IOT_NETWORK_POLICY=$engine tests/cluster/up.sh >/dev/null 2>"$RUN/up-$engine-$r.log" ||
      { tail -40 "$RUN/up-$engine-$r.log" >&2; exit 1; }
    ms=$((($(date +%s%N) - t0) / 1000000))
    up_times+=("$engine $ms")
    say "up.sh with engine=$engine: $ms ms"
    if [ "$engine" = 0 ] || [ "$r" -lt "$UP_ROUNDS" ]; then tests/cluster/down.sh >/dev/null 2>&1; fi
  done
done
engine_log=$(grep -h "NetworkPolicy engine" "$RUN"/up-1-*.log | tail -1)

# ---- 2. the CoAP path on the real node, engine on and off ----------------------------------------
images/build.sh --load coap-server sensor-sim influxdb >/dev/null
install_crd
kubectl create namespace "$NS" >/dev/null
KUBECONFIG=$IOT_CLUSTER_DIR/kubeconfig "$OP" run --namespace "$NS" --leader-election=false \
  --http-addr 127.0.0.1:0 >"$RUN/operator.log" 2>&1 &
op_pid=$!
sim_image=$(images/build.sh --ref sensor-sim)
influx_image=$(images/build.sh --ref influxdb)
real="nodeSelector: {iot-operator.dev/node: real}, tolerations: [{key: iot-operator.dev/real-node, operator: Equal, value: \"true\", effect: NoSchedule}]"
kubectl apply -n "$NS" -f - >/dev/null <<YAML
apiVersion: iot.operator.dev/v1alpha1
kind: IotMonitor
metadata: {name: lab}
spec:
  influxdb: {image: $influx_image, storage: {size: 64Mi}, $real}
  coap: {plaintext: true, $real}
  simulator: {enabled: false}
  aqi: {enabled: false}
  autoscaling: {enabled: false}
YAML
kubectl wait -n "$NS" --for=condition=Ready iotmonitor/lab --timeout=300s >/dev/null
coap_pod=$(kubectl get pods -n "$NS" -l app.kubernetes.io/name=coap-server -o jsonpath='{.items[0].metadata.name}')
kubectl get networkpolicies -n "$NS" -o name >"$RUN/policies.txt"
say "monitor Ready; coap-server pod $coap_pod; $(wc -l <"$RUN/policies.txt") NetworkPolicies"

# node_rules PATTERN: whether the node's filter table has a rule matching PATTERN (captured first:
# with pipefail, grep -q closing the pipe early would fail the pipeline).
node_rules() {
  local rules
  rules=$(nsenter --net="/run/netns/iot-node-$(cat "$IOT_CLUSTER_DIR/node/slot")" iptables-save -t filter)
  grep -q -- "$1" <<<"$rules"
}

# node_has_member IP: whether one of kube-router's ipsets in the node holds IP (a policy's peers).
node_has_member() {
  local sets
  sets=$(nsenter --net="/run/netns/iot-node-$(cat "$IOT_CLUSTER_DIR/node/slot")" ipset list 2>/dev/null)
  grep -qE "^${1//./\\.}( |$)" <<<"$sets"
}

# load NAME ENGINE: one load pod's JSON summary. The pod waits in an init container until the
# engine (when on) has its address among the policies' peers, so the run measures the path in
# its steady state; how long that took is printed on stderr ("admitted after").
load() {
  local ip t0 admit_ms
  kubectl apply -n "$NS" -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  nodeSelector: {iot-operator.dev/node: real}
  tolerations: [{key: iot-operator.dev/real-node, operator: Equal, value: "true", effect: NoSchedule}]
  restartPolicy: Never
  volumes: [{name: gate, emptyDir: {}}]
  initContainers:
  - name: gate
    image: localhost/iot-operator/busybox:1
    imagePullPolicy: Never
    command: [sh, -c, "until [ -e /gate/go ]; do sleep 0.1; done"]
    volumeMounts: [{name: gate, mountPath: /gate}]
  containers:
  - name: load
    image: $sim_image
    imagePullPolicy: Never
    args: [load, --server, "lab-coap-server:5683", --duration, "$SECS", --sockets, "1", --window, "$WINDOW", --drain, "5", --json]
YAML
  ip=""
  for _ in $(seq 1 600); do
    ip=$(kubectl get pod -n "$NS" "$1" -o jsonpath='{.status.podIP}')
    [ -n "$ip" ] && break
    sleep 0.1
  done
  [ -n "$ip" ] || { say "$1 got no address"; return 1; }
  t0=$(date +%s%N)
  if [ "$2" = on ]; then
    for _ in $(seq 1 600); do node_has_member "$ip" && break; sleep 0.1; done
    node_has_member "$ip" || { say "kube-router never admitted $1 ($ip)"; return 1; }
  fi
  admit_ms=$((($(date +%s%N) - t0) / 1000000))
  say "$1: admitted after $admit_ms ms (from its address)"
  kubectl exec -n "$NS" "$1" -c gate -- sh -c ': > /gate/go'
  kubectl wait -n "$NS" --for=jsonpath='{.status.phase}'=Succeeded "pod/$1" --timeout=$((SECS + 120))s >/dev/null
  # The summary is the last multi-line JSON object on stdout (progress lines, on stderr, are
  # one-line JSON).
  printf '%s ' "$admit_ms"
  kubectl logs -n "$NS" "$1" | python3 -c '
import json, sys
lines = sys.stdin.read().splitlines()
start = max(i for i, l in enumerate(lines) if l == "{")
end = next(i for i in range(start, len(lines)) if lines[i] == "}")
# a progress line (stderr) may land inside it: the summary'"'"'s own lines are indented
body = [l for l in lines[start + 1:end] if l.startswith("  ")]
print(json.dumps(json.loads("{" + "\n".join(body) + "}")))'
}

rows=()
for ((r = 1; r <= ROUNDS; r++)); do
  for engine in on off; do
    tests/cluster/restart.sh network-policy "$engine" >/dev/null 2>>"$RUN/restart.log"
    if [ "$engine" = on ]; then
      # Policies in force for the coap-server pod before the load starts.
      for _ in $(seq 1 300); do node_rules "POD name:$coap_pod " && break; sleep 0.2; done
      node_rules "POD name:$coap_pod " || { say "kube-router made no chain for $coap_pod"; exit 1; }
    else
      ! node_rules KUBE-ROUTER || { say "kube-router's rules are still there with the engine off"; exit 1; }
    fi
    json=$(load "load-$engine-$r" "$engine")
    rows+=("$engine $r $json")
    say "round $r, engine $engine: $json"
  done
done

table=$(python3 - "$UP_ROUNDS" "${up_times[@]}" -- "${rows[@]}" <<'PY'
import json, statistics, sys
args = sys.argv[1:]
up_rounds = int(args[0]); sep = args.index("--")
ups = [a.split() for a in args[1:sep]]
rows = [a.split(" ", 3) for a in args[sep + 1:]]
up = {e: [int(ms) / 1000 for k, ms in ups if k == e] for e in ("0", "1")}
print("| `up.sh` | runs (s) | median |")
print("|---|---|---|")
for e, name in (("0", "without the engine (`IOT_NETWORK_POLICY=0`)"), ("1", "with kube-router")):
    print(f"| {name} | {', '.join(f'{t:.1f}' for t in up[e])} | **{statistics.median(up[e]):.1f} s** |")
print()
print("| engine | round | new pod admitted after | acked readings/s | ack latency p50 / p99 / max | retransmissions | lost |")
print("|---|---|---|---|---|---|---|")
p50 = {"on": [], "off": []}; p99 = {"on": [], "off": []}
for engine, r, admit, blob in rows:
    s = json.loads(blob)
    p50[engine].append(s["latency_ms_p50"]); p99[engine].append(s["latency_ms_p99"])
    lost = s.get("failed", 0)
    admitted = f"{int(admit) / 1000:.1f} s" if engine == "on" else "–"
    print(f"| {engine} | {r} | {admitted} | {s['acked_per_sec']:,.0f} | {s['latency_ms_p50']:.3f} / "
          f"{s['latency_ms_p99']:.3f} / {s['latency_ms_max']:.1f} ms | {s['retransmissions']} | {lost} |")
on50, off50 = statistics.median(p50["on"]), statistics.median(p50["off"])
on99, off99 = statistics.median(p99["on"]), statistics.median(p99["off"])
print()
print(f"Median p50 with the engine {on50:.3f} ms, without {off50:.3f} ms: "
      f"**{(on50 / off50 - 1) * 100:+.1f} %** (goal: at most +10 %); "
      f"p99 {on99:.3f} ms against {off99:.3f} ms ({(on99 / off99 - 1) * 100:+.1f} %).")
PY
)
table="$table

$(date -u +%Y-%m-%d), $(nproc) cores, load average at the end $(cut -d' ' -f1-3 /proc/loadavg); ${engine_log#*] }."
printf '%s\n' "$table"
[ -n "$DOC" ] && write_doc_table "$DOC" bench-netpol "$table"
exit 0
