# shellcheck shell=bash disable=SC2034 # (sourced by lib.sh; variables are used by up.sh and down.sh)
# The real node: containerd + runc, CNI bridge, kubelet, kube-proxy and kube-router's NetworkPolicy
# firewall, in a network namespace of its
# own, so that every iptables rule, bridge, veth and route of the node lives and dies with that
# namespace, and several local clusters (one per state directory) can each have a real node at once.
#
#   host                                   network namespace iot-node-<slot>
#   127.0.0.1: API server, etcd, kwok ...
#   198.19.<slot>.254 (veth iotn<slot>) <-> eth0 198.19.<slot>.1 = the node's InternalIP
#     socat 198.19.<slot>.254:<API port>       kubelet :10250, kube-proxy (iptables), containerd,
#                                              kube-router --run-firewall (NetworkPolicy: iptables, ipset)
#       -> 127.0.0.1:<API port>                cni0 198.18.<slot>.1/24 -> pods 198.18.<slot>.0/24
#   coredns 198.19.<slot>.254:53 (cluster DNS: names of Services and pods, nothing else)
#   routes: 198.18.<slot>.0/24 and the Service range via 198.19.<slot>.1; 198.18.0.0/15 unreachable
#
# The namespace has no default route: nothing in it (pods, or containerd trying to pull an image) can
# reach beyond this machine. Pods and the host reach each other through the veth; the API server is
# reached through the socat forwarder (the API server itself only listens on loopback).
#
# What it starts, and where it is recorded (so down.sh removes it, also after a crash):
#   $NODE_DIR/slot                  the slot number; everything below is derived from it
#   /run/iot-operator/node-<slot>   which state directory owns the slot (machine-wide registry)
#   processes in the namespace      found with `ip netns pids`, whatever was recorded
#   pod processes                   the cgroup /iot-node-<slot> in every hierarchy (kubelet cgroupRoot)
#   mounts                          all under $NODE_DIR (kubelet root, containerd root and state, pod
#                                   network namespaces: netns_mounts_under_state_dir)

NODE_DIR=$STATE/node
NODE_NAME=real-0
# The label and taint that set the real node apart. Pods without the toleration stay on the kwok nodes
# (which have every image "present"); a pod that should run for real tolerates the taint and selects
# the label. See docs/control-plane.md.
NODE_LABEL_KEY=iot-operator.dev/node
NODE_LABEL_VALUE=real
NODE_TAINT_KEY=iot-operator.dev/real-node
NODE_REGISTRY=/run/iot-operator
NODE_SLOTS=16
PAUSE_IMAGE=localhost/iot-operator/pause:1
HELPER_IMAGE=localhost/iot-operator/busybox:1
LOCAL_PATH_CLASS=local-path
CLUSTER_DOMAIN=cluster.local

# real_node_enabled: the real node is on unless IOT_REAL_NODE=0.
real_node_enabled() { [ "${IOT_REAL_NODE:-1}" != 0 ]; }
# network_policy_enabled: the real node enforces NetworkPolicies unless IOT_NETWORK_POLICY=0.
network_policy_enabled() { [ "${IOT_NETWORK_POLICY:-1}" != 0 ]; }
# kube-router's health port, inside the node's network namespace (each node has its own).
KUBE_ROUTER_HEALTH_PORT=20244

# node_vars SLOT: every name and address of the node in that slot.
node_vars() {
  NODE_SLOT=$1
  NODE_NETNS=iot-node-$1
  NODE_HOST_IF=iotn$1
  NODE_IP=198.19.$1.1
  NODE_HOST_IP=198.19.$1.254
  NODE_POD_CIDR=198.18.$1.0/24
  NODE_BRIDGE_IP=198.18.$1.1
  NODE_SERVICE_CIDR=198.19.$((128 + 8 * $1)).0/21
  NODE_SERVICE_FIRST_IP=198.19.$((128 + 8 * $1)).1
  NODE_CGROUP=iot-node-$1
  NODE_SOCK=$NODE_DIR/containerd.sock
}

# The whole range this project's clusters use. It never leaves the machine: routes of live nodes are
# more specific, and the rest is unreachable here instead of following the default route.
NODE_RANGE=198.18.0.0/15

