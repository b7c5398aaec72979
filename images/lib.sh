# Reading images/images.conf, shared by build.sh, rootfs.sh and dockerfile.sh (sourced, not run).
# The format is described at the top of images.conf.

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$IMAGES_DIR/.." && pwd)
IMAGES_CONF=${IMAGES_CONF:-$IMAGES_DIR/images.conf}

# Unsets what cargo exports to the tests and binaries it runs (CARGO_PKG_NAME, ...). Some build
# scripts (ring) track those variables, so a cargo started from a test with them set would
# rebuild those crates, and the next ordinary build would rebuild them again.
clean_cargo_env() {
  local v
  for v in $(compgen -e); do
    case "$v" in
      CARGO_MANIFEST_*|CARGO_PKG_*|CARGO_CRATE_NAME|CARGO_BIN_*|CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|OUT_DIR)
        unset "$v" ;;
    esac
  done
}

# The workspace version, from [workspace.package] of the root Cargo.toml.
workspace_version() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml" | head -n1
}

# A Debian package's upstream version as a tag: 1:1.6.7~rc0-1+b13 -> 1.6.7-rc0.
deb_version() {
  local v
  v=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) || { echo "Debian package $1 is not installed" >&2; return 1; }
  v=${v#*:}; v=${v%-*}
  printf '%s' "${v//[~+]/-}"
}

# global_value KEY: a setting above the first [NAME].
global_value() { awk -v key="$1" '/^\[/ { exit } $1 == key { print $2; exit }' "$IMAGES_CONF"; }

# Every image name, in the file's order.
image_names() { sed -n 's/^\[\([a-z0-9-]*\)\]$/\1/p' "$IMAGES_CONF"; }

# Names of the images docker/Dockerfile builds too.
docker_image_names() {
  local n
  for n in $(image_names); do
    image_lines "$n" | grep -qx docker && echo "$n"
  done
  return 0
}

# image_lines NAME: the section's lines without comments and blanks, variables not yet expanded.
image_lines() {
  awk -v want="[$1]" '
    /^[[:space:]]*(#|$)/ { next }
    /^\[/ { inside = ($0 == want); next }
    inside { sub(/[[:space:]]+$/, ""); print }' "$IMAGES_CONF"
}

# The pinned metrics-server version (the local control plane's).
metrics_server_version() { sed -n 's/^METRICS_SERVER_VERSION=//p' "$REPO_ROOT/tests/cluster/versions.env"; }

# expand TEXT: substitutes ${version}, ${release} (RELEASE_DIR), ${deb:PKG},
# ${metrics-server-version} and ${metrics-server} (METRICS_SERVER_BIN, set by build.sh).
expand() {
  local s=$1 pkg
  s=${s//'${version}'/$(workspace_version)}
  s=${s//'${release}'/${RELEASE_DIR:-$REPO_ROOT/target/release}}
  if [[ $s == *'${metrics-server'* ]]; then
    s=${s//'${metrics-server-version}'/$(metrics_server_version)}
    s=${s//'${metrics-server}'/${METRICS_SERVER_BIN:-}}
  fi
  while [[ $s =~ \$\{deb:([a-z0-9.+-]+)\} ]]; do
    pkg=${BASH_REMATCH[1]}
    s=${s//"\${deb:$pkg}"/$(deb_version "$pkg")}
  done
  printf '%s' "$s"
}

# image_values NAME KEY: the values of KEY, one line each, expanded.
image_values() {
  local key=$2 line
  while IFS= read -r line; do
    case "$line" in
      "$key") echo ;;
      "$key "*) expand "${line#"$key "}"; echo ;;
    esac
  done < <(image_lines "$1")
}

image_ref() { image_values "$1" ref | head -n1; }

# The release binaries (by name) the images NAME... need from this workspace.
release_binaries() {
  local n src
  for n in "$@"; do
    while read -r src _; do
      case "$src" in '${release}/'*) echo "${src#'${release}/'}" ;; esac
    done < <(image_lines "$n" | sed -n 's/^exe //p')
  done | sort -u
}
