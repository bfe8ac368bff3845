#!/usr/bin/env bash
# Builds and installs one Kamailio release into a prefix, for building and testing the module
# against it (`make kamailio KAMAILIO_VERSION=6.1.4 [KAMAILIO_PREFIX=/opt/kamailio-6.1.4]`).
#
# * Source: $KAMAILIO_SRC_DIR/kamailio-<version>.tar.xz (default ../shared/kamailio-src), checked
#   against the sha256 pinned in kamailio-headers/versions.txt; when absent, the same release tag
#   is downloaded from upstream and its uncompressed tar stream is checked against the pinned
#   sha256 of the git archive (the same for any compression).
# * Flavour: as pinned (5.8/6.0 make, 6.1 cmake as Kamailio's own 6.1 packages); override with
#   KAMAILIO_FLAVOUR=make|cmake.
# * Builds the core, kamcmd and the modules the tests, demo and examples use (including that
#   version's C dispatcher), installs into the prefix, and copies the C headers (plus
#   Makefile.defs) to <prefix>/share/kamailio-rs/src for the module build. Kamailio's code is
#   never committed: it lives only in the prefix and a temporary build dir.
# * Idempotent: a prefix whose stamp names the same version, flavour and source hash is skipped.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
ver="${1:-${KAMAILIO_VERSION:-}}"
[ -n "$ver" ] || { echo "usage: make kamailio KAMAILIO_VERSION=<x.y.z> [KAMAILIO_PREFIX=...]" >&2; exit 2; }
prefix="${KAMAILIO_PREFIX:-/opt/kamailio-$ver}"
srcdir="${KAMAILIO_SRC_DIR:-$root/../shared/kamailio-src}"

pin="$(awk -v v="$ver" '$1==v {print $2, $3, $4}' "$here/versions.txt")"
[ -n "$pin" ] || { echo "build-kamailio: version $ver is not pinned in kamailio-headers/versions.txt" >&2; exit 2; }
read -r pin_flavour pin_xz pin_tar <<<"$pin"
flavour="${KAMAILIO_FLAVOUR:-$pin_flavour}"
stamp="$prefix/share/kamailio-rs/STAMP"
want_stamp="kamailio $ver $flavour $pin_tar"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_stamp" ] && [ -x "$prefix/sbin/kamailio" ] \
   && "$prefix/sbin/kamailio" -V 2>/dev/null | grep -q "^version: kamailio $ver "; then
  echo "build-kamailio: $prefix already holds Kamailio $ver ($flavour)"
  exit 0
fi

SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
need=()
for p in build-essential bison flex pkg-config libsqlite3-dev libpq-dev liblua5.1-0-dev xz-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
[ "$flavour" = cmake ] && { dpkg-query -W -f='${Status}' cmake 2>/dev/null | grep -q "install ok installed" || need+=(cmake); }
if [ "${#need[@]}" -gt 0 ]; then
  echo "build-kamailio: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

work="$(mktemp -d /tmp/kamailio-build-$ver.XXXXXX)"
trap 'rm -rf "$work"' EXIT
tarball="$srcdir/kamailio-$ver.tar.xz"
if [ -f "$tarball" ]; then
  got="$(sha256sum "$tarball" | cut -d' ' -f1)"
  [ "$got" = "$pin_xz" ] || { echo "build-kamailio: $tarball: sha256 $got, pinned $pin_xz" >&2; exit 1; }
  tar -xJf "$tarball" -C "$work"
else
  url="https://github.com/kamailio/kamailio/archive/refs/tags/$ver.tar.gz"
  echo "build-kamailio: $tarball not found; downloading $url"
  curl -fsSL "$url" -o "$work/src.tar.gz"
  got="$(gzip -dc "$work/src.tar.gz" | sha256sum | cut -d' ' -f1)"
  [ "$got" = "$pin_tar" ] || { echo "build-kamailio: downloaded tar stream sha256 $got, pinned $pin_tar" >&2; exit 1; }
  tar -xzf "$work/src.tar.gz" -C "$work"
fi
src="$work/kamailio-$ver"
[ -d "$src/src/core" ] || { echo "build-kamailio: unexpected tarball layout" >&2; exit 1; }

# modules the tests, the demo, the benchmarks and the examples load (plus dmq/dialog/xhttp for
# cluster and metrics work)
MODS="tm sl ctl kex corex pv xlog textops siputils cfgutils sqlops db_sqlite db_postgres jsonrpcs
      app_lua dmq dialog xhttp xhttp_prom rr maxfwd dispatcher cfg_rpc htable"
MODS="$(echo $MODS)"
jobs="$(nproc)"
t0=$(date +%s)
rm -rf "$prefix"
if [ "$flavour" = make ]; then
  ( cd "$src" && make PREFIX="$prefix" exclude_modules="$(ls src/modules | tr '\n' ' ')" \
      include_modules="$MODS" cfg >"$work/cfg.log" 2>&1 ) || { tail -30 "$work/cfg.log"; exit 1; }
  ( cd "$src" && nice -n 10 make -j"$jobs" all >"$work/build.log" 2>&1 && make install >"$work/install.log" 2>&1 ) \
    || { tail -40 "$work/build.log" "$work/install.log" 2>/dev/null; exit 1; }
else
  ( cd "$src" && cmake -S . -B build -DCMAKE_INSTALL_PREFIX="$prefix" -DMODULE_GROUP_NAME="" \
      -DINCLUDE_MODULES="$MODS" -DBUILD_DOC=OFF -DUSE_GIT=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_EXPORT_COMPILE_COMMANDS=ON \
      >"$work/cfg.log" 2>&1 ) || { tail -30 "$work/cfg.log"; exit 1; }
  ( cd "$src" && nice -n 10 cmake --build build -j"$jobs" >"$work/build.log" 2>&1 \
      && cmake --install build >"$work/install.log" 2>&1 ) \
    || { tail -40 "$work/build.log" "$work/install.log" 2>/dev/null; exit 1; }
fi

# headers for the module build (bindgen, the shim and the probe)
hdr="$prefix/share/kamailio-rs"
mkdir -p "$hdr/src"
( cd "$src" && find src -name '*.h' -print0 | xargs -0 cp --parents -t "$hdr" )
cp "$src/src/Makefile.defs" "$hdr/src/"
if [ "$flavour" = cmake ] && [ -f "$src/build/compile_commands.json" ]; then
  cp "$src/build/compile_commands.json" "$hdr/"
fi
echo "$flavour" > "$hdr/FLAVOUR"
echo "$want_stamp" > "$stamp"
"$prefix/sbin/kamailio" -V | head -1
echo "build-kamailio: Kamailio $ver ($flavour) in $prefix, $(( $(date +%s) - t0 )) s"
