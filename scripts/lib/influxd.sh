# shellcheck shell=bash
# start_influxd DIR: starts Debian's influxd with its data in DIR on a free loopback port and waits
# until it answers. Sets INFLUX_PID, INFLUX_URL and INFLUX_RPC (the port of `influxd backup` and
# `influxd restore`, on 127.0.0.1). stop_influxd stops exactly that process.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start_influxd() {
  local dir=$1 http rpc
  http=$(free_port); rpc=$(free_port)
  mkdir -p "$dir"
  sed -e "s|@DIR@|$dir|g" -e "s|@RPC_PORT@|$rpc|" -e "s|@HTTP_PORT@|$http|" -e "s|@AUTH@|false|" \
    "$(dirname "${BASH_SOURCE[0]}")/../../tests/testkit/influxdb.conf" >"$dir/influxdb.conf"
  influxd -config "$dir/influxdb.conf" >"$dir/influxd.log" 2>&1 &
  INFLUX_PID=$!
  INFLUX_URL="http://127.0.0.1:$http"
  # shellcheck disable=SC2034 # for the scripts that source this
  INFLUX_RPC=$rpc
  for _ in $(seq 1 150); do
    curl -sf "$INFLUX_URL/ping" >/dev/null && return 0
    kill -0 "$INFLUX_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "influxd did not start; last lines of $dir/influxd.log:" >&2
  tail -n 20 "$dir/influxd.log" >&2
  return 1
}

stop_influxd() {
  if [ -n "${INFLUX_PID:-}" ] && kill -0 "$INFLUX_PID" 2>/dev/null; then
    kill "$INFLUX_PID"; wait "$INFLUX_PID" 2>/dev/null || true
  fi
}

# influx_query URL DB QUERY: prints the JSON answer.
influx_query() {
  curl -sfG "$1/query" --data-urlencode "db=$2" --data-urlencode "q=$3"
}

# influx_count URL DB MEASUREMENT FIELD: prints the number of points.
influx_count() {
  influx_query "$1" "$2" "SELECT count(\"$4\") FROM \"$3\"" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); s=d["results"][0].get("series"); print(s[0]["values"][0][1] if s else 0)'
}
