#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz/ (clang, ASan + UBSan, build-fuzz/) and runs each
# on its seed corpus.
#   tools/fuzz.sh                      every target, 60 s each
#   tools/fuzz.sh --seconds 600 jwt    one target for ten minutes
#   tools/fuzz.sh --list               the targets
# Per target it prints executions, coverage (cov: edges, ft: features), corpus size and
# crashes; it exits 1 when a target crashed (the input is kept in build-fuzz/crashes/<target>/).
# New inputs found go to build-fuzz/corpus/<target>/ (the committed seeds in tests/fuzz/corpus/
# are only read). tools/setup.sh --fuzz installs clang-14 and libclang-rt-14-dev (Debian 12's
# default clang) when missing and builds every target.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds=60
list=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a value}; shift ;;
    --list) list=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    *) targets+=("$1") ;;
  esac
  shift
done
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: --seconds must be a whole number" >&2; exit 2 ;; esac

all=()
for f in "$root"/tests/fuzz/fuzz_*.cpp; do
  name=$(basename "$f" .cpp)
  [ "$name" = fuzz_common ] || all+=("${name#fuzz_}")
done
if [ "$list" -eq 1 ]; then printf '%s\n' "${all[@]}"; exit 0; fi
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "$root/tests/fuzz/fuzz_$t.cpp" ] || { echo "fuzz.sh: no target '$t' (try --list)" >&2; exit 2; }
done

"$root/tools/setup.sh" --fuzz
dir="$root/build-fuzz"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
printf '%-14s %10s %7s %7s %7s %8s  %s\n' target execs exec/s cov ft corpus crashes
crashed=0
for t in "${targets[@]}"; do
  seeds="$root/tests/fuzz/corpus/$t"
  work="$dir/corpus/$t"
  crashes="$dir/crashes/$t"
  mkdir -p "$work" "$crashes"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536
        -print_final_stats=1 -artifact_prefix="$crashes/")
  [ -f "$root/tests/fuzz/dict/$t.dict" ] && args+=(-dict="$root/tests/fuzz/dict/$t.dict")
  log="$dir/fuzz_$t.log"
  status=0
  "$dir/bin/fuzz_$t" "${args[@]}" "$work" "$seeds" >"$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus=$(find "$work" -type f | wc -l)
  found=$(find "$crashes" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
  verdict=$found
  if [ "$status" -ne 0 ]; then
    crashed=1
    verdict="$found (exit $status, see $log)"
    grep -E 'ERROR|SUMMARY|runtime error|fuzz property' "$log" | head -5 >&2 || true
  fi
  printf '%-14s %10s %7s %7s %7s %8s  %s\n' "$t" "${execs:-0}" "${rate:-0}" "${cov:--}" "${ft:--}" "$corpus" "$verdict"
done
exit "$crashed"
