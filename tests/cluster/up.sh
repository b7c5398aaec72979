#!/usr/bin/env bash
# Starts a real Kubernetes control plane on 127.0.0.1 from the binaries build.sh caches: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler, kwok with fake nodes whose emulated kubelets
# report CPU and memory usage, one real node (containerd, kubelet, kube-proxy in a network namespace of
# its own; node.sh) with the local-path volume provisioner, and metrics-server, so HorizontalPodAutoscalers
# scale. No Docker; every port chosen at start; the real node needs root. Progress goes to stderr; the
# last line on stdout is
#
#   export KUBECONFIG=<absolute path>
#
# so `eval "$(tests/cluster/up.sh)"` works. Running it while the cluster is up only prints that line.
#
#   IOT_CLUSTER_DIR      state directory (default: <repo>/.run/cluster)
#   IOT_CLUSTER_NODES    number of fake nodes (default: 3)
#   IOT_CLUSTER_TIMEOUT  seconds to wait for each component (default: 120)
#   IOT_REAL_NODE        0: no real node (then no root needed); default 1
#   IOT_CLUSTER_QPS      API requests per second each controller of kube-controller-manager, and
#                        kube-scheduler, may send (burst: twice that; default: their own, 20 and 50)
#   IOT_HPA_SYNC_SECONDS how often the HPA controller syncs each HPA (default: 5, for the autoscaling
#                        tests; Kubernetes' own default is 15)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"
lock

NODES=${IOT_CLUSTER_NODES:-3}
TIMEOUT=${IOT_CLUSTER_TIMEOUT:-120}
QPS_FLAGS=()
[ -n "${IOT_CLUSTER_QPS:-}" ] && QPS_FLAGS=(--kube-api-qps="$IOT_CLUSTER_QPS" --kube-api-burst="$((IOT_CLUSTER_QPS * 2))")
# Every address of the cluster is in 198.18.0.0/15 (reserved for benchmarking), which never leaves
# this machine; the real node's slot decides its part (node.sh). kwok's pods are not routed at all.
# Without a real node: 16,382 Service addresses, enough for the operator benchmark's 1,000 monitors
# (3 ClusterIPs each; a /21 ran out at about 680). With one, the slot's range.
SERVICE_CIDR=198.19.64.0/18
KWOK_POD_CIDR=198.18.128.0/17
t0=$(date +%s)

# ---- already up? ----------------------------------------------------------------------------------
if [ -f "$MARKER" ] && any_running; then
  all=1
  for c in "${COMPONENTS[@]}"; do pid_of "$c" >/dev/null || all=0; done
  if real_node_enabled; then
    for c in "${NODE_COMPONENTS[@]}"; do pid_of "$c" >/dev/null || all=0; done
  fi
  if [ $all = 1 ] && kc get --raw=/readyz >/dev/null 2>&1; then
    say "the control plane in $STATE is already running"
    echo "export KUBECONFIG=$KUBECONFIG_PATH"
    exit 0
  fi
  say "found a partly running control plane in $STATE: stopping it and starting afresh"
  stop_all
fi

KWOK_METRICS=$BIN/kwok-$KWOK_VERSION-metrics-resource.yaml # extracted from kwok's module by build.sh
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl metrics-server; do
  [ -x "$BIN/$b" ] || { say "missing $BIN/$b: run tests/cluster/build.sh (or make deps) first"; exit 1; }
done
[ -s "$KWOK_METRICS" ] || { say "missing $KWOK_METRICS: run tests/cluster/build.sh (or make deps) first"; exit 1; }
for tool in openssl curl ss base64; do
  command -v "$tool" >/dev/null || { say "missing $tool (Debian: openssl curl iproute2 coreutils)"; exit 1; }
done
die() { say "ERROR: $*"; exit 1; }
real_node_enabled && node_check_prerequisites

