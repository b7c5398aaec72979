#!/usr/bin/env bash
# The build stage of docker/Dockerfile: compiles the release binaries for TARGETARCH (natively, or
# cross from the builder's platform) and lays out each image's files with images/rootfs.sh,
# exactly as images/build.sh does here:
#   images/docker-build.sh TARGETARCH OUT NAME...
# A cross build takes the target's own Debian packages (libc6, libgcc-s1 of that architecture), so
# the libraries in the image sit at the paths the target's loader searches.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
clean_cargo_env
[ $# -ge 3 ] || { echo "usage: $0 TARGETARCH OUT NAME..." >&2; exit 2; }
arch=$1 out=$2; shift 2

case "$arch" in
  amd64) triple=x86_64-unknown-linux-gnu multiarch=x86_64-linux-gnu ;;
  arm64) triple=aarch64-unknown-linux-gnu multiarch=aarch64-linux-gnu ;;
  *) echo "docker-build: unsupported architecture $arch" >&2; exit 1 ;;
esac

args=(); for b in $(release_binaries "$@"); do args+=(--bin "$b"); done
cd "$REPO_ROOT"
# Mbed TLS (coap-server's DTLS) is compiled from its sources: cmake builds it, and bindgen reads
# its headers with libclang. Installed only where missing.
missing=()
for p in cmake libclang-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$arch" = "$(dpkg --print-architecture)" ]; then
  release=target/release
  cargo build --release --locked "${args[@]}"
else
  release=target/$triple/release
  dpkg --add-architecture "$arch"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "gcc-${multiarch//_/-}" "libc6-dev:$arch" "libgcc-s1:$arch" >/dev/null
  rustup target add "$triple"
  env_triple=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  export "CARGO_TARGET_${env_triple}_LINKER=$multiarch-gcc" "CC_${triple//-/_}=$multiarch-gcc"
  cargo build --release --locked --target "$triple" "${args[@]}"
fi
RELEASE_DIR="$REPO_ROOT/$release" IMAGE_TRIPLET=$multiarch "$IMAGES_DIR/rootfs.sh" "$out" "$@"
