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
#   check-installed.sh shared <build dir> <work dir>
#       configures this source tree again with -DBUILD_SHARED_LIBS=ON (libraries only, in
#       <work dir>/build), installs it into <work dir>/prefix, checks each library's versioned
#       soname and that its dynamic symbol table exports msiv2's symbols only; the consumer is
#       built with find_package and with pkg-config, loads the shared libraries from the
#       prefix, and runs.
#   check-installed.sh apt <build dir> <work dir>
#       (root or password-less sudo; skipped when a msiv2 package is already installed) tools/package.sh makes
#       the .deb, `apt-get install ./msiv2_*.deb` installs it with its declared dependencies,
#       the consumer is built against /usr with find_package and with pkg-config and runs;
#       the package is purged again at the end, whatever happened.
# The source tree is never on the consumer's include or library path: a file the install
# forgot fails here.
set -euo pipefail
mode=${1:?usage: check-installed.sh install|deb|shared|apt <build dir> <work dir>}
build=$(cd "${2:?build dir}" && pwd)
work=${3:?work dir}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)
sim="$build/bin/msiv2-sim"

rm -rf "$work"
mkdir -p "$work"
work=$(cd "$work" && pwd)

pid=""
purge=0
as_root=()
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi
  if [ "$purge" = 1 ]; then
    "${as_root[@]}" apt-get purge -y msiv2 >"$work/purge.log" 2>&1 || { echo "apt-get purge msiv2 failed:"; cat "$work/purge.log"; }
  fi
}
trap cleanup EXIT

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
  apt)
    # System-wide: as root, or through sudo when it needs no password (as tools/setup.sh).
    if [ "$(id -u)" != 0 ]; then
      sudo -n true 2>/dev/null \
        || { echo "SKIP: apt mode installs the .deb system-wide: it needs root or sudo without a password"; exit 77; }
      as_root=(sudo -n)
    fi
    command -v apt-get >/dev/null || { echo "SKIP: no apt-get here"; exit 77; }
    if dpkg-query -W -f='${Status}' msiv2 2>/dev/null | grep -q 'install ok installed'; then
      echo "SKIP: a msiv2 package is installed already; this test does not replace it"; exit 77
    fi
    "$root/tools/package.sh" "$build" >"$work/package.log" 2>&1 || { cat "$work/package.log"; exit 1; }
    deb=$(ls "$build"/packages/msiv2_*_amd64.deb)
    cp "$deb" "$work/"
    purge=1
    # apt-get resolves the package's Depends from the archive, as on a user's machine.
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "$work/$(basename "$deb")" >"$work/apt.log" 2>&1 || { cat "$work/apt.log"; exit 1; }
    grep -E '^(Setting up|Unpacking) ' "$work/apt.log" || true
    dpkg -L msiv2 | grep -E 'bin/msiv2-|\.pc$|msiv2Config\.cmake$'
    prefix=/usr
    ;;
  shared)
    cmake -S "$root" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
          -DBUILD_SHARED_LIBS=ON -DMSIV2_WITH_SIM=OFF >"$work/configure-msiv2.log" \
      || { cat "$work/configure-msiv2.log"; exit 1; }
    for lib in messages platform io actors; do
      cmake --build "$work/build" --target "msiv2_$lib" >>"$work/build-msiv2.log" 2>&1 \
        || { tail -50 "$work/build-msiv2.log"; exit 1; }
    done
    cmake --install "$work/build" --prefix "$work/prefix" >"$work/install.log"
    prefix="$work/prefix"
    version=$(sed -nE 's/^#define MSIV2_VERSION "([0-9]+)\.([0-9]+)\.[0-9]+"$/\1.\2/p' \
              "$root/messages/version.hpp")
    for lib in messages platform io actors; do
      file="$prefix/lib/libmsiv2_$lib.so"
      [ -L "$file" ] || { echo "FAIL: $file (the development symlink) not installed"; exit 1; }
      soname=$(readelf -d "$file" | sed -nE 's/.*Library soname: \[(.*)\]/\1/p')
      [ "$soname" = "libmsiv2_$lib.so.$version" ] \
        || { echo "FAIL: $file has soname '$soname', expected libmsiv2_$lib.so.$version"; exit 1; }
      [ -f "$prefix/lib/$soname" ] || { echo "FAIL: $prefix/lib/$soname not installed"; exit 1; }
      # Every defined dynamic symbol is one of ours (the version node itself is type A).
      others=$(nm -D -C --defined-only "$file" | awk '$2 != "A"' | cut -d' ' -f3- \
               | grep -vE '^((typeinfo|typeinfo name|vtable|VTT|guard variable) for )?msiv2::' || true)
      if [ -n "$others" ]; then
        echo "FAIL: $file exports symbols that are not msiv2's:"; head -20 <<<"$others"; exit 1
      fi
      echo "$soname: $(nm -D --defined-only "$file" | awk '$2 != "A"' | wc -l) symbols, all msiv2's"
    done
    ;;
  *) echo "check-installed.sh: unknown mode '$mode'" >&2; exit 2 ;;
esac

# Nothing installed may point back into the build or source tree.
if grep -rIl -e "$root" -e "$build" "$prefix/lib/cmake/msiv2" "$prefix/lib/pkgconfig/msiv2.pc" \
     "$prefix/include/msiv2"; then
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

if [ "$mode" != deb ]; then
  echo "== consumer with pkg-config"
  # Installed by apt, msiv2.pc is on pkg-config's default path.
  [ "$mode" = apt ] || export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
  pkg-config --validate msiv2
  echo "pkg-config msiv2 $(pkg-config --modversion msiv2): $(pkg-config --cflags --libs msiv2)"
  # shellcheck disable=SC2046
  ${CXX:-c++} -std=c++17 -O1 -Wall -Wextra -Werror -o "$work/msiv2-consumer-pc" \
    "$here/consumer.cpp" $(pkg-config --cflags --libs msiv2) -Wl,-rpath,"$prefix/lib"
  consumers+=("$work/msiv2-consumer-pc")
fi

state="$work/sim"
mkdir -p "$state"
"$sim" serve --ready-file "$state/ready.json" --state-dir "$state/data" >"$state/sim.log" 2>&1 &
pid=$!
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
  out=$(timeout 120 "$c" --imds "$imds" --ca-file "$ca" --resource-url "$resource/api/whoami" \
    --trust-host 127.0.0.1)
  echo "$out"
  grep -q '^resource: HTTP 200 ' <<<"$out" || { echo "FAIL: $c did not get HTTP 200"; exit 1; }
  grep -q '"token_bound_auth":true' <<<"$out" \
    || { echo "FAIL: the resource did not see x-ms-tokenboundauth: true from $c"; exit 1; }
  # The binary is linked to nothing from the build tree (the prefix may lie inside it).
  if ldd "$c" | grep -v -e "=> $prefix/" | grep -e "$build" -e "$root"; then
    echo "FAIL: $c links the build tree"; exit 1
  fi
  if [ "$mode" = shared ]; then
    ldd "$c" | grep -E "libmsiv2_(messages|platform|io|actors)\.so" | sed 's/^\s*/  /'
    n=$(ldd "$c" | grep -cE "libmsiv2_[a-z]+\.so\.[0-9.]+ => $prefix/lib/" || true)
    [ "$n" = 4 ] || { echo "FAIL: $c loads $n of the 4 msiv2 libraries from $prefix/lib"; exit 1; }
  fi
done
echo "PASS"
