#!/usr/bin/env bash
# Builds the images of images/images.conf here, without a Docker engine or a registry, as OCI
# archives target/images/<name>.tar with the fully qualified reference inside:
#   images/build.sh [--load] [--force] [NAME...]     (default: every image; make images)
#   images/build.sh --ref NAME                        prints NAME's reference only, builds nothing
# Prints one line per image: `image <reference> <bytes>`.
#   --load   also imports the archives into the local node's containerd
#            ($IOT_CLUSTER_DIR/node/containerd.sock, namespace k8s.io) when that socket exists.
#   --force  rebuilds archives that look up to date (newer than every input).
# Tools: cargo (release binaries), gcc, readelf, umoci, skopeo; ctr for --load.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
clean_cargo_env
say() { printf '[images] %s\n' "$*" >&2; }

load=false force=false print_ref=false names=()
for arg in "$@"; do
  case "$arg" in
    --load) load=true ;;
    --force) force=true ;;
    --ref) print_ref=true ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $arg" >&2; exit 2 ;;
    *) names+=("$arg") ;;
  esac
done
if $print_ref; then
  [ ${#names[@]} = 1 ] || { echo "--ref takes one image name" >&2; exit 2; }
  ref=$(image_ref "${names[0]}")
  [ -n "$ref" ] || { echo "no image ${names[0]} in images/images.conf" >&2; exit 2; }
  echo "$ref"
  exit 0
fi
[ ${#names[@]} -gt 0 ] || mapfile -t names < <(image_names)

for t in umoci skopeo readelf gcc; do
  command -v "$t" >/dev/null || { say "$t is missing (scripts/install-deps.sh installs it)"; exit 1; }
done

out="$REPO_ROOT/target/images"
mkdir -p "$out"
# Tests and scripts may build at the same time; one builder at a time writes target/images.
exec 9>"$out/.lock"
flock 9

mapfile -t bins < <(release_binaries "${names[@]}")
if [ ${#bins[@]} -gt 0 ]; then
  say "release binaries: ${bins[*]}"
  args=(); for b in "${bins[@]}"; do args+=(--bin "$b"); done
  (cd "$REPO_ROOT" && cargo build --release --locked "${args[@]}")
fi

# metrics-server: the local control plane's binary when it is the pinned version, else built
# from its Go module here (about a minute), with the same version stamp.
if printf '%s\n' "${names[@]}" | grep -qx metrics-server; then
  v=$(metrics_server_version)
  METRICS_SERVER_BIN="$("$REPO_ROOT/tests/cluster/build.sh" --print)/metrics-server"
  if ! "$METRICS_SERVER_BIN" --version 2>/dev/null | grep -q -- "$v"; then
    gobin="${IOT_CACHE:-$HOME/.cache/iot-operator}/images/metrics-server-$v"
    METRICS_SERVER_BIN="$gobin/metrics-server"
    if [ ! -x "$METRICS_SERVER_BIN" ]; then
      command -v go >/dev/null || { say "metrics-server needs Go to build"; exit 1; }
      say "metrics-server $v: compiling from its Go module"
      GOBIN="$gobin" GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath \
        -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$v" \
        "sigs.k8s.io/metrics-server/cmd/metrics-server@$v"
    fi
  fi
  export METRICS_SERVER_BIN
fi

# up_to_date NAME: its archive is newer than the definition, these scripts and every file the
# image takes. The libraries found for executables come from Debian packages, so any package
# change (dpkg's status file) rebuilds too.
up_to_date() {
  local archive="$out/$1.tar" key src _ inputs
  [ -f "$archive" ] && ! $force || return 1
  inputs=("$IMAGES_CONF" "$IMAGES_DIR"/*.sh "$IMAGES_DIR/files" /var/lib/dpkg/status)
  while read -r key src _; do
    case "$key" in
      exe|file|cc) src=$(expand "$src"); [[ $src == /* ]] || src="$REPO_ROOT/$src"; inputs+=("$src") ;;
    esac
  done < <(image_lines "$1")
  [ -z "$(find -L "${inputs[@]}" -newer "$archive" 2>&1 | head -n1)" ]
}

stale=()
for name in "${names[@]}"; do
  if up_to_date "$name"; then
    echo "image $(image_ref "$name") $(stat -c %s "$out/$name.tar")"
  else
    stale+=("$name")
  fi
done

work="$out/work"
rm -rf "$work"; mkdir -p "$work"
[ ${#stale[@]} -eq 0 ] || "$IMAGES_DIR/rootfs.sh" "$work/rootfs" "${stale[@]}"

for name in "${stale[@]}"; do
  ref=$(image_ref "$name")
  [ -n "$ref" ] || { say "[$name] has no ref"; exit 1; }
  layout="$work/oci-$name" bundle="$work/bundle-$name"
  umoci init --layout "$layout"
  umoci new --image "$layout:build"
  # unpack + repack (not `umoci insert`): repack writes a complete tar stream for the layer.
  umoci unpack --image "$layout:build" "$bundle" >/dev/null
  cp -a "$work/rootfs/$name/." "$bundle/rootfs/"
  umoci repack --image "$layout:build" "$bundle"
  cfg=(--config.user "$(image_values "$name" user | head -n1)")
  # A new image's config is empty: each list is built word by word (an empty one stays unset).
  for w in $(image_values "$name" entrypoint); do cfg+=(--config.entrypoint "$w"); done
  for w in $(image_values "$name" cmd); do cfg+=(--config.cmd "$w"); done
  while IFS= read -r v; do cfg+=(--config.env "$v"); done < <(image_values "$name" env)
  while IFS= read -r v; do cfg+=(--config.label "$v"); done < <(image_values "$name" label)
  while IFS= read -r v; do cfg+=(--config.exposedports "$v"); done < <(image_values "$name" expose)
  umoci config --image "$layout:build" --history.created_by "images/build.sh $name" "${cfg[@]}"
  umoci gc --layout "$layout"
  rm -f "$out/$name.tar.tmp"
  skopeo copy --quiet "oci:$layout:build" "oci-archive:$out/$name.tar.tmp:$ref"
  mv "$out/$name.tar.tmp" "$out/$name.tar"
  echo "image $ref $(stat -c %s "$out/$name.tar")"
done
rm -rf "$work"

$load || exit 0
sock="${IOT_CLUSTER_DIR:-$REPO_ROOT/.run/cluster}/node/containerd.sock"
if [ ! -S "$sock" ]; then
  say "no containerd socket at $sock (is the local node up?): not loading"
  exit 0
fi
command -v ctr >/dev/null || { say "ctr is missing (Debian package containerd)"; exit 1; }
for name in "${names[@]}"; do
  say "loading $(image_ref "$name") into $sock"
  ctr --address "$sock" -n k8s.io images import "$out/$name.tar" >/dev/null
done
