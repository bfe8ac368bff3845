#!/usr/bin/env bash
# `make deb`: a Debian package of the module for the Kamailio it was built against.
#
#   pkg/deb/build.sh target/release/dispatcher.so      # → target/deb/<pkg>_<ver>_<arch>.deb
#
# The Kamailio version comes from the .so itself (its embedded "kamailio X.Y.Z (...)" string):
#   * built for the installed Debian Kamailio (KAMAILIO_PREFIX unset and X.Y.Z equal to the
#     upstream part of `dpkg-query -W kamailio`):  Depends: kamailio (= <that exact version>)
#   * built for a source build (make KAMAILIO_PREFIX=/opt/kamailio-X.Y.Z, which exports
#     KAMAILIO_PREFIX), or any other X.Y.Z: the upstream version range of Kamailio's own
#     packages:  Depends: kamailio (>= X.Y.Z), kamailio (<< X.Y.Z+1)
# Either way the module goes to the module dir of the Debian/Kamailio packages,
# /usr/lib/<multiarch>/kamailio/modules/dispatcher.so; the preinst diverts the C module to
# dispatcher.so.c-orig, the postrm puts it back (pkg/deb/preinst.in, pkg/deb/postrm.in).
#
# Package: kamailio-dispatcher-rs, Version: <Cargo.toml version>+kam<X.Y.Z>.
# Environment: DEB_OUT (output dir, default target/deb), DEBFULLNAME/DEBEMAIL (Maintainer,
# default: git config user.name/user.email).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/pkg/deb"
PKG=kamailio-dispatcher-rs
OUT="${DEB_OUT:-$ROOT/target/deb}"

die() { echo "deb: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 <path to the built dispatcher.so>"
SO="$1"
case "$SO" in /*) ;; *) SO="$PWD/$SO" ;; esac
[ -f "$SO" ] || die "$SO does not exist: build it with \`make\`"
for t in dpkg-deb dpkg strings md5sum; do
  command -v "$t" > /dev/null || die "$t not found (apt-get install dpkg-dev binutils)"
done

# ---- versions ------------------------------------------------------------------------------
EMBEDDED="$(strings "$SO" | grep -m1 -E '^kamailio [0-9]+\.[0-9]+\.[0-9]' || true)"
[ -n "$EMBEDDED" ] || die "$SO has no embedded 'kamailio X.Y.Z' version string: is it our module?"
KVER="$(printf '%s\n' "$EMBEDDED" | awk '{ print $2 }')"
[[ "$KVER" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] \
  || die "unexpected Kamailio version '$KVER' in $SO (want X.Y.Z)"
KNEXT="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.$(( BASH_REMATCH[3] + 1 ))"

OURVER="$(awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 }
               p && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }' "$ROOT/Cargo.toml")"
[ -n "$OURVER" ] || die "no version in $ROOT/Cargo.toml"
VERSION="$OURVER+kam$KVER"

# the installed Debian package, if any (version without epoch and Debian revision)
DEBKAM="$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' kamailio 2>/dev/null | awk '$1 == "ii" { print $2 }' || true)"
DEBKAM_UP="$DEBKAM"; DEBKAM_UP="${DEBKAM_UP#*:}"; DEBKAM_UP="${DEBKAM_UP%-*}"

if [ -z "${KAMAILIO_PREFIX:-}" ] && [ -n "$DEBKAM" ] && [ "$DEBKAM_UP" = "$KVER" ]; then
  FLAVOUR="Debian's kamailio package $DEBKAM"
  KAMDEP="kamailio (= $DEBKAM)"
else
  if [ -n "${KAMAILIO_PREFIX:-}" ]; then
    pbin="$KAMAILIO_PREFIX/sbin/kamailio"
    if [ -x "$pbin" ]; then
      pver="$("$pbin" -V 2>/dev/null | sed -n 's/^version: kamailio \([0-9][0-9.]*\) .*/\1/p')"
      [ "$pver" = "$KVER" ] || die "$SO was built for Kamailio $KVER but $pbin is $pver: rebuild (make KAMAILIO_PREFIX=$KAMAILIO_PREFIX)"
    fi
    FLAVOUR="Kamailio $KVER built from source ($KAMAILIO_PREFIX); for Kamailio's own $KVER packages"
  else
    FLAVOUR="Kamailio $KVER (no installed Debian package of that version); for Kamailio's own $KVER packages"
  fi
  KAMDEP="kamailio (>= $KVER), kamailio (<< $KNEXT)"
fi

ARCH="$(dpkg --print-architecture)"
MULTIARCH="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || true)"
if [ -z "$MULTIARCH" ]; then
  case "$ARCH" in
    amd64) MULTIARCH=x86_64-linux-gnu ;;
    arm64) MULTIARCH=aarch64-linux-gnu ;;
    *) die "unknown multiarch triplet for $ARCH (install dpkg-dev)" ;;
  esac
fi
MODDIR="/usr/lib/$MULTIARCH/kamailio/modules"

