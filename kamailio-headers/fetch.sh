#!/usr/bin/env bash
# Fetches the C headers of the *installed* Kamailio version from Debian's source package
# into kamailio-headers/src-<version>/ (git-ignored). Kamailio's code is never committed.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ver="$(dpkg-query -W -f='${Version}' kamailio 2>/dev/null || true)"
if [ -z "$ver" ]; then echo "fetch.sh: kamailio is not installed" >&2; exit 1; fi
upstream="${ver#*:}"; upstream="${upstream%%-*}"
dest="$here/src-$upstream"
if [ -f "$dest/src/core/sr_module.h" ]; then
  ln -sfn "src-$upstream" "$here/current"
  exit 0
fi
tmp="$(mktemp -d "$here/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetch.sh: apt-get source kamailio=$ver"
( cd "$tmp" && apt-get source --download-only -qq "kamailio=$ver" >/dev/null 2>&1 ) || {
  echo "fetch.sh: apt-get source failed (is there a deb-src entry? run .ci/setup.sh)" >&2; exit 1; }
orig="$(ls "$tmp"/kamailio_*.orig.tar.* | head -n1)"
mkdir -p "$tmp/x"
tar -xf "$orig" -C "$tmp/x"
top="$(ls "$tmp/x" | head -n1)"
mkdir -p "$dest"
# keep only what a module build needs: the core and module headers
( cd "$tmp/x/$top" && find src -name '*.h' -print0 | xargs -0 cp --parents -t "$dest" )
cp "$tmp/x/$top/src/Makefile.defs" "$dest/src/" 2>/dev/null || true
echo "$ver" > "$dest/DEBIAN_VERSION"
ln -sfn "src-$upstream" "$here/current"
echo "fetch.sh: headers in $dest"
