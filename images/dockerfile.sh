#!/usr/bin/env bash
# Prints docker/Dockerfile, generated from images/images.conf (the images marked `docker`):
#   images/dockerfile.sh > docker/Dockerfile        (make dockerfile)
# tests/images checks that the committed Dockerfile says what the definition says.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

# json_words WORD...: ["WORD", ...] (the definition's words hold no quotes or backslashes).
json_words() {
  local w sep="" s="["
  for w in "$@"; do s+="$sep\"$w\""; sep=", "; done
  printf '%s]' "$s"
}

mapfile -t names < <(docker_image_names)
version=$(workspace_version)
cat <<EOF
# syntax=docker/dockerfile:1
# GENERATED from images/images.conf by images/dockerfile.sh (make dockerfile). Do not edit here.
# The same images as \`make images\` builds without Docker: the same files (laid out by
# images/rootfs.sh in the build stage), user, entrypoint and labels. Pick one with --target:
#   docker build -f docker/Dockerfile --target ${names[0]} -t $(image_ref "${names[0]}") .
#   (targets: ${names[*]})
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...; the build stage runs on
# the builder's platform and cross-compiles, so no emulation is needed.

FROM --platform=\$BUILDPLATFORM $(global_value builder) AS build
ARG TARGETARCH
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \\
    --mount=type=cache,target=/src/target \\
    images/docker-build.sh "\$TARGETARCH" /rootfs ${names[*]}
EOF

# shared KEY: the values of KEY that every image has, in the first image's order. They are said
# once, in the stage every image starts from, instead of once per image.
shared() {
  local v name
  while IFS= read -r v; do
    for name in "${names[@]}"; do
      image_values "$name" "$1" | grep -xF -- "$v" >/dev/null || continue 2
    done
    echo "$v"
  done < <(image_values "${names[0]}" "$1")
}

# own NAME KEY: the values of KEY that NAME has and not every image has.
own() {
  local v
  while IFS= read -r v; do
    shared "$2" | grep -xF -- "$v" >/dev/null || echo "$v"
  done < <(image_values "$1" "$2")
}

# config VALUES NAME: the image config instructions for what `VALUES NAME KEY` gives per KEY: one
# USER, an ENV per variable (kept in order), one EXPOSE and one LABEL with every value.
config() {
  local values=$1 name=$2 v
  v=$($values "$name" user | sed -n 1p)
  if [ -n "$v" ]; then echo "USER $v"; fi
  while IFS= read -r v; do echo "ENV ${v%%=*}=${v#*=}"; done < <($values "$name" env)
  v=$($values "$name" expose | paste -sd' ')
  if [ -n "$v" ]; then echo "EXPOSE $v"; fi
  v=$($values "$name" label | sed 's/^\([^=]*\)=\(.*\)$/\1="\2"/' | paste -sd' ')
  if [ -n "$v" ]; then echo "LABEL $v"; fi
}

shared_of() { shared "$2"; }

echo
echo "# What every image below has: no files, and the config they all share."
echo "FROM scratch AS common"
config shared_of ""

for name in "${names[@]}"; do
  echo
  echo "# $(image_ref "$name" | sed "s/:$version\$/:<version>/")"
  echo "FROM common AS $name"
  echo "COPY --from=build /rootfs/$name/ /"
  config own "$name"
  for key in entrypoint cmd; do
    words=$(image_values "$name" "$key")
    # shellcheck disable=SC2086 # the words are split on purpose
    if [ -n "$words" ]; then echo "${key^^} $(json_words $words)"; fi
  done
done