node_say() { printf '[node %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# in_node COMMAND...: runs a command inside the node's network namespace only (not its mount namespace,
# unlike `ip netns exec`: the kubelet and containerd must see each other's mounts).
in_node() { nsenter --net="/run/netns/$NODE_NETNS" -- "$@"; }

# node_claim_slot: takes the lowest free slot and creates its network namespace, under a machine-wide
# lock. A slot is taken while its owner's state directory records it and its namespace exists; a slot
# left behind (owner gone, or namespace gone after a reboot) is torn down and reused.
node_claim_slot() {
  local k f owner
  mkdir -p "$NODE_REGISTRY" "$NODE_DIR"
  exec 8>"$NODE_REGISTRY/slots.lock"
  flock -w 120 8 || { node_say "another cluster holds $NODE_REGISTRY/slots.lock"; return 1; }
  for ((k = 0; k < NODE_SLOTS; k++)); do
    f=$NODE_REGISTRY/node-$k
    if [ -f "$f" ]; then
      owner=$(cat "$f")
      if [ "$owner" != "$STATE" ] && [ "$(cat "$owner/node/slot" 2>/dev/null)" = "$k" ] &&
        [ -e "/run/netns/iot-node-$k" ]; then
        continue
      fi
      node_say "slot $k: left behind by $owner; removing what is left of it"
      node_teardown_slot "$k" "$owner/node"
    elif [ -e "/run/netns/iot-node-$k" ]; then
      node_say "slot $k: a network namespace without an owner; removing it"
      node_teardown_slot "$k" ""
    fi
    echo "$STATE" >"$f"
    echo "$k" >"$NODE_DIR/slot"
    node_vars "$k"
    ip netns add "$NODE_NETNS"
    flock -u 8
    exec 8>&-
    return 0
  done
  flock -u 8
  exec 8>&-
  node_say "all $NODE_SLOTS real-node slots are in use (see $NODE_REGISTRY); set IOT_REAL_NODE=0"
  return 1
}

# node_recorded_slot: the slot recorded in this state directory, if any.
node_recorded_slot() {
  local k
  k=$(cat "$NODE_DIR/slot" 2>/dev/null) || return 1
  [[ $k =~ ^[0-9]+$ ]] || return 1
  echo "$k"
}

# node_cgroup_dirs: the node's cgroup directory in every mounted cgroup hierarchy.
node_cgroup_dirs() {
  local d
  for d in /sys/fs/cgroup/*/"$NODE_CGROUP" /sys/fs/cgroup/"$NODE_CGROUP"; do
    [ -d "$d" ] && echo "$d"
  done
  return 0
}

# node_cgroup_pids: every process in the node's cgroups (the pods' containers).
node_cgroup_pids() {
  local d
  while IFS= read -r d; do
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
  done < <(node_cgroup_dirs) | sort -un
}

# node_netns_pids: every process in the node's network namespace (kubelet, kube-proxy, containerd and
# its shims), whatever was recorded for them.
node_netns_pids() {
  [ -e "/run/netns/$NODE_NETNS" ] || return 0
  ip netns pids "$NODE_NETNS" 2>/dev/null || true
}

# kill_until_gone SIGNAL LISTER: sends SIGNAL to what LISTER prints, SIGKILL to what is left after 5 s.
kill_until_gone() {
  local lister=$2 pids i
  # shellcheck disable=SC2086 # PID lists are split on purpose
  {
    pids=$($lister)
    [ -n "$pids" ] || return 0
    kill "-$1" $pids 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      pids=$($lister)
      [ -n "$pids" ] || return 0
      [ "$i" = 50 ] && { kill -KILL $pids 2>/dev/null || true; }
      sleep 0.1
    done
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  }
  pids=$($lister)
  [ -z "$pids" ] || node_say "WARNING: processes still alive: $pids"
}

# node_unmount DIR: unmounts every mount point at or below DIR, deepest first (lazily if busy).
node_unmount() {
  local dir=$1 m
  [ -n "$dir" ] || return 0
  # mountinfo's 5th field is the mount point, with spaces as \040; ours never contain spaces.
  while IFS= read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || node_say "WARNING: cannot unmount $m"
  done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
}

# node_teardown_slot SLOT DIR: removes everything of the node in SLOT whose files live in DIR (DIR may
# be empty or gone after a crash). Order: the kubelet first (it would restart containers), then the
# pods' processes, then the rest of the namespace, then mounts, cgroups, the namespace itself (with its
# bridges, veths, iptables rules and routes), and the host side. DIR is removed only when it is this
# state directory's; another owner's directory loses its mounts and its claim on the slot.
node_teardown_slot() {
  local slot=$1 dir=$2 saved_dir=$NODE_DIR d
  NODE_DIR=${dir:-/nonexistent}
  node_vars "$slot"
  kill_until_gone TERM node_kubelet_pids
  kill_until_gone KILL node_cgroup_pids
  kill_until_gone TERM node_netns_pids
  kill_until_gone KILL node_cgroup_pids
  [ -n "$dir" ] && node_unmount "$dir"
  while IFS= read -r d; do
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$d" ] && node_say "WARNING: cgroup $d is still there"
  done < <(node_cgroup_dirs)
  if [ -e "/run/netns/$NODE_NETNS" ]; then
    ip netns delete "$NODE_NETNS" 2>/dev/null || node_say "WARNING: cannot delete network namespace $NODE_NETNS"
  fi
  ip link delete "$NODE_HOST_IF" 2>/dev/null || true # normally gone with the namespace
  # What the kubelet and libcni keep in fixed places on the host: the kubelet's symlinks to the
  # containers' logs, and libcni's cache of each pod's network results (the pod network's is named
  # after it, and the loopback's after the same sandbox ID).
  [ -n "$dir" ] && find /var/log/containers -maxdepth 1 -lname "$dir/*" -delete 2>/dev/null || true
  local result id
  for result in /var/lib/cni/results/"$NODE_NETNS"-*; do
    [ -e "$result" ] || continue
    id=${result#/var/lib/cni/results/"$NODE_NETNS"-}
    id=${id%-*}
    rm -f "$result" "/var/lib/cni/results/cni-loopback-$id-lo"
  done
  # The shims' socket directory (shared by every containerd of the machine, so only when empty).
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true
  if [ -n "$dir" ] && [ "$dir" = "$saved_dir" ]; then
    [ -d "$dir" ] && rm -rf --one-file-system -- "$dir"
  elif [ -n "$dir" ]; then
    rm -f -- "$dir/slot"
  fi
  rm -f "$NODE_REGISTRY/node-$slot"
  # The last node of the machine removes the shared unreachable route.
  if ! compgen -G "$NODE_REGISTRY/node-*" >/dev/null; then
    ip route del unreachable "$NODE_RANGE" 2>/dev/null || true
  fi
  NODE_DIR=$saved_dir
}

# node_kubelet_pids: the kubelet, kube-proxy and kube-router of this node (stopped before anything else).
node_kubelet_pids() {
  local p exe
  for p in $(node_netns_pids); do
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    case ${exe% (deleted)} in */kubelet | */kube-proxy | */kube-router) echo "$p" ;; esac
  done
}

# node_down: tears down this state directory's node, if it has one (also after a crash). When another
# cluster has meanwhile taken the slot over (this one was left for dead), only this directory's own
# mounts and files go.
node_down() {
  local slot owner
  slot=$(node_recorded_slot) || { [ -d "$NODE_DIR" ] && node_unmount "$NODE_DIR"; return 0; }
  node_vars "$slot"
  stop volume-modes local-path-provisioner coredns api-forward kube-router kube-proxy kubelet containerd
  owner=$(cat "$NODE_REGISTRY/node-$slot" 2>/dev/null || echo "$STATE")
  if [ "$owner" = "$STATE" ]; then
    node_say "removing the real node (slot $slot, network namespace $NODE_NETNS)"
    node_teardown_slot "$slot" "$NODE_DIR"
  else
    node_say "slot $slot now belongs to $owner: removing only $NODE_DIR"
    node_unmount "$NODE_DIR"
    rm -rf --one-file-system -- "$NODE_DIR"
  fi
}

# node_check_prerequisites: root, and the Debian packages install-deps.sh installs.
node_check_prerequisites() {
  local t
  [ "$(id -u)" = 0 ] || die "the real node needs root (containerd, kubelet, a network namespace); run as root or set IOT_REAL_NODE=0"
  for t in containerd containerd-shim-runc-v2 runc ctr ip nsenter socat iptables ip6tables flock; do
    command -v "$t" >/dev/null || die "missing $t: run scripts/install-deps.sh (Debian: containerd runc socat iptables)"
  done
  if network_policy_enabled; then
    command -v ipset >/dev/null || die "missing ipset (kube-router's NetworkPolicy firewall): run scripts/install-packages.sh, or set IOT_NETWORK_POLICY=0"
    [ -x "$BIN/kube-router" ] || die "missing $BIN/kube-router: run tests/cluster/build.sh, or set IOT_NETWORK_POLICY=0"
  fi
  for t in bridge host-local portmap loopback; do
    [ -x "/usr/lib/cni/$t" ] || die "missing /usr/lib/cni/$t: run scripts/install-deps.sh (Debian: containernetworking-plugins)"
  done
  for t in kubelet kube-proxy local-path-provisioner coredns; do
    [ -x "$BIN/$t" ] || die "missing $BIN/$t: run tests/cluster/build.sh (or make deps) first"
  done
}

# node_cgroup_adopt PID: moves a host-side helper of the node (the API forwarder, the provisioner) into
# the node's cgroup, so a teardown after a crash finds it even when its PID file is gone.
node_cgroup_adopt() {
  local d=/sys/fs/cgroup/pids # cgroup v1; v2 has one hierarchy at the top
  [ -f /sys/fs/cgroup/cgroup.controllers ] && d=/sys/fs/cgroup
  mkdir -p "$d/$NODE_CGROUP/host" && echo "$1" >"$d/$NODE_CGROUP/host/cgroup.procs" ||
    node_say "WARNING: could not move pid $1 into $d/$NODE_CGROUP/host"
}

# node_network: the namespace's link to the host, its addresses and routes, and the host's routes to
# the node's pods and Services.
node_network() {
  node_say "network: namespace $NODE_NETNS, node $NODE_IP, pods $NODE_POD_CIDR, Services $NODE_SERVICE_CIDR"
  ip link add "$NODE_HOST_IF" type veth peer name eth0 netns "$NODE_NETNS"
  ip addr add "$NODE_HOST_IP/24" dev "$NODE_HOST_IF"
  ip link set "$NODE_HOST_IF" up
  in_node ip link set lo up
  in_node ip addr add "$NODE_IP/24" dev eth0
  in_node ip link set eth0 up
  # Forwarding between eth0 and the pods' bridge, inside the namespace only; the host forwards nothing.
  in_node sysctl -qw net.ipv4.ip_forward=1
  ip route add "$NODE_POD_CIDR" via "$NODE_IP" dev "$NODE_HOST_IF"
  ip route add "$NODE_SERVICE_CIDR" via "$NODE_IP" dev "$NODE_HOST_IF"
  ip route add unreachable "$NODE_RANGE" 2>/dev/null || true # shared by all slots; exists already
}

# node_containerd_config: containerd with all of its state under $NODE_DIR. Why each setting:
#   restrict_oom_score_adj    the machine lacks CAP_SYS_RESOURCE: a negative oom_score_adj fails runc
#   SystemdCgroup = false     cgroupfs, like the kubelet (cgroup v1 here, no systemd)
#   netns_mounts_under_state_dir  the pods' network namespaces are files under $NODE_DIR
#   config_path               a pull of a missing image goes to 127.0.0.1:9 and fails at once
node_containerd_config() {
  local host
  mkdir -p "$NODE_DIR/net.d" "$NODE_DIR/cni" "$NODE_DIR/registry"
  for host in _default docker.io ghcr.io localhost quay.io registry.k8s.io gcr.io; do
    mkdir -p "$NODE_DIR/registry/$host"
    cat >"$NODE_DIR/registry/$host/hosts.toml" <<TOML
# No registry is reachable from here: every image is imported (images/build.sh --load).
server = "http://127.0.0.1:9"
[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
TOML
  done
  cat >"$NODE_DIR/containerd.toml" <<TOML
version = 2
root = "$NODE_DIR/root"
state = "$NODE_DIR/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$NODE_SOCK"
[ttrpc]
  address = "$NODE_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/net.d"
    max_conf_num = 1
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    snapshotter = "overlayfs"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    SystemdCgroup = false
    Root = "$NODE_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE_DIR/registry"
TOML
  # The pods' network: one bridge in the namespace, addresses from host-local (its state under
  # $NODE_DIR), no masquerading (nothing leaves the machine), hairpin so a pod reaches itself through
  # its own Service.
  cat >"$NODE_DIR/net.d/10-iot-node.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$NODE_NETNS",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR", "gateway": "$NODE_BRIDGE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
}

# node_kubelet_config: see docs/control-plane.md for why each setting.
node_kubelet_config() {
  mkdir -p "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs"
  # The resolver of pods with dnsPolicy Default (and of the kubelet's own lookups): the cluster DNS
  # too, never the machine's resolver, so no lookup leaves the machine. It answers cluster names only.
  printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$NODE_HOST_IP" >"$NODE_DIR/resolv.conf"
  cat >"$NODE_DIR/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$NODE_SOCK
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
podLogsDir: $NODE_DIR/pod-logs
resolvConf: $NODE_DIR/resolv.conf
clusterDNS: [$NODE_HOST_IP]
clusterDomain: $CLUSTER_DOMAIN
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
localStorageCapacityIsolation: false
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%, imagefs.inodesFree: 1%}
evictionPressureTransitionPeriod: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
nodeStatusReportFrequency: 10s
syncFrequency: 10s
maxPods: 110
YAML
  cat >"$NODE_DIR/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $NODE_DIR/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
mode: iptables
clusterCIDR: $NODE_POD_CIDR
nodePortAddresses: [$NODE_IP/32]
oomScoreAdj: 0
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {syncPeriod: 30s, minSyncPeriod: 1s}
YAML
}

# node_certs: the node's certificates from the cluster CA (called by up.sh with its leaf function).
node_certs() {
  leaf kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" ca clientAuth
  leaf kubelet-serving "/CN=$NODE_NAME" ca serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  leaf kube-proxy /CN=system:kube-proxy ca clientAuth
  leaf local-path-provisioner /CN=system:local-path-provisioner ca clientAuth
  leaf coredns /CN=system:coredns ca clientAuth
  leaf kube-router /CN=system:kube-router ca clientAuth
}

# node_images: the pause image (every pod's sandbox) and the helper pods' busybox, built here
# (images/build.sh, a few seconds) and imported into the node's containerd. Workload images are loaded
# the same way by `images/build.sh --load` (make images) once the node is up.
node_images() {
  local ref
  IOT_CLUSTER_DIR=$STATE "$repo/images/build.sh" --load pause busybox >&2 2>>"$LOGS/images.log" ||
    die "building or importing the pause and busybox images failed (see $LOGS/images.log)"
  for ref in "$PAUSE_IMAGE" "$HELPER_IMAGE"; do
    ctr --address "$NODE_SOCK" -n k8s.io images ls -q | grep -x "$ref" >/dev/null ||
      die "the node's containerd has no $ref after images/build.sh --load"
  done
  node_say "images: $PAUSE_IMAGE, $HELPER_IMAGE"
}

# node_start_kubelet: the kubelet, until its node is Ready (also restart.sh kubelet).
node_start_kubelet() {
  start_in_node kubelet "$(readlink -f "$BIN/kubelet")" \
    --config="$NODE_DIR/kubelet.yaml" --kubeconfig="$NODE_DIR/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" --cert-dir="$NODE_DIR/kubelet/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels="type=real,$NODE_LABEL_KEY=$NODE_LABEL_VALUE"
  wait_for kubelet "node $NODE_NAME Ready" kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
}

# node_up: starts the real node; up.sh calls it once the control plane and the kwok nodes are up, with
# its helpers (start, start_in_node, wait_for, die, kc, kubeconfig) defined.
node_up() {
  node_network
  # The API server listens on loopback only; the node and its pods reach it through the veth.
  start_exe api-forward "$(command -v socat)" \
    "TCP-LISTEN:$API_PORT,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$API_PORT"
  node_cgroup_adopt "$(pid_of api-forward)"

  node_containerd_config
  start_in_node containerd "$(command -v containerd)" --config "$NODE_DIR/containerd.toml"
  wait_for containerd "its socket answering" ctr --address "$NODE_SOCK" version
  node_images

  node_kubelet_config
  kubeconfig "$NODE_DIR/kubelet.kubeconfig" kubelet "https://$NODE_HOST_IP:$API_PORT"
  kubeconfig "$NODE_DIR/kube-proxy.kubeconfig" kube-proxy "https://$NODE_HOST_IP:$API_PORT"
  kubeconfig "$NODE_DIR/kube-router.kubeconfig" kube-router "https://$NODE_HOST_IP:$API_PORT"
  local cg
  # The kubelet's cgroupRoot must exist in every hierarchy; it makes kubepods/ below it.
  for cg in /sys/fs/cgroup/*/; do
    case $cg in */unified/) continue ;; esac
    [ -f "$cg/cgroup.procs" ] && mkdir -p "$cg$NODE_CGROUP"
  done
  node_start_kubelet
  start_in_node kube-proxy "$(readlink -f "$BIN/kube-proxy")" --config="$NODE_DIR/kube-proxy.yaml"
  wait_for kube-proxy "/healthz ok" in_node curl -fsS --max-time 3 http://127.0.0.1:10256/healthz

  # Pods reach the API server through the `kubernetes` Service; with --endpoint-reconciler-type=none
  # nothing else writes its endpoints.
  node_yaml | kc apply -f - >>"$LOGS/kubectl.log" 2>&1 ||
    { current=kubectl; die "applying the real node's objects failed (see $LOGS/kubectl.log)"; }
  network_policy_enabled && node_start_network_policy
  node_dns
  mkdir -p "$NODE_DIR/volumes"
  start_exe local-path-provisioner "$(readlink -f "$BIN/local-path-provisioner")" start \
    --kubeconfig="$STATE/local-path-provisioner.kubeconfig" --namespace=local-path-storage \
    --configmap-name=local-path-config --service-account-name=local-path-provisioner \
    --provisioner-name=rancher.io/local-path --helper-image="$HELPER_IMAGE"
  node_cgroup_adopt "$(pid_of local-path-provisioner)"
  # The default class's hostPath volumes, writable by the non-root pods that run here.
  start_exe volume-modes "$(readlink -f "$(command -v bash)")" "$here/volume-modes.sh" /tmp/hostpath_pv
  node_cgroup_adopt "$(pid_of volume-modes)"
}

