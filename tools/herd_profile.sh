#!/usr/bin/env bash
# Profiles the client side of the herd (scenario 4 of msiv2-bench, the run with the per-boot
# key on disk) with perf, sampling only while that herd runs, and prints where the CPU went by
# thread and by symbol, the simulator's I/O threads (msiv2-sim-io) left out.
#   tools/herd_profile.sh              -> build/herd.perf.data and the report on stdout
#   tools/herd_profile.sh -- ARGS      -> extra msiv2-bench arguments (default --herd-sample 10)
# Needs perf (Debian: linux-perf; installed here when missing) and build/bin/msiv2-bench
# (tools/setup.sh). Not run by CI.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extra=(--herd-sample 10)
if [ "${1:-}" = "--" ]; then shift; extra=("$@"); fi
if ! command -v perf >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "herd_profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q linux-perf >/dev/null
fi
bench="$root/build/bin/msiv2-bench"
[ -x "$bench" ] || { echo "herd_profile.sh: $bench is missing: run tools/setup.sh" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkfifo "$tmp/ctl" "$tmp/ack"
data="$root/build/herd.perf.data"
MSIV2_BENCH_PERF_CTL="$tmp/ctl" MSIV2_BENCH_PERF_ACK="$tmp/ack" \
  perf record -q -F 999 -D -1 --control="fifo:$tmp/ctl,$tmp/ack" -o "$data" -- \
  "$bench" --only 4 "${extra[@]}" >"$tmp/table" 2>&1 || { cat "$tmp/table" >&2; exit 1; }
grep -E "client CPU per token|all requests answered" "$tmp/table" || true
echo
echo "== CPU by thread (samples in the herd window)"
perf report -i "$data" --no-children -g none --sort comm --stdio 2>/dev/null | grep -v '^#' | sed '/^$/d' | head -8
echo
echo "== client threads by library and symbol (simulator I/O threads left out)"
comms=$(perf report -i "$data" --no-children -g none --sort comm --stdio 2>/dev/null |
        awk '!/^#/ && NF >= 2 && $2 != "msiv2-sim-io" {print $2}' | paste -sd, -)
perf report -i "$data" --no-children -g none --comms "$comms" --sort dso --stdio 2>/dev/null |
  grep -v '^#' | sed '/^$/d' | head -10
echo
perf report -i "$data" --no-children -g none --comms "$comms" --sort sym --stdio 2>/dev/null |
  grep -v '^#' | sed '/^$/d' | head -40
