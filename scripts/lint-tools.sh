#!/usr/bin/env bash
# Installs the tools `make lint` needs beyond rustfmt and clippy, and only those that are missing or
# at another version, into the cache the control plane's binaries use (outside the repository):
#   actionlint  checks .github/workflows; built from the Go module proxy like tests/cluster/build.sh
#               builds the control plane (a small build: 13 s the first time on the project's 2-core machine,
#               module downloads included)
#   cargo-deny  checks the dependency tree's licenses, bans and sources against deny.toml; built
#               with `cargo install --locked` (19 minutes the first time on the loaded 2-core machine
#               with CARGO_BUILD_JOBS=1; then cached)
#
#   scripts/lint-tools.sh                  install what is missing (both)
#   scripts/lint-tools.sh actionlint       only actionlint (what `make test` needs)
#   scripts/lint-tools.sh --print          print the bin directory
# Idempotent: a tool that is there and reports the pinned version is not rebuilt.
set -euo pipefail
ACTIONLINT_VERSION=v1.7.12
CARGO_DENY_VERSION=0.20.2
CACHE=${IOT_CACHE:-$HOME/.cache/iot-operator}
BIN="$CACHE/bin"
[ "${1:-}" = "--print" ] && { echo "$BIN"; exit 0; }
mkdir -p "$BIN"
log() { printf '[lint-tools %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# version_of TOOL ARGS...: the tool's version output, empty when it is missing or fails.
version_of() { [ -x "$BIN/$1" ] && "$BIN/$1" "${@:2}" 2>/dev/null || true; }

actionlint() {
  if version_of actionlint -version | grep -qx -- "${ACTIONLINT_VERSION#v}"; then
    log "actionlint $ACTIONLINT_VERSION: cached"; return; fi
  command -v go >/dev/null || { log "Go is required to build actionlint (go 1.24+)"; exit 1; }
  log "actionlint $ACTIONLINT_VERSION: compiling from the Go module proxy"
  local start=$SECONDS
  # The version stamp upstream's release build sets; without it -version says "(devel)".
  GOBIN="$BIN" GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=local go install -trimpath \
    -ldflags "-s -w -X github.com/rhysd/actionlint.version=${ACTIONLINT_VERSION#v}" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  log "actionlint $ACTIONLINT_VERSION: built in $((SECONDS - start)) s"
}

cargo_deny() {
  if version_of cargo-deny --version | grep -qx -- "cargo-deny $CARGO_DENY_VERSION"; then
    log "cargo-deny $CARGO_DENY_VERSION: cached"; return; fi
  command -v cargo >/dev/null || { log "Rust is required to build cargo-deny"; exit 1; }
  log "cargo-deny $CARGO_DENY_VERSION: compiling with cargo install --locked (several minutes the first time)"
  local start=$SECONDS
  cargo install --locked --quiet --root "$CACHE" --version "$CARGO_DENY_VERSION" cargo-deny
  log "cargo-deny $CARGO_DENY_VERSION: built in $((SECONDS - start)) s"
}

case "${1:-all}" in
actionlint) actionlint ;;
cargo-deny) cargo_deny ;;
all) actionlint; cargo_deny ;;
*) log "usage: $0 [actionlint|cargo-deny|all|--print]"; exit 2 ;;
esac