# The host's packets, marked as kube-router marks what a policy admits (node_start_network_policy).
HOST_IS_NODE_RULE=(-i eth0 -m comment --comment "iot-operator: the host is the node" -j MARK --set-xmark 0x10000/0x10000)

# node_start_network_policy: kube-router's firewall controller alone (no routing, no service proxy, no
# CNI: the bridge plugin and kube-proxy do those), enforcing NetworkPolicies with iptables and ipsets
# in the node's namespace, where the pods' traffic crosses the bridge. Why kube-router and not
# kube-network-policies: docs/control-plane.md. Also restart.sh network-policy on.
node_start_network_policy() {
  local started=$SECONDS
  start_in_node kube-router "$(readlink -f "$BIN/kube-router")" \
    --kubeconfig="$NODE_DIR/kube-router.kubeconfig" --hostname-override="$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --enable-ipv4=true --enable-ipv6=false --service-cluster-ip-range="$NODE_SERVICE_CIDR" \
    --health-port="$KUBE_ROUTER_HEALTH_PORT" --metrics-port=0 --iptables-sync-period=5m
  wait_for kube-router "/healthz ok" in_node curl -fsS --max-time 3 "http://127.0.0.1:$KUBE_ROUTER_HEALTH_PORT/healthz"
  # This machine (the host end of the veth) is the node: the tests, the API server and CoreDNS live
  # there. Kubernetes lets a node reach its own pods whatever the policies; kube-router knows the
  # node only by a local source address, so the host's packets carry the mark its policy chains set
  # on traffic they admit. Pods' own traffic is never marked here.
  in_node iptables -t mangle -C PREROUTING "${HOST_IS_NODE_RULE[@]}" 2>/dev/null ||
    in_node iptables -t mangle -A PREROUTING "${HOST_IS_NODE_RULE[@]}"
  node_say "NetworkPolicy engine (kube-router $KUBE_ROUTER_VERSION) up in $((SECONDS - started)) s"
}

