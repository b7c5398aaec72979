#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules into a per-version cache outside the
# repository, so only the first run on a machine pays for the build. Idempotent: a binary that is
# already there and reports the pinned version is not rebuilt.
#
#   tests/cluster/build.sh            build everything that is missing
#   tests/cluster/build.sh --print    print the cache's bin directory (for scripts)
#   tests/cluster/build.sh seaweedfs  build only SeaweedFS's `weed`, the tests' S3 server
#
# Builds etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy,
# kwok, helm, metrics-server, local-path-provisioner, CoreDNS and kube-router (versions in
# versions.env). SeaweedFS is built only when asked for (its first build takes about 10 minutes on
# 2 cores, and only the tests with an S3 destination need it): by `make test`, and by testkit's
# s3.rs when a test starts one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=versions.env
. "$here/versions.env"
CACHE=${IOT_CACHE:-$HOME/.cache/iot-operator}
BIN="$CACHE/bin"
[ "${1:-}" = "--print" ] && { echo "$BIN"; exit 0; }
mkdir -p "$BIN"
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# have NAME PATTERN: true when $BIN/NAME exists and its version output contains PATTERN.
# VERSION_ARGS is split into words on purpose ("version --client"); the output is captured before grep,
# since `grep -q` closing the pipe early would fail the pipeline under pipefail.
have() {
  local out
  [ -x "$BIN/$1" ] || return 1
  # shellcheck disable=SC2086
  out=$("$BIN/$1" ${3:---version} 2>/dev/null) || return 1
  grep -q -- "$2" <<<"$out"
}

# A Go build of 10+ minutes is silent by default; a heartbeat shows it is alive.
with_heartbeat() {
  local what=$1; shift
  ( while sleep 60; do log "still building $what ..."; done ) & local hb=$!
  local rc=0; "$@" || rc=$?
  kill "$hb" 2>/dev/null; wait "$hb" 2>/dev/null || true
  return $rc
}

# Every binary of the k8s.io/kubernetes module we run: the control plane, kubectl, and the real node's
# kubelet and kube-proxy, all of one version so the cluster is skew-free.
K8S_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

