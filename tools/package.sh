#!/usr/bin/env bash
# Builds the Debian package msiv2_<version>_amd64.deb from a build directory with CPack.
#   tools/package.sh              package build/ (configured and built by tools/setup.sh first)
#   tools/package.sh BUILD_DIR    package an existing build directory as it is
# The package lands in BUILD_DIR/packages/; the version is MSIV2_VERSION (messages/version.hpp).
# Install it with: sudo apt-get install ./build/packages/msiv2_*_amd64.deb
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
esac
if [ $# -ge 1 ]; then
  build=$(cd "$1" && pwd)
else
  "$root/tools/setup.sh"
  build="$root/build"
fi
[ -f "$build/CPackConfig.cmake" ] || { echo "package.sh: $build is not a configured msiv2 build" >&2; exit 2; }
command -v dpkg-shlibdeps >/dev/null || { echo "package.sh: dpkg-shlibdeps missing (apt-get install dpkg-dev)" >&2; exit 2; }
rm -f "$build"/packages/msiv2_*.deb
(cd "$build" && cpack --config CPackConfig.cmake)
ls "$build"/packages/msiv2_*_amd64.deb
