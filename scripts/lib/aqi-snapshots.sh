# shellcheck shell=bash
# Shared by the AQI benchmarks (sourced): the synthetic Sensor.Community snapshots and the release
# ingestor they run.
#   AQI_BENCH_DIR  snapshot cache (default ~/.cache/iot-operator/aqi-bench)
#   AQI_GEN        generator (default ../shared/tools/gen_snapshot.py next to this repository)
CACHE=${AQI_BENCH_DIR:-$HOME/.cache/iot-operator/aqi-bench}
GEN=${AQI_GEN:-$PWD/../shared/tools/gen_snapshot.py}

# ensure_snapshots N...: $CACHE/snap_<N>.json for each size, generated (seed 1) when missing;
# the caller defines say().
ensure_snapshots() {
  local n f
  mkdir -p "$CACHE"
  for n in "$@"; do
    f="$CACHE/snap_$n.json"
    if [ ! -s "$f" ]; then
      [ -f "$GEN" ] || { say "generator not found at $GEN (set AQI_GEN)"; exit 1; }
      say "generating $f"
      python3 "$GEN" -n "$n" --seed 1 -o "$f.tmp" && mv "$f.tmp" "$f"
    fi
  done
}

# release_ingestor: builds the release aqi-ingestor and prints its path.
release_ingestor() {
  cargo build -q --release -p aqi-ingestor
  echo "${CARGO_TARGET_DIR:-$PWD/target}/release/aqi-ingestor"
}
