#!/usr/bin/env bash
# Sets up if needed and runs the main job: msiv2-sim's demo (simulator and client in one
# process, on an embedded default configuration). Arguments go to `msiv2-sim demo`.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/tools/setup.sh" >&2
exec "$root/build/bin/msiv2-sim" demo "$@"
