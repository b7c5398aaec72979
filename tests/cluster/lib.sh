# shellcheck shell=bash disable=SC2034 # (variables set here are used by up.sh and down.sh)
# Shared by up.sh and down.sh (sourced, not run): where the control plane keeps its state, and how
# its processes are recorded and stopped. Only processes recorded in $PIDS are ever signalled, and
# only while /proc says the PID still runs the binary that was recorded for it.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$here/versions.env"

STATE=${IOT_CLUSTER_DIR:-$repo/.run/cluster}
mkdir -p "$(dirname "$STATE")"
STATE=$(cd "$(dirname "$STATE")" && pwd)/$(basename "$STATE")
BIN=$("$here/build.sh" --print)
PIDS=$STATE/pids
LOGS=$STATE/logs
PKI=$STATE/pki
KUBECONFIG_PATH=$STATE/kubeconfig
MARKER=$STATE/.iot-cluster-state
# Start order; stop in the reverse order. The real node's (node.sh) come before metrics-server.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok metrics-server)
NODE_COMPONENTS=(api-forward containerd kubelet kube-proxy coredns local-path-provisioner volume-modes)

say() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# lock: one up.sh or down.sh at a time per state directory (the lock file sits beside it, so removing
# the state directory does not remove the lock).
lock() {
  exec 9>"$STATE.lock"
  flock -w 600 9 || { say "another up.sh or down.sh still holds $STATE.lock"; exit 1; }
}

# pid_of NAME: the recorded PID of NAME if that process is alive and still runs the recorded binary.
pid_of() {
  local f=$PIDS/$1.pid pid exe want
  [ -f "$f" ] || return 1
  read -r pid want <"$f" || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1 # gone, or a zombie
  exe=${exe% (deleted)}                                    # the binary was rebuilt meanwhile
  [ "$exe" = "$want" ] || return 1
  echo "$pid"
}

# stop NAME...: SIGTERM the recorded processes, wait up to 20 s for them to exit, then SIGKILL.
stop() {
  local name pid waiting=() i
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      say "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      waiting+=("$name")
    fi
  done
  for ((i = 0; i < 200 && ${#waiting[@]} > 0; i++)); do
    local still=()
    for name in "${waiting[@]}"; do pid_of "$name" >/dev/null && still+=("$name"); done
    waiting=("${still[@]+"${still[@]}"}")
    [ ${#waiting[@]} -gt 0 ] && sleep 0.1
  done
  for name in "${waiting[@]+"${waiting[@]}"}"; do
    if pid=$(pid_of "$name"); then
      say "$name (pid $pid) ignored SIGTERM for 20 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for name in "$@"; do rm -f "$PIDS/$name.pid"; done
}

# stop_all: every component, the dependents first (metrics-server scrapes kwok and is served through the
# apiserver), the store last. The real node goes whole (node_down), whatever of it still runs.
stop_all() {
  stop metrics-server
  node_down
  stop kwok kube-scheduler kube-controller-manager
  stop kube-apiserver
  stop etcd
}

# any_running: true when at least one recorded component is still alive.
any_running() {
  local name
  for name in "${COMPONENTS[@]}" "${NODE_COMPONENTS[@]}"; do pid_of "$name" >/dev/null && return 0; done
  return 1
}

# ---- starting processes (up.sh, restart.sh) ---------------------------------------------------------
# start_exe NAME EXE ARGS...: runs EXE in a session of its own (so a Ctrl-C or a closed terminal of the
# caller does not reach it) without the lock's descriptor 9, and records "PID BINARY" for pid_of and
# down.sh. start NAME ARGS... does so for $BIN/NAME.
start_exe() {
  local name=$1 exe=$2
  shift 2
  launch "$name" "$exe" setsid "$exe" "$@"
}
start() { start_exe "$1" "$(readlink -f "$BIN/$1")" "${@:2}"; }
# start_in_node NAME EXE ARGS...: the same inside the real node's network namespace.
start_in_node() {
  local name=$1 exe=$2
  shift 2
  launch "$name" "$exe" setsid nsenter --net="/run/netns/$NODE_NETNS" -- "$exe" "$@"
  say "($name runs in network namespace $NODE_NETNS)"
}
# launch NAME EXE COMMAND...: runs COMMAND (which ends by exec'ing EXE) in the background, records
# "PID EXE", and waits until the exec has happened, so pid_of finds the process at once.
launch() {
  local name=$1 exe=$2 pid i
  shift 2
  current=$name
  "$@" </dev/null >"$LOGS/$name.log" 2>&1 9>&- &
  pid=$!
  echo "$pid $exe" >"$PIDS/$name.pid"
  for ((i = 0; i < 100; i++)); do
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] && break
    sleep 0.05
  done
  say "started $name (pid $pid), log $LOGS/$name.log"
}
# wait_for NAME WHAT COMMAND...: retries COMMAND until it succeeds; fails when NAME exits or after $TIMEOUT s.
wait_for() {
  local name=$1 what=$2 deadline=$(($(date +%s) + TIMEOUT))
  shift 2
  current=$name
  until "$@" >/dev/null 2>&1; do
    pid_of "$name" >/dev/null || die "$name exited before $what"
    [ "$(date +%s)" -lt "$deadline" ] || die "$name: no $what after ${TIMEOUT}s"
    sleep 0.2
  done
  say "$name: $what ($(($(date +%s) - t0))s since start)"
}

# kubectl with the cluster's admin kubeconfig and a discovery cache of its own, so a new cluster that
# reuses an old port never sees the old cluster's cached API groups.
kc() { "$BIN/kubectl" --kubeconfig="$KUBECONFIG_PATH" --cache-dir="$STATE/kube-cache" "$@"; }

# shellcheck source-path=SCRIPTDIR source=node.sh
. "$here/node.sh"