build_kubernetes() {
  local v=$K8S_VERSION minor stg w gomod ld p b missing=() pkgs=()
  for b in "${K8S_BINARIES[@]}"; do
    case $b in
    kubectl) have kubectl "$v" "version --client" || missing+=("$b") ;;
    *) have "$b" "Kubernetes $v" || missing+=("$b") ;;
    esac
  done
  if [ ${#missing[@]} -eq 0 ]; then log "kubernetes $v: cached"; return; fi
  minor=$(echo "$v" | cut -d. -f2); stg="v0.${v#v1.}"
  w="$CACHE/src/kubernetes-$v"; mkdir -p "$w"; cd "$w"
  [ -f go.mod ] || go mod init local/k8s-bins >/dev/null 2>&1
  log "kubernetes $v: resolving modules (first run downloads ~1 GB)"
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with local paths,
  # which only work inside its own repository: pin each to the matching published v0.x instead.
  # shellcheck disable=SC2013 # module paths are single words
  for m in $(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => \./staging/src/.*#\1#p' "$gomod"); do
    go mod edit "-replace=$m=$m@$stg"
  done
  go mod edit "-require=k8s.io/kubernetes@$v"
  for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
  # The kubelet and kube-proxy import modules (k8s.io/cri-streaming, k8s.io/streaming, ...) that the
  # control plane does not; `go get` of the packages records their go.sum entries.
  go get "${pkgs[@]/%/@$v}"
  # The same version stamps as upstream's hack/lib/version.sh; without them /version says v0.0.0.
  ld="-s -w"
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld="$ld -X '$p.gitVersion=$v' -X '$p.gitMajor=1' -X '$p.gitMinor=$minor'"
    ld="$ld -X '$p.gitTreeState=clean' -X '$p.buildDate=1970-01-01T00:00:00Z'"
  done
  log "kubernetes $v: compiling ${missing[*]} (10-25 min on 2 cores for all of them)"
  with_heartbeat kubernetes go build -trimpath -tags=selinux,notest -ldflags "$ld" -o "$BIN/" "${pkgs[@]}"
  log "kubernetes $v: $("$BIN/kube-apiserver" --version)"
}

# SeaweedFS's `weed`: the S3-compatible server the backup tests start (testkit's s3.rs). Its go.mod
# has a replace line, so like etcd it is built in a wrapper module that repeats it. The module has no
# release tags; the commit in the pseudo-version is stamped in, so `weed version` shows which one is
# cached. A lock serializes test binaries that ask for it at once.
build_seaweedfs() {
  local v=$SEAWEEDFS_VERSION commit w
  commit=${v##*-}; commit=${commit:0:8}
  exec 9>"$BIN/.weed.lock"; flock 9
  if have weed "$commit" version; then log "seaweedfs $commit: cached"; return; fi
  w="$CACHE/src/seaweedfs-$v"; mkdir -p "$w"; cd "$w"
  [ -f go.mod ] || go mod init local/seaweedfs-bin >/dev/null 2>&1
  go mod edit "-require=github.com/seaweedfs/seaweedfs@$v" \
    -replace=github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0
  log "seaweedfs $commit: compiling weed (the first time about 10 min on 2 cores, modules included)"
  with_heartbeat seaweedfs go build -trimpath -o "$BIN/weed" \
    -ldflags "-s -w -X github.com/seaweedfs/seaweedfs/weed/util/version.COMMIT=$commit" \
    github.com/seaweedfs/seaweedfs/weed
  log "seaweedfs: $("$BIN/weed" version | head -1)"
}
[ "${1:-}" = seaweedfs ] && { build_seaweedfs; exit 0; }

build_etcd() {
  local v=$ETCD_VERSION w
  if have etcd "etcd Version: ${v#v}"; then log "etcd $v: cached"; return; fi
  w="$CACHE/src/etcd-$v"; mkdir -p "$w"; cd "$w"
  [ -f go.mod ] || go mod init local/etcd-bin >/dev/null 2>&1
  # etcd's own go.mod has replace lines, so `go install` refuses it; a wrapper module does not.
  go mod edit "-require=go.etcd.io/etcd/server/v3@$v"
  log "etcd $v: compiling"
  with_heartbeat etcd go build -trimpath -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=release" \
    -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  log "etcd $v: $("$BIN/etcd" --version | head -1)"
}

# go_install NAME MODULE_PATH VERSION VERSION_PATTERN VERSION_ARGS LDFLAGS
# The ldflags are recorded beside the binary, so changing them here rebuilds it.
go_install() {
  local name=$1 pkg=$2 v=$3 pat=$4 vargs=$5 ld=$6 stamp="$BIN/.$1.ldflags"
  if have "$name" "$pat" "$vargs" && [ "$(cat "$stamp" 2>/dev/null)" = "$ld" ]; then
    log "$name $v: cached"; return; fi
  log "$name $v: compiling"
  GOBIN="$BIN" with_heartbeat "$name" go install -trimpath -ldflags "$ld" "$pkg@$v"
  printf '%s' "$ld" >"$stamp"
  log "$name $v: built"
}

build_kubernetes
build_etcd
go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" "$KWOK_VERSION" --version \
  "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
# Like helm's own Makefile, stamp the Kubernetes version that `helm template` and `helm lint` assume
# offline (otherwise v1.20, which fails charts that declare a newer kubeVersion); ours is the pinned one.
k8s_minor=$(echo "$K8S_VERSION" | cut -d. -f2)
helm_ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ld="$helm_ld -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$k8s_minor"
done
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$HELM_VERSION" "version --short" "$helm_ld"
# metrics-server prints client-go's gitVersion for --version (its Makefile stamps the same variable).
go_install metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server "$METRICS_SERVER_VERSION" \
  "$METRICS_SERVER_VERSION" --version "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION"

# The real node's volumes: directories the workload's non-root pods can write to (mode 0777, made by a
# helper pod), as kind's default StorageClass does.
go_install local-path-provisioner github.com/rancher/local-path-provisioner "$LOCAL_PATH_PROVISIONER_VERSION" \
  "$LOCAL_PATH_PROVISIONER_VERSION" --version "-s -w -X main.VERSION=$LOCAL_PATH_PROVISIONER_VERSION"

# The real node's cluster DNS: a CoreDNS with the kubernetes plugin only (coredns/main.go says why), in
# a wrapper module like etcd's. The source file is part of the stamp, so editing it rebuilds.
build_coredns() {
  local v=$COREDNS_VERSION w src="$here/coredns/main.go" stamp="$BIN/.coredns.source"
  if have coredns "CoreDNS-${v#v}" -version && cmp -s "$src" "$stamp"; then
    log "coredns $v: cached"; return; fi
  w="$CACHE/src/coredns-$v"; mkdir -p "$w"; cd "$w"
  [ -f go.mod ] || go mod init local/coredns-bin >/dev/null 2>&1
  cp "$src" main.go
  go mod edit "-require=github.com/coredns/coredns@$v"
  log "coredns $v: compiling"
  with_heartbeat coredns go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .
  cp "$src" "$stamp"
  log "coredns $v: $("$BIN/coredns" -version | head -1)"
}
build_coredns

# The real node's NetworkPolicy engine: kube-router's firewall controller (iptables + ipset), started by
# node.sh in the node's network namespace. The version stamp is the one its Makefile sets.
go_install kube-router github.com/cloudnativelabs/kube-router/v2/cmd/kube-router "$KUBE_ROUTER_VERSION" \
  "$KUBE_ROUTER_VERSION" --version "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION"

# kwok's definition of the kubelet's /metrics/resource endpoint (which metric names and labels, computed
# from the emulated usage) ships inside its module; up.sh hands it to kwok. Taken from the module cache
# (go install above downloaded it) so it always matches the pinned kwok.
kwok_metrics="$BIN/kwok-$KWOK_VERSION-metrics-resource.yaml"
if [ -s "$kwok_metrics" ]; then
  log "kwok $KWOK_VERSION metrics-resource: cached"
else
  kwok_dir=$(cd "$CACHE" && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  cp "$kwok_dir/kustomize/metrics/resource/metrics-resource.yaml" "$kwok_metrics.tmp"
  chmod 644 "$kwok_metrics.tmp" && mv "$kwok_metrics.tmp" "$kwok_metrics"
  log "kwok $KWOK_VERSION metrics-resource: $kwok_metrics"
fi
# The prometheus-operator's ServiceMonitor and PrometheusRule CRDs, for the tests of the operator's
# Prometheus path: taken from the module (the Go module proxy is the one source this machine has).
prom_crds="$BIN/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION-crds.yaml"
if [ -s "$prom_crds" ]; then
  log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs: cached"
else
  po_dir=$(cd "$CACHE" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  for kind in servicemonitors prometheusrules; do
    echo "---"; cat "$po_dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml"
  done > "$prom_crds.tmp"
  chmod 644 "$prom_crds.tmp" && mv "$prom_crds.tmp" "$prom_crds"
  log "prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs: $prom_crds"
fi

# promql-check: Prometheus' own PromQL parser over stdin (promql-check/main.go), in a wrapper module
# like CoreDNS's; the source file is part of the stamp.
build_promql_check() {
  local v=$PROMETHEUS_VERSION w src="$here/promql-check/main.go" stamp="$BIN/.promql-check.source"
  if [ -x "$BIN/promql-check" ] && cmp -s "$src" "$stamp" && [ "$(cat "$stamp.version" 2>/dev/null)" = "$v" ]; then
    log "promql-check (prometheus $v): cached"; return; fi
  w="$CACHE/src/promql-check-$v"; mkdir -p "$w"; cd "$w"
  [ -f go.mod ] || go mod init local/promql-check >/dev/null 2>&1
  cp "$src" main.go
  go mod edit "-require=github.com/prometheus/prometheus@$v"
  log "promql-check (prometheus $v): compiling"
  with_heartbeat promql-check go build -trimpath -ldflags "-s -w" -o "$BIN/promql-check" .
  cp "$src" "$stamp"; echo "$v" > "$stamp.version"
  log "promql-check: $BIN/promql-check"
}
build_promql_check
log "all binaries in $BIN (SeaweedFS, the tests' S3 server: tests/cluster/build.sh seaweedfs)"