if [ -n "${DEBFULLNAME:-}" ] && [ -n "${DEBEMAIL:-}" ]; then
  MAINTAINER="$DEBFULLNAME <$DEBEMAIL>"
else
  gname="$(git -C "$ROOT" config user.name 2>/dev/null || true)"
  gmail="$(git -C "$ROOT" config user.email 2>/dev/null || true)"
  if [ -n "$gname" ] && [ -n "$gmail" ]; then MAINTAINER="$gname <$gmail>"
  else MAINTAINER="kamailio-dispatcher-rs maintainers <root@localhost>"; fi
fi

# ---- staging tree (debian/<pkg>/ so that dpkg-shlibdeps sees the usual layout) -------------
umask 022
mkdir -p "$OUT"
WORK="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
STAGE="$WORK/debian/$PKG"
DOC="$STAGE/usr/share/doc/$PKG"
install -d -m 0755 "$STAGE/DEBIAN" "$STAGE$MODDIR" "$DOC/cfg-examples"
# the build output as is (not stripped): the installed file is byte-identical to it
install -m 0644 "$SO" "$STAGE$MODDIR/dispatcher.so"
install -m 0644 "$ROOT/README.md" "$DOC/README.md"
for f in "$ROOT"/cfg-examples/*; do
  [ -f "$f" ] && install -m 0644 "$f" "$DOC/cfg-examples/"
done
install -m 0644 "$HERE/copyright" "$DOC/copyright"
for s in preinst postrm; do
  sed -e "s|@PKG@|$PKG|g" -e "s|@MODDIR@|$MODDIR|g" "$HERE/$s.in" > "$STAGE/DEBIAN/$s"
  chmod 0755 "$STAGE/DEBIAN/$s"
  sh -n "$STAGE/DEBIAN/$s" || die "syntax error in $s"
done

# shared-library dependencies (libc6, libgcc-s1); Kamailio's own libraries (libsrdb1) are
# covered by the kamailio dependency above
SHLIBS=""
if command -v dpkg-shlibdeps > /dev/null; then
  printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" > "$WORK/debian/control"
  libdirs=(-l"/usr/lib/$MULTIARCH/kamailio")
  [ -n "${KAMAILIO_PREFIX:-}" ] && libdirs+=(-l"$KAMAILIO_PREFIX/lib64/kamailio" -l"$KAMAILIO_PREFIX/lib/kamailio")
  if line="$(cd "$WORK" && dpkg-shlibdeps -O --ignore-missing-info "${libdirs[@]}" \
               -e "${STAGE#"$WORK"/}$MODDIR/dispatcher.so" 2>"$WORK/shlibdeps.err")"; then
    SHLIBS="$(printf '%s\n' "${line#shlibs:Depends=}" | tr ',' '\n' | sed 's/^ *//; s/ *$//' \
              | grep -v -E '^kamailio( |$)' | grep -v '^$' | paste -sd, - | sed 's/,/, /g' || true)"
  else
    echo "deb: dpkg-shlibdeps failed (using libc6, libgcc-s1):" >&2
    cat "$WORK/shlibdeps.err" >&2
  fi
  rm -f "$WORK/debian/control"
fi
[ -n "$SHLIBS" ] || SHLIBS="libc6, libgcc-s1"
DEPENDS="$KAMDEP, $SHLIBS"

SIZE_KB="$(find "$STAGE" -path "$STAGE/DEBIAN" -prune -o -type f -printf '%s\n' \
           | awk '{ s += int(($1 + 1023) / 1024) } END { print s + 0 }')"

cat > "$STAGE/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $SIZE_KB
Depends: $DEPENDS
Enhances: kamailio
Section: net
Priority: optional
Description: Rust drop-in replacement for Kamailio's dispatcher module
 SIP load-balancing module for Kamailio $KVER written in Rust. It exports the
 module name "dispatcher" with the same modparams, cfg functions, return codes,
 XAVP records and RPC commands as Kamailio's C module.
 .
 Installing this package diverts Kamailio's C module to dispatcher.so.c-orig
 (dpkg-divert) and puts this module in its place, so that
 loadmodule "dispatcher.so" loads it and a Kamailio upgrade cannot overwrite
 it. Removing the package restores the C module.
 .
 Built for $FLAVOUR.
EOF

(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
   | xargs -0 md5sum) > "$STAGE/DEBIAN/md5sums"
chmod 0644 "$STAGE/DEBIAN/control" "$STAGE/DEBIAN/md5sums"
chmod 0755 "$STAGE"

DEB="$OUT/${PKG}_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$STAGE" "$WORK/out.deb" > /dev/null
mv -f "$WORK/out.deb" "$DEB"

echo "deb: $DEB"
echo "deb:   Package: $PKG  Version: $VERSION  Architecture: $ARCH"
echo "deb:   Depends: $DEPENDS"
echo "deb:   module: $MODDIR/dispatcher.so (built for $FLAVOUR)"
