#!/usr/bin/env bash
# The fault matrix as one command: builds (incrementally) and runs msiv2-faults, which drives
# the real module against an in-process msiv2-sim on 127.0.0.1 through every upstream x fault x
# state cell (tools/faults.cpp says what each cell judges). Prints the table, writes JSON
# (default build/faults.json) and exits 1 when a cell failed.
#   tools/faults.sh                          every cell (about a minute or two)
#   tools/faults.sh --json out.json          JSON elsewhere
#   tools/faults.sh -- --upstreams token --faults 5xx,429 --markdown
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
json="$root/build/faults.json"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json=${2:?--json needs a file}; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "faults.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

"$root/tools/setup.sh" --no-build
if [ ! -f "$root/build/build.ninja" ]; then
  "$root/tools/setup.sh"
fi
cmake --build "$root/build" --target msiv2-faults >/dev/null
exec "$root/build/bin/msiv2-faults" --json "$json" "${extra[@]}"