# Start from an empty state directory, but never remove a directory that up.sh did not create.
if [ -e "$STATE" ] && [ ! -f "$MARKER" ] && [ -n "$(ls -A "$STATE" 2>/dev/null)" ]; then
  say "$STATE exists, is not empty and was not made by up.sh: refusing to touch it"
  exit 1
fi
# A real node left by a crash keeps mounts, a network namespace and cgroups after its processes died.
[ -f "$MARKER" ] && node_down
rm -rf --one-file-system "$STATE"
mkdir -p "$PIDS" "$LOGS" "$PKI" "$STATE/etcd" "$STATE/certs"
touch "$MARKER"

# ---- on failure: show why, and stop what was started -----------------------------------------------
current=""
on_exit() {
  local rc=$?
  if [ $rc -ne 0 ]; then
    if [ -n "$current" ] && [ -f "$LOGS/$current.log" ]; then
      say "---- last 40 lines of $LOGS/$current.log ----"
      tail -n 40 "$LOGS/$current.log" >&2 || true
      say "---- end of $current's log ----"
    fi
    say "FAILED${current:+ while starting $current}; stopping what was started (logs stay in $LOGS)"
    stop_all
  fi
}
trap on_exit EXIT
trap 'exit 130' INT TERM # so on_exit also cleans up after Ctrl-C

if real_node_enabled; then
  node_claim_slot || die "no real-node slot free"
  SERVICE_CIDR=$NODE_SERVICE_CIDR
fi
SERVICE_FIRST_IP=$(echo "$SERVICE_CIDR" | awk -F'[./]' '{ print $1 "." $2 "." $3 "." $4 + 1 }')

# ---- ports ---------------------------------------------------------------------------------------
# Random free ports below the kernel's ephemeral range (32768+), so outgoing connections cannot take
# them between the check and the bind. Each is checked against what listens now and what was chosen.
chosen=" "
free_port() { # VAR
  local p i
  for ((i = 0; i < 500; i++)); do
    p=$((20000 + RANDOM % 12000))
    [[ $chosen == *" $p "* ]] && continue
    [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] || continue
    chosen+="$p "
    printf -v "$1" '%s' "$p"
    return 0
  done
  die "no free port found"
}
for v in ETCD_PORT ETCD_PEER_PORT API_PORT KCM_PORT SCHED_PORT KWOK_PORT MS_PORT; do free_port "$v"; done
cat >"$STATE/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
API_PORT=$API_PORT
KCM_PORT=$KCM_PORT
SCHED_PORT=$SCHED_PORT
KWOK_PORT=$KWOK_PORT
MS_PORT=$MS_PORT
EOF

# ---- certificates ---------------------------------------------------------------------------------
say "certificates (openssl) in $PKI"
ossl() { openssl "$@" 2>>"$LOGS/openssl.log" >/dev/null || die "openssl $1 failed (see $LOGS/openssl.log)"; }
current=openssl
ca() { # NAME CN
  ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -keyout "$PKI/$1.key" -out "$PKI/$1.crt"
}
leaf() { # NAME SUBJECT CA EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  local ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$4${5:+
subjectAltName=$5}"
  ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "$2" -keyout "$PKI/$1.key" -out "$PKI/$1.csr"
  ossl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.crt" -CAkey "$PKI/$3.key" -CAcreateserial -days 3650 \
    -out "$PKI/$1.crt" -extfile <(printf '%s\n' "$ext")
  rm -f "$PKI/$1.csr"
}
ca ca iot-local-ca
ca front-proxy-ca iot-local-front-proxy-ca
leaf apiserver /CN=kube-apiserver ca serverAuth \
  "IP:127.0.0.1,IP:$SERVICE_FIRST_IP${NODE_HOST_IP:+,IP:$NODE_HOST_IP},DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
