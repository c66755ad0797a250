#!/usr/bin/env bash
# Runs every benchmark scenario (build/bin/msiv2-bench) against the simulator on loopback and
# prints the table: scenario, figure, value, baseline, ratio, target, PASS/MISS.
#   tools/bench.sh                    -> the table (and build/bench.json)
#   tools/bench.sh --json FILE        -> the same as JSON in FILE
#   tools/bench.sh --quick            -> miniature runs, judged by upstream call counts only
#   tools/bench.sh -- ARGS            -> extra msiv2-bench arguments (--only 1,2 --markdown ...)
# Builds RelWithDebInfo through tools/setup.sh first (incremental: a binary older than the
# sources is never measured; the build does not count against the 5 minutes), installs
# the pinned @azure/msal-node (tools/peer/package.json) with npm into build/peer for the peer
# scenario (skipped, with the reason in the table, without Node.js >= 20 or npm), and bounds
# the whole run to 5 minutes.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
json="$root/build/bench.json"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --json) [ $# -ge 2 ] || { echo "bench.sh: --json needs a file" >&2; exit 2; }
            json=$2; shift 2 ;;
    --quick) extra+=(--quick); shift ;;
    --) shift; extra+=("$@"); break ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done

bench="$root/build/bin/msiv2-bench"
"$root/tools/setup.sh" || exit 1
[ -x "$bench" ] || { echo "bench.sh: $bench was not built" >&2; exit 1; }

# The peer: the same install as tools/peer/check-msal-node.sh (pinned version, own cache dir).
peer_dir="$root/build/peer"
peer=()
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  peer=(--peer-skip "node/npm not installed")
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  peer=(--peer-skip "@azure/msal-node 7 needs Node.js >= 20, found $(node --version)")
else
  mkdir -p "$peer_dir"
  cp "$root/tools/peer/package.json" "$peer_dir/"
  if [ ! -d "$peer_dir/node_modules/@azure/msal-node" ]; then
    echo "bench.sh: installing @azure/msal-node (pinned) into $peer_dir" >&2
    if ! (cd "$peer_dir" && timeout 120 npm install --no-audit --no-fund --loglevel=error \
            >npm.log 2>&1); then
      peer=(--peer-skip "npm install of @azure/msal-node failed (see $peer_dir/npm.log)")
    fi
  fi
  [ ${#peer[@]} -gt 0 ] || peer=(--peer-dir "$peer_dir")
fi

echo "bench.sh: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
timeout --kill-after=10 300 "$bench" --json "$json" "${peer[@]}" "${extra[@]}"
rc=$?
if [ $rc -eq 124 ]; then
  echo "bench.sh: the benchmarks did not finish within 5 minutes" >&2
  exit 1
fi
[ $rc -eq 0 ] && echo "bench.sh: JSON in $json" >&2
exit $rc
