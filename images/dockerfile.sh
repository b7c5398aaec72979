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

for name in "${names[@]}"; do
  echo
  echo "# $(image_ref "$name" | sed "s/:$version\$/:<version>/")"
  echo "FROM scratch AS $name"
  echo "COPY --from=build /rootfs/$name/ /"
  echo "USER $(image_values "$name" user | head -n1)"
  while IFS= read -r v; do echo "ENV ${v%%=*}=${v#*=}"; done < <(image_values "$name" env)
  while IFS= read -r v; do echo "EXPOSE $v"; done < <(image_values "$name" expose)
  while IFS= read -r v; do echo "LABEL ${v%%=*}=\"${v#*=}\""; done < <(image_values "$name" label)
  for key in entrypoint cmd; do
    words=$(image_values "$name" "$key")
    # shellcheck disable=SC2086 # the words are split on purpose
    if [ -n "$words" ]; then echo "${key^^} $(json_words $words)"; fi
  done
done
