#!/usr/bin/env bash
# Runs the real @azure/msal-node client against a fresh msiv2-sim (IMDS v1 endpoint).
#   tools/peer/check-msal-node.sh <path to msiv2-sim> [work dir]
# Exits 77 (skipped) when Node.js >= 20 or the npm registry is not available.
set -uo pipefail
sim=${1:?usage: check-msal-node.sh <msiv2-sim> [work dir]}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
work=${2:-$(dirname "$sim")/../peer}
mkdir -p "$work"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node/npm not installed"; exit 77
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "SKIP: @azure/msal-node 7 needs Node.js >= 20, found $(node --version)"; exit 77
fi
cp "$here/package.json" "$here/msal_v1_check.mjs" "$work/"
if [ ! -d "$work/node_modules/@azure/msal-node" ]; then
  if ! (cd "$work" && timeout 300 npm install --no-audit --no-fund --loglevel=error >npm.log 2>&1); then
    echo "SKIP: npm install of @azure/msal-node failed:"; tail -5 "$work/npm.log"; exit 77
  fi
fi

state=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$state"' EXIT
"$sim" serve --ready-file "$state/ready.json" --state-dir "$state/sim" >"$state/sim.log" 2>&1 &
pid=$!
# Up to 60 s: a sanitizer build generating its RSA keys on a loaded machine starts slowly.
for _ in $(seq 1 600); do
  [ -s "$state/ready.json" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "msiv2-sim exited early:"; cat "$state/sim.log"; exit 1; }
  sleep 0.1
done
[ -s "$state/ready.json" ] || { echo "msiv2-sim did not become ready"; cat "$state/sim.log"; exit 1; }

cd "$work" && timeout 120 node msal_v1_check.mjs "$state/ready.json"
