#!/usr/bin/env bash
# Lays out the files of images from images/images.conf, one directory per image:
#   images/rootfs.sh OUT NAME...      -> OUT/NAME/ for each NAME
# Both builders use it: images/build.sh here, and the build stage of docker/Dockerfile. So both
# ship the same files: the executables, the shared libraries they need (found with readelf, not
# ldd, so that a cross-built binary works too), and the listed files and links.
#
# Environment: RELEASE_DIR (default target/release) holds the release binaries; IMAGE_TRIPLET
# (default: gcc's target, e.g. x86_64-linux-gnu) picks the multiarch library directories.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
umask 022

[ $# -ge 2 ] || { echo "usage: $0 OUT NAME..." >&2; exit 2; }
out=$1; shift
command -v readelf >/dev/null || { echo "rootfs: readelf (binutils) is needed" >&2; exit 1; }
triplet=${IMAGE_TRIPLET:-$(gcc -dumpmachine)}
lib_dirs=("/lib/$triplet" "/usr/lib/$triplet" /lib /usr/lib)

elf_interp() { readelf -lW "$1" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]$/\1/p'; }
elf_needed() { readelf -dW "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'; }

# put SRC DEST: copy SRC (following links) to DEST inside the image, mode kept.
put() {
  [ -e "$1" ] || { echo "rootfs: $1 is missing (needed for $root)" >&2; exit 1; }
  mkdir -p "$root$(dirname "$2")"
  cp -L --preserve=mode "$1" "$root$2"
}

# put_elf SRC DEST: the executable, its interpreter and its libraries' closure.
put_elf() {
  local interp todo=() done_=" " lib dir found
  put "$1" "$2"
  interp=$(elf_interp "$1")
  [ -n "$interp" ] && put "$interp" "$interp"
  mapfile -t todo < <(elf_needed "$1")
  while [ ${#todo[@]} -gt 0 ]; do
    lib=${todo[0]}; todo=("${todo[@]:1}")
    # The loader is known by its soname once it runs; a second copy would only add weight.
    [[ $done_ == *" $lib "* || $lib == "$(basename "${interp:-/}")" ]] && continue
    done_+="$lib "
    found=""
    for dir in "${lib_dirs[@]}"; do
      [ -e "$dir/$lib" ] && { found="$dir/$lib"; break; }
    done
    [ -n "$found" ] || { echo "rootfs: $1 needs $lib, not found in ${lib_dirs[*]}" >&2; exit 1; }
    put "$found" "$found"
    mapfile -t -O "${#todo[@]}" todo < <(elf_needed "$found")
  done
}

for name in "$@"; do
  [ -n "$(image_lines "$name")" ] || { echo "rootfs: no image [$name] in $IMAGES_CONF" >&2; exit 1; }
  root="$out/$name"
  rm -rf "$root"; mkdir -p "$root"
  while read -r key a b; do
    a=$(expand "$a"); b=$(expand "${b:-}")
    case "$key" in
      exe) put_elf "$a" "$b" ;;
      file) [[ $a == /* ]] || a="$REPO_ROOT/$a"; put "$a" "$b" ;;
      link) mkdir -p "$root$(dirname "$a")"; ln -sfn "$b" "$root$a" ;;
      cc) mkdir -p "$root$(dirname "$b")"
          gcc -Os -static -Wall -Wextra -Werror -o "$root$b" "$REPO_ROOT/$a"
          strip "$root$b" ;;
    esac
  done < <(image_lines "$name")
done