leaf admin "/O=system:masters/CN=admin" ca clientAuth
# The API server's client certificate towards kubelets (logs, exec, port-forward).
leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" ca clientAuth
leaf controller-manager /CN=system:kube-controller-manager ca clientAuth
leaf scheduler /CN=system:kube-scheduler ca clientAuth
leaf kwok "/O=system:masters/CN=kwok-controller" ca clientAuth
leaf kwok-serving /CN=kwok ca serverAuth "IP:127.0.0.1,DNS:localhost"
leaf front-proxy-client /CN=front-proxy-client front-proxy-ca clientAuth
leaf metrics-server /CN=system:metrics-server ca clientAuth
# The aggregator checks metrics-server's certificate against the APIService's caBundle (our CA) for the
# name of the Service it points at, <service>.<namespace>.svc.
leaf metrics-server-serving /CN=metrics-server ca serverAuth \
  "DNS:metrics-server.kube-system.svc,IP:127.0.0.1,DNS:localhost"
real_node_enabled && node_certs
ossl genrsa -out "$PKI/sa.key" 2048
ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
chmod 600 "$PKI"/*.key

# kubeconfig FILE USER [SERVER]: a kubeconfig for one client certificate, with the certificates embedded
# so the file stands alone.
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: iot-local
  cluster:
    server: ${3:-https://127.0.0.1:$API_PORT}
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
    client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
- name: iot-local
  context: {cluster: iot-local, user: $2}
current-context: iot-local
EOF
  chmod 600 "$1"
}
kubeconfig "$KUBECONFIG_PATH" admin
for u in controller-manager scheduler kwok metrics-server; do kubeconfig "$STATE/$u.kubeconfig" "$u"; done
real_node_enabled && kubeconfig "$STATE/local-path-provisioner.kubeconfig" local-path-provisioner
real_node_enabled && kubeconfig "$STATE/coredns.kubeconfig" coredns

# ---- processes ------------------------------------------------------------------------------------
https_ok() { curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$1"; }

start etcd --name=iot-local --data-dir="$STATE/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="iot-local=http://127.0.0.1:$ETCD_PEER_PORT" \
  --unsafe-no-fsync=true --auto-compaction-retention=1 --quota-backend-bytes=4294967296 --log-level=warn
wait_for etcd "healthy" curl -fsS --max-time 3 "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --secure-port="$API_PORT" \
  --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
  --cert-dir="$STATE/certs" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --authorization-mode=Node,RBAC --allow-privileged=true \
  --kubelet-preferred-address-types=InternalIP --kubelet-certificate-authority="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra-
wait_for kube-apiserver "/readyz ok" https_ok "https://127.0.0.1:$API_PORT/readyz"

start kube-controller-manager \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/certs/kube-controller-manager" \
  --leader-elect=false --controllers='*' --use-service-account-credentials=true \
  --cluster-name=iot-local --service-cluster-ip-range="$SERVICE_CIDR" \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --enable-hostpath-provisioner=true \
  --horizontal-pod-autoscaler-sync-period="${IOT_HPA_SYNC_SECONDS:-5}s" ${QPS_FLAGS[@]+"${QPS_FLAGS[@]}"}
start kube-scheduler \
  --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$STATE/certs/kube-scheduler" \
  --leader-elect=false ${QPS_FLAGS[@]+"${QPS_FLAGS[@]}"}
start kwok \
  --kubeconfig="$STATE/kwok.kubeconfig" \
  --config="$here/kwok-stages.yaml" --config="$KWOK_METRICS" --config="$here/kwok-usage.yaml" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-ip=127.0.0.1 --node-port="$KWOK_PORT" --server-address="127.0.0.1:$KWOK_PORT" \
  --tls-cert-file="$PKI/kwok-serving.crt" --tls-private-key-file="$PKI/kwok-serving.key" \
  --node-lease-duration-seconds=40 --cidr="$KWOK_POD_CIDR"
wait_for kube-controller-manager "/healthz ok" curl -fsSk --max-time 3 "https://127.0.0.1:$KCM_PORT/healthz"
wait_for kube-scheduler "/healthz ok" curl -fsSk --max-time 3 "https://127.0.0.1:$SCHED_PORT/healthz"
wait_for kwok "/healthz ok" curl -fsSk --max-time 3 "https://127.0.0.1:$KWOK_PORT/healthz"

# ---- fake nodes and storage ----------------------------------------------------------------------
# Nodes follow kwok's kwokctl node template; no taint, so any pod (the operator's too) lands on them.
current=kube-apiserver
nodes_yaml() {
  local i
  for ((i = 0; i < NODES; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
    metrics.k8s.io/resource-metrics-path: /metrics/nodes/kwok-node-$i/metrics/resource
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    node-role.kubernetes.io/agent: ""
    topology.kubernetes.io/zone: zone-$i
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 1Ti}
  nodeInfo: {architecture: amd64, operatingSystem: linux}
EOF
  done
}
# The default StorageClass uses kube-controller-manager's own hostPath provisioner (enabled above):
# every PVC gets a fresh PV at once (Immediate), the real PV binder binds it, and deleting the PVC
# deletes the PV (Delete), so claims never run out however many tests run. The directories it makes
# live in /tmp/hostpath_pv/; down.sh removes those of PVs still present.
storage_yaml() {
  cat <<EOF
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
EOF
}
# ---- metrics-server: metrics.k8s.io for the HPA controller and `kubectl top` ------------------------
# Data path: HPA controller -> apiserver (aggregator) -> metrics-server -> each node's emulated kubelet in
# kwok, whose usage comes from kwok-usage.yaml (pod annotations). Without kube-proxy a ClusterIP is
# unreachable, so the APIService points at a Service of type ExternalName 127.0.0.1: the aggregator
# resolves that to https://127.0.0.1:<APIService port> (kwokctl's binary runtime does the same). The
# aggregator authenticates with the front-proxy client certificate and checks metrics-server's
# certificate against the caBundle. metrics-server runs as its own user with the usual RBAC: read pods
# and nodes, nodes/metrics, delegated authn/authz, and the authentication ConfigMap in kube-system.
# It scrapes https://<node InternalIP>:<node status port><metrics.k8s.io/resource-metrics-path>, i.e.
# kwok's TLS port (certificate from our CA) and the per-node path set on the nodes above.
# metrics_server_binding KIND NAME ROLE_KIND ROLE: grants ROLE to metrics-server's user (a
# RoleBinding in kube-system).
metrics_server_binding() {
  local ns=""
  if [ "$1" = RoleBinding ]; then ns=$'\n  namespace: kube-system'; fi
  cat <<EOF
---
apiVersion: rbac.authorization.k8s.io/v1
kind: $1
metadata:
  name: $2$ns
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: $3, name: "$4"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:metrics-server"}]
EOF
}

metrics_server_yaml() {
  cat <<EOF
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
$(metrics_server_binding ClusterRoleBinding system:metrics-server ClusterRole system:metrics-server)
$(metrics_server_binding ClusterRoleBinding metrics-server:system:auth-delegator ClusterRole system:auth-delegator)
$(metrics_server_binding RoleBinding metrics-server-auth-reader Role extension-apiserver-authentication-reader)
---
# Whoever may view a namespace may read its metrics (kubectl top), as in a usual install.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:aggregated-metrics-reader
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
    rbac.authorization.k8s.io/aggregate-to-edit: "true"
    rbac.authorization.k8s.io/aggregate-to-admin: "true"
rules:
- apiGroups: [metrics.k8s.io]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: v1
kind: Service
metadata:
  name: metrics-server
  namespace: kube-system
spec:
  type: ExternalName
  externalName: 127.0.0.1
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  caBundle: $(base64 -w0 "$PKI/ca.crt")
  service: {namespace: kube-system, name: metrics-server, port: $MS_PORT}
EOF
}
# nodes_scraped: metrics-server has fetched and decoded every node's /metrics/resource (its own counter),
# so address, port, path and TLS all work. metrics.k8s.io itself lists a node only once a pod runs
# there: metrics-server drops points with zero usage, and an empty kwok node uses nothing.
nodes_scraped() {
  local n
  n=$(https_ok "https://127.0.0.1:$MS_PORT/metrics" |
    sed -n 's/^metrics_server_kubelet_request_total{success="true"} \([0-9.e+]*\)$/\1/p')
  [ -n "$n" ] && awk -v n="$n" -v want="$SCRAPED" 'BEGIN { exit !(n + 0 >= want) }'
}

{ nodes_yaml; storage_yaml; metrics_server_yaml; } | kc apply -f - >>"$LOGS/kubectl.log" 2>&1 ||
  { current=kubectl; die "applying nodes, StorageClass and metrics-server's objects failed"; }
wait_for kwok "$NODES node(s) Ready" kc wait --for=condition=Ready node --selector=type=kwok --timeout=5s
SCRAPED=$NODES
if real_node_enabled; then
  node_up
  SCRAPED=$((NODES + 1))
fi
# Started once the nodes are Ready (addresses and port set), so its first scrape already counts.
# --metric-resolution=10s is the smallest allowed; the kubelet timeout must stay below 90 % of it.
start metrics-server \
  --kubeconfig="$STATE/metrics-server.kubeconfig" \
  --authentication-kubeconfig="$STATE/metrics-server.kubeconfig" \
  --authorization-kubeconfig="$STATE/metrics-server.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$MS_PORT" --cert-dir="$STATE/certs/metrics-server" \
  --tls-cert-file="$PKI/metrics-server-serving.crt" --tls-private-key-file="$PKI/metrics-server-serving.key" \
  --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
  --kubelet-certificate-authority="$PKI/ca.crt" \
  --metric-resolution=10s --kubelet-request-timeout=5s
wait_for kube-controller-manager "ServiceAccount default/default" kc get serviceaccount default --namespace=default
wait_for metrics-server "/livez ok" https_ok "https://127.0.0.1:$MS_PORT/livez"
wait_for metrics-server "APIService v1beta1.metrics.k8s.io Available" \
  kc wait --for=condition=Available apiservice/v1beta1.metrics.k8s.io --timeout=5s
wait_for metrics-server "scraped $SCRAPED node(s)" nodes_scraped
current=""

# ---- summary --------------------------------------------------------------------------------------
{
  printf '\n%-24s %-8s %-22s %s\n' COMPONENT PID LISTENS LOG
  row() { printf '%-24s %-8s %-22s %s\n' "$1" "$(pid_of "$1")" "$2" "$LOGS/$1.log"; }
  row etcd "127.0.0.1:$ETCD_PORT,$ETCD_PEER_PORT"
  row kube-apiserver "127.0.0.1:$API_PORT"
  row kube-controller-manager "127.0.0.1:$KCM_PORT"
  row kube-scheduler "127.0.0.1:$SCHED_PORT"
  row kwok "127.0.0.1:$KWOK_PORT"
  row metrics-server "127.0.0.1:$MS_PORT"
  if real_node_enabled; then
    row api-forward "$NODE_HOST_IP:$API_PORT"
    row containerd "$NODE_SOCK"
    row kubelet "$NODE_IP:10250"
    row kube-proxy "netns $NODE_NETNS"
    network_policy_enabled && row kube-router "netns $NODE_NETNS"
    row local-path-provisioner "-"
    row volume-modes "-"
    row coredns "$NODE_HOST_IP:53"
  fi
  printf '\n%s\n' "Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, metrics-server $METRICS_SERVER_VERSION; nodes: $(kc get nodes -o name | tr '\n' ' ')"
  printf 'up in %ss; state in %s; stop with tests/cluster/down.sh\n\n' "$(($(date +%s) - t0))" "$STATE"
} >&2
echo "export KUBECONFIG=$KUBECONFIG_PATH"
