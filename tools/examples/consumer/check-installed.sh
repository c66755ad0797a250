#!/usr/bin/env bash
# Builds tools/examples/consumer against an installed msiv2 only, and runs it against a fresh
# msiv2-sim (an mtls_pop token, then the resource called over mTLS with it).
#   check-installed.sh install <build dir> <work dir>
#       cmake --install of the build into <work dir>/prefix; the consumer is built there with
#       find_package(msiv2) and again with pkg-config; both run.
#   check-installed.sh deb <build dir> <work dir>
#       tools/package.sh makes the .deb from the build; dpkg -x unpacks it into
#       <work dir>/root; the consumer is built against <work dir>/root/usr with find_package
#       and runs.
# The source tree is never on the consumer's include or library path: a file the install
# forgot fails here.
set -euo pipefail
mode=${1:?usage: check-installed.sh install|deb <build dir> <work dir>}
build=$(cd "${2:?build dir}" && pwd)
work=${3:?work dir}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
sim="$build/bin/msiv2-sim"

rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)

case "$mode" in
  install)
    cmake --install "$build" --prefix "$work/prefix" >"$work/install.log"
    prefix="$work/prefix"
    ;;
  deb)
    "$root/tools/package.sh" "$build" >"$work/package.log" 2>&1 || { cat "$work/package.log"; exit 1; }
    deb=$(ls "$build"/packages/msiv2_*_amd64.deb)
    dpkg-deb --info "$deb" | sed -n '/Package:/,$p'
    dpkg -x "$deb" "$work/root"
    prefix="$work/root/usr"
    ;;
  *) echo "check-installed.sh: unknown mode '$mode'" >&2; exit 2 ;;
esac

# Nothing installed may point back into the build or source tree.
if grep -rIl -e "$root" -e "$build" "$prefix/lib/cmake" "$prefix/lib/pkgconfig" "$prefix/include"; then
  echo "FAIL: the files above name the source or build tree"; exit 1
fi
for h in msiv2/msiv2.hpp msiv2/actors/client.hpp msiv2/messages/version.hpp; do
  [ -f "$prefix/include/$h" ] || { echo "FAIL: $prefix/include/$h not installed"; exit 1; }
done
for d in platform io actors messages; do
  [ ! -e "$prefix/include/$d" ] || { echo "FAIL: $prefix/include/$d is on the include path"; exit 1; }
done

echo "== consumer with find_package(msiv2)"
cmake -S "$here" -B "$work/cmake-build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$prefix" >"$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/cmake-build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
consumers=("$work/cmake-build/msiv2-consumer")

if [ "$mode" = install ]; then
  echo "== consumer with pkg-config"
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  pkg-config --validate msiv2
  echo "pkg-config msiv2 $(pkg-config --modversion msiv2): $(pkg-config --cflags --libs msiv2)"
  # shellcheck disable=SC2046
  ${CXX:-c++} -std=c++17 -O1 -Wall -Wextra -Werror -o "$work/msiv2-consumer-pc" \
    "$here/consumer.cpp" $(pkg-config --cflags --libs msiv2)
  consumers+=("$work/msiv2-consumer-pc")
fi

state="$work/sim"
mkdir -p "$state"
"$sim" serve --ready-file "$state/ready.json" --state-dir "$state/data" >"$state/sim.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null' EXIT
for _ in $(seq 1 600); do
  [ -s "$state/ready.json" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "msiv2-sim exited early:"; cat "$state/sim.log"; exit 1; }
  sleep 0.1
done
[ -s "$state/ready.json" ] || { echo "msiv2-sim did not become ready"; cat "$state/sim.log"; exit 1; }
field() { sed -E "s/.*\"$1\":\"([^\"]*)\".*/\1/" "$state/ready.json"; }
imds=$(field imds); ca=$(field ca_file); resource=$(field resource)

for c in "${consumers[@]}"; do
  echo "== $(basename "$c")"
  out=$(timeout 120 "$c" --imds "$imds" --ca-file "$ca" --resource-url "$resource/api/whoami")
  echo "$out"
  grep -q '^resource: HTTP 200 ' <<<"$out" || { echo "FAIL: $c did not get HTTP 200"; exit 1; }
  # The binary is linked to nothing from the build tree.
  if ldd "$c" | grep -e "$build" -e "$root"; then echo "FAIL: $c links the build tree"; exit 1; fi
done
echo "PASS"