# node_stop_network_policy: stops kube-router and removes every rule and ipset it made, so the node
# forwards as if it had never run (restart.sh network-policy off; the benchmark's side-by-side run).
# (kube-router's own --cleanup-config panics here: it cleans its service proxy's IPVS state too.)
node_stop_network_policy() {
  local rules
  stop kube-router
  in_node iptables -t mangle -D PREROUTING "${HOST_IS_NODE_RULE[@]}" 2>/dev/null || true
  # Its chains and every rule that names one; kube-proxy's rules are restored as they were.
  rules=$(in_node iptables-save -t filter)
  grep -vE 'KUBE-ROUTER-|KUBE-NWPLCY-|KUBE-POD-FW-' <<<"$rules" | in_node iptables-restore -T filter
  # Only kube-router makes ipsets in the node's namespace.
  in_node ipset destroy 2>/dev/null || true
}

# node_dns: the cluster DNS, a CoreDNS on the host end of the veth (where the pods' resolv.conf points,
# clusterDNS in the kubelet's configuration). It serves the cluster domain from the API server and
# answers nothing else: with no forwarder, an outside name fails here instead of leaving the machine.
# The zone `.` has no plugin, so such a query gets SERVFAIL at once rather than a timeout.
node_dns() {
  cat >"$NODE_DIR/Corefile" <<COREFILE
$CLUSTER_DOMAIN:53 in-addr.arpa:53 {
    bind $NODE_HOST_IP
    ready $NODE_HOST_IP:8181
    errors
    kubernetes $CLUSTER_DOMAIN in-addr.arpa {
        kubeconfig $STATE/coredns.kubeconfig iot-local
    }
}
.:53 {
    bind $NODE_HOST_IP
    errors
}
COREFILE
  start coredns -conf "$NODE_DIR/Corefile"
  node_cgroup_adopt "$(pid_of coredns)"
  wait_for coredns "ready on $NODE_HOST_IP:53" curl -fsS --max-time 3 "http://$NODE_HOST_IP:8181/ready"
}

