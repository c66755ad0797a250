#!/usr/bin/env bash
# Installs the Debian 12 packages msiv2 needs (only when one is missing) and configures and
# builds the project.
#   tools/setup.sh              -> build/          (RelWithDebInfo)
#   tools/setup.sh --sanitize   -> build-asan/     (ASan + UBSan)
#   tools/setup.sh --tsan       -> build-tsan/     (ThreadSanitizer; the threaded suites only)
#   tools/setup.sh --fuzz       -> build-fuzz/     (the libFuzzer targets; installs clang-14)
#   tools/setup.sh --no-build   -> packages only
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
variant=default
build=1
for arg in "$@"; do
  case "$arg" in
    --sanitize) variant=asan ;;
    --tsan) variant=tsan ;;
    --fuzz) variant=fuzz ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

packages=(
  build-essential cmake ninja-build pkg-config ca-certificates curl
  libssl-dev libcurl4-openssl-dev libsimdjson-dev libcaf-dev
  libboost-dev libboost-test-dev libboost-system-dev
  # The TPM key store (tss2 ESAPI) and its tests (a software TPM, tools/swtpm.sh).
  libtss2-dev swtpm swtpm-tools tpm2-tools
  # tools/package.sh (dpkg-shlibdeps) and the metrics tests (promtool, and a real prometheus
  # that each test starts on a free loopback port; they never use the package's own service).
  dpkg-dev prometheus
)
# tools/fuzz.sh: Debian 12's default clang with libFuzzer and its sanitizer runtimes.
[ "$variant" != fuzz ] || packages+=(clang-14 libclang-rt-14-dev)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

[ "$build" -eq 1 ] || exit 0

case "$variant" in
  default) dir="$root/build"; flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo) ;;
  # Sanitizer builds at -O1: compile faster than -O2, run far faster than -O0.
  asan) dir="$root/build-asan"; flags=(-DMSIV2_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g") ;;
  tsan) dir="$root/build-tsan"; flags=(-DMSIV2_TSAN=ON -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g") ;;
  # Only the fuzz targets (tests/fuzz/), with clang, ASan + UBSan (tests/fuzz/CMakeLists.txt).
  fuzz) dir="$root/build-fuzz"; flags=(-DMSIV2_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug "-DCMAKE_CXX_FLAGS_DEBUG=-O1 -g"
          -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14) ;;
esac

if [ ! -f "$dir/build.ninja" ]; then
  cmake -S "$root" -B "$dir" -G Ninja "${flags[@]}" >/dev/null
fi
# The TSan build is for the threaded suites only (tools/test.sh --tsan): the test program with
# them (tests/CMakeLists.txt) and the programs it runs, not the tools.
targets=()
[ "$variant" != tsan ] || targets=(--target msiv2_tests)
cmake --build "$dir" -j "$(nproc)" "${targets[@]}"
