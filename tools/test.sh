#!/usr/bin/env bash
# Sets up if needed, builds, and runs every test.
#   tools/test.sh              all tests, normal build (build/)
#   tools/test.sh --sanitize   all tests but those labelled heavy, under ASan + UBSan (build-asan/)
#   tools/test.sh --tsan       the threaded suites under ThreadSanitizer (build-tsan/)
# Extra arguments after -- go to ctest (e.g. -- -R sim_).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
variant=()
dir="$root/build"
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --sanitize) variant=(--sanitize); dir="$root/build-asan" ;;
    --tsan) variant=(--tsan); dir="$root/build-tsan" ;;
    --) shift; ctest_args=("$@"); break ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

"$root/tools/setup.sh" "${variant[@]}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$root/tools/tsan.supp}

if [ "${variant[*]:-}" = "--tsan" ] && [ ${#ctest_args[@]} -eq 0 ]; then
  # The suites with threads of their own: the simulator, the HTTP transport, the artifact store.
  ctest_args=(-L threaded)
elif [ "${variant[*]:-}" = "--sanitize" ] && [ ${#ctest_args[@]} -eq 0 ]; then
  # Tests labelled heavy (installs, package builds, whole-system matrices, real Prometheus)
  # exercise scripts and other programs more than our code: the normal pass runs them once.
  ctest_args=(-LE heavy)
fi

cd "$dir"
ctest --output-on-failure -j "$(nproc)" "${ctest_args[@]}"
