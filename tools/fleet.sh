#!/usr/bin/env bash
# Runs the fleet simulation (msiv2-fleet) with the README's settings and writes the table, the
# JSON and the plots to build/fleet/. Installs gnuplot (Debian: gnuplot-nox) when missing.
#   tools/fleet.sh                   1,000,000 VMs x 4 processes x 2 tokens, 7 days, every scenario
#   tools/fleet.sh --vms 100000 ...  any msiv2-fleet option (msiv2-fleet --help)
#   tools/fleet.sh --check           the model against K real modules (msiv2-fleet --check)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh" --no-build
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "fleet.sh: installing gnuplot-nox (for the plots)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends gnuplot-nox \
    || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
         $sudo apt-get install -y -qq --no-install-recommends gnuplot-nox; }
fi
if [ ! -f "$root/build/build.ninja" ]; then
  "$root/tools/setup.sh"
else
  cmake --build "$root/build" --target msiv2-fleet
fi
out="$root/build/fleet"
mkdir -p "$out"
if [ "${1:-}" = "--check" ]; then
  exec "$root/build/bin/msiv2-fleet" "$@"
fi
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--vms 1000000)
/usr/bin/time -v "$root/build/bin/msiv2-fleet" "${args[@]}" --json "$out/fleet.json" \
  --plots "$out" 2> "$out/time.txt" | tee "$out/table.txt"
grep -E 'Maximum resident|Elapsed' "$out/time.txt" || true
echo "fleet.sh: table, JSON and plots in $out"
