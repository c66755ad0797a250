#!/usr/bin/env bash
# /metrics of msiv2-example-server checked by Prometheus's own tools, against a fresh msiv2-sim.
#   check-metrics.sh promtool <build dir> <work dir>
#       one request through the server, then `promtool check metrics` on its /metrics page.
#   check-metrics.sh prometheus <build dir> <work dir>
#       a real prometheus on 127.0.0.1 (a free port, its own storage in <work dir>) scrapes the
#       server every second; its HTTP API must report up == 1 and an msiv2 counter > 0.
# Exits 77 (skipped) when promtool / prometheus is not installed (tools/setup.sh installs it).
set -euo pipefail
mode=${1:?usage: check-metrics.sh promtool|prometheus <build dir> <work dir>}
build=$(cd "${2:?build dir}" && pwd)
work=${3:?work dir}
case "$mode" in
  promtool|prometheus) command -v "$mode" >/dev/null || { echo "SKIP: $mode not installed"; exit 77; } ;;
  *) echo "check-metrics.sh: unknown mode '$mode'" >&2; exit 2 ;;
esac
rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
wait_for_file() { # file pid what
  for _ in $(seq 1 600); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 exited early"; return 1; }
    sleep 0.1
  done
  echo "$3 did not start"; return 1
}

"$build/bin/msiv2-sim" serve --ready-file "$work/ready.json" --state-dir "$work/sim" \
  >"$work/sim.log" 2>&1 &
pids+=($!)
wait_for_file "$work/ready.json" "${pids[-1]}" msiv2-sim || { cat "$work/sim.log"; exit 1; }
field() { sed -E "s/.*\"$1\":\"([^\"]*)\".*/\1/" "$work/ready.json"; }

"$build/bin/msiv2-example-server" --imds "$(field imds)" --ca-file "$(field ca_file)" \
  --resource-url "$(field resource)/api/whoami" --cache-dir none --port-file "$work/port" \
  --trust-host 127.0.0.1 \
  >"$work/server.log" 2>&1 &
pids+=($!)
wait_for_file "$work/port" "${pids[-1]}" msiv2-example-server || { cat "$work/server.log"; exit 1; }
server="127.0.0.1:$(cat "$work/port")"

# One request through the server, so the module has made upstream calls to count.
status=$(curl -s -o "$work/hello.json" -w '%{http_code}' --max-time 60 "http://$server/hello")
[ "$status" = 200 ] || { echo "FAIL: /hello answered $status: $(cat "$work/hello.json")"; exit 1; }

if [ "$mode" = promtool ]; then
  ctype=$(curl -s -o "$work/metrics.txt" -w '%{content_type}' --max-time 10 "http://$server/metrics")
  echo "Content-Type: $ctype"
  case "$ctype" in
    "text/plain; version=0.0.4"*) ;;
    *) echo "FAIL: /metrics is not text format 0.0.4"; exit 1 ;;
  esac
  cat "$work/metrics.txt"
  grep -q '^msiv2_upstream_requests_total{' "$work/metrics.txt" || { echo "FAIL: no upstream counter"; exit 1; }
  # promtool prints each problem (no HELP, bad names, bad escaping...) and exits non-zero.
  promtool check metrics <"$work/metrics.txt"
  echo "PASS: promtool check metrics found no problem"
  exit 0
fi

# A free loopback port for prometheus (it cannot take port 0): ask the kernel for one, and try
# again if another process takes it before prometheus binds it.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
  || shuf -i 20000-60999 -n 1; }
cat >"$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: msiv2
    static_configs:
      - targets: ['$server']
YML
promtool check config "$work/prometheus.yml" >/dev/null
api=""
for attempt in 1 2 3 4 5; do
  port=$(free_port)
  prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$port" --log.level=warn >"$work/prometheus.log" 2>&1 &
  ppid_=$!
  pids+=("$ppid_")
  for _ in $(seq 1 300); do
    if curl -sf --max-time 2 "http://127.0.0.1:$port/-/ready" >/dev/null; then api="http://127.0.0.1:$port"; break; fi
    kill -0 "$ppid_" 2>/dev/null || break
    sleep 0.2
  done
  [ -n "$api" ] && break
  echo "prometheus did not start on port $port (attempt $attempt):"; tail -3 "$work/prometheus.log"
  kill "$ppid_" 2>/dev/null || true; wait "$ppid_" 2>/dev/null || true
done
[ -n "$api" ] || { echo "FAIL: prometheus never became ready"; exit 1; }
echo "prometheus ready at $api, scraping $server"

query() { curl -s --max-time 5 --get --data-urlencode "query=$1" "$api/api/v1/query"; }
up="" counter=""
for _ in $(seq 1 120); do
  up=$(query 'up{job="msiv2"}')
  counter=$(query 'sum(msiv2_upstream_requests_total{job="msiv2"})')
  if grep -q '"value":\[[0-9.]*,"1"\]' <<<"$up" &&
     grep -Eq '"value":\[[0-9.]*,"[1-9][0-9]*"\]' <<<"$counter"; then
    echo "up: $up"
    echo "msiv2_upstream_requests_total: $counter"
    echo "PASS: prometheus scraped the server"
    exit 0
  fi
  sleep 0.5
done
echo "FAIL: no successful scrape in 60 s"
echo "up: $up"; echo "counter: $counter"
curl -s --max-time 5 "$api/api/v1/targets"; echo
tail -20 "$work/prometheus.log"
exit 1