# node_yaml: the `kubernetes` Service's endpoints, and the local-path provisioner's namespace, RBAC,
# configuration and StorageClass. Its helper pods (mkdir -m 0777 / rm -rf of a volume's directory)
# run as root with a hostPath, so their namespace does not enforce a Pod Security level.
node_yaml() {
  cat <<YAML
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: iot-local-cluster
addressType: IPv4
endpoints:
- addresses: ["$NODE_HOST_IP"]
  conditions: {ready: true}
ports:
- {name: https, port: $API_PORT, protocol: TCP}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:coredns
rules:
- apiGroups: [""]
  resources: [services, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:coredns
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:coredns"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:kube-router
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, endpoints, nodes]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: system:kube-router
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kube-router"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-router"}]
---
apiVersion: v1
kind: Namespace
metadata:
  name: local-path-storage
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner, namespace: local-path-storage}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: local-path-provisioner
rules:
- apiGroups: [""]
  resources: [nodes, persistentvolumeclaims, configmaps, pods, pods/log]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [persistentvolumes]
  verbs: [get, list, watch, create, patch, update, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [storage.k8s.io]
  resources: [storageclasses]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: local-path-provisioner
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-path-provisioner}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:local-path-provisioner"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: local-path-provisioner, namespace: local-path-storage}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, patch, update, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: local-path-provisioner, namespace: local-path-storage}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: local-path-provisioner}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:local-path-provisioner"}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "$NODE_NAME", "paths": ["$NODE_DIR/volumes"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      nodeSelector: {$NODE_LABEL_KEY: $NODE_LABEL_VALUE}
      containers:
      - name: helper-pod
        image: $HELPER_IMAGE
        imagePullPolicy: Never
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $LOCAL_PATH_CLASS
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
YAML
}
