#!/usr/bin/env bash
# `make test-deb`: the Debian package built by `make deb` (pkg/deb/build.sh).
#
#   tests/deb_test.sh [path/to/dispatcher.so]      # default target/release/dispatcher.so
#   DEB_TEST_WAIT=600 tests/deb_test.sh            # wait up to 600 s for the C module to be free
#
# 1. Package checks (always): control fields (Package, Version = <Cargo version>+kam<X.Y.Z>,
#    Architecture, Depends on the Kamailio the .so was built for), file list, owners and modes,
#    the packaged dispatcher.so byte-identical to the build, maintainer scripts.
# 2. Install test, only when the .so was built for the installed Debian Kamailio (embedded
#    version = `kamailio -V`) and no Kamailio is using Debian's module dir (other tests use the
#    C module there as their reference: the test refuses to run, or waits DEB_TEST_WAIT s):
#    dpkg -i (twice: the maintainer scripts are idempotent) → the diversion exists, the C module
#    is dispatcher.so.c-orig, tests/demo.sh with DS_TEST_MODULE=installed (plain -L <moddir>,
#    loadmodule "dispatcher.so") routes calls and the Kamailio process maps a dispatcher.so whose
#    content is our build → dpkg -r → diversion gone, dispatcher.so is the C module again
#    (sha256 recorded before), `kamailio -c` and a short demo with DS_TEST_MODULE=c load it.
#    The machine is left as found, also on failure or Ctrl-C: the package is removed, the
#    diversion undone, and the C module restored from a backup if its sha256 changed.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SELF="$ROOT/tests/$(basename "$0")"
PKG=kamailio-dispatcher-rs
DEB_KAMAILIO=/usr/sbin/kamailio
DEB_KAMCMD=/usr/sbin/kamcmd
MULTIARCH="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
MODDIR="/usr/lib/$MULTIARCH/kamailio/modules"
MOD="$MODDIR/dispatcher.so"
ORIG="$MODDIR/dispatcher.so.c-orig"
CFG="$ROOT/cfg-examples/round-robin-failover.cfg"

sha() { sha256sum < "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------------------------------------
# --on-ready: run by tests/demo.sh (DEMO_ON_READY) while its Kamailio is up: which
# dispatcher.so does the process map, and is its content the expected one?
# ---------------------------------------------------------------------------------------------
if [ "${1:-}" = --on-ready ]; then
  pid="$DEMO_KAMAILIO_PID"; want="$DEB_TEST_EXPECT_SHA"; label="$DEB_TEST_EXPECT_LABEL"
  paths="$(awk '$6 ~ /\/dispatcher\.so/ { $1=$2=$3=$4=$5=""; sub(/^ +/, ""); print }' "/proc/$pid/maps" | sort -u)"
  if [ "$paths" != "$MOD" ]; then
    echo "check: FAIL: kamailio pid $pid maps [$paths], expected exactly $MOD" >&2; exit 1
  fi
  range="$(awk -v p="$MOD" '$6 == p && NF == 6 { print $1; exit }' "/proc/$pid/maps")"
  mapped="$(sha "/proc/$pid/map_files/$range")"
  ondisk="$(sha "$MOD")"
  echo "check: kamailio pid $pid maps $MOD (mapping $range)"
  echo "check:   sha256 of the mapped file: $mapped"
  echo "check:   sha256 of $label:$(printf '%*s' $(( 14 - ${#label} )) '') $want"
  if [ "$mapped" != "$want" ] || [ "$ondisk" != "$want" ]; then
    echo "check: FAIL: the loaded dispatcher.so is not $label (on disk: $ondisk)" >&2; exit 1
  fi
  n="$("$DEB_KAMCMD" -s "unix:$DEMO_CTL" dispatcher.list | grep -c 'URI: sip:127.0.0.1:' || true)"
  echo "check:   kamcmd dispatcher.list: $n destinations"
  [ "$n" = 3 ] || { echo "check: FAIL: expected 3 destinations" >&2; exit 1; }
  echo "check: OK: the running Kamailio loaded $label as $MOD"
  exit 0
fi

FAILS=0
ok()   { echo "  ok   $*"; }
bad()  { echo "  FAIL $*" >&2; FAILS=$(( FAILS + 1 )); }
die()  { echo "deb_test: $*" >&2; exit 1; }
check() { # check <description> <command...>
  local d="$1"; shift
  if "$@"; then ok "$d"; else bad "$d"; fi
}
eq() { [ "$1" = "$2" ] || { echo "       got:      '$1'" >&2; echo "       expected: '$2'" >&2; return 1; }; }

SO="${1:-$ROOT/target/release/dispatcher.so}"
case "$SO" in /*) ;; *) SO="$PWD/$SO" ;; esac
[ -f "$SO" ] || die "$SO does not exist: run \`make deb\`"
SO_SHA="$(sha "$SO")"

# ---- what the package must look like ------------------------------------------------------
KVER="$(strings "$SO" | grep -m1 -E '^kamailio [0-9]+\.[0-9]+\.[0-9]' | awk '{ print $2 }' || true)"
[[ "$KVER" =~ ^([0-9]+)\.([0-9]+)\.([0-9]+)$ ]] || die "no 'kamailio X.Y.Z' version string in $SO"
KNEXT="${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.$(( BASH_REMATCH[3] + 1 ))"
OURVER="$(awk '/^\[package\]/ { p = 1; next } /^\[/ { p = 0 }
               p && $1 == "version" { gsub(/[" ]/, "", $3); print $3; exit }' "$ROOT/Cargo.toml")"
ARCH="$(dpkg --print-architecture)"
VERSION="$OURVER+kam$KVER"
DEB="$ROOT/target/deb/${PKG}_${VERSION}_${ARCH}.deb"
DEBKAM="$(dpkg-query -W -f='${db:Status-Abbrev} ${Version}' kamailio 2>/dev/null | awk '$1 == "ii" { print $2 }' || true)"
DEBKAM_UP="${DEBKAM#*:}"; DEBKAM_UP="${DEBKAM_UP%-*}"
INSTALLED_KVER="$("$DEB_KAMAILIO" -V 2>/dev/null | sed -n 's/^version: kamailio \([0-9][0-9.]*\) .*/\1/p' || true)"
if [ -z "${KAMAILIO_PREFIX:-}" ] && [ -n "$DEBKAM" ] && [ "$DEBKAM_UP" = "$KVER" ]; then
  FOR_DEBIAN=1; WANT_KAMDEP="kamailio (= $DEBKAM)"
else
  FOR_DEBIAN=0; WANT_KAMDEP="kamailio (>= $KVER), kamailio (<< $KNEXT)"
fi

echo "deb_test: module $SO"
echo "deb_test:   built for kamailio $KVER; installed Debian kamailio: ${DEBKAM:-none} (kamailio -V: ${INSTALLED_KVER:-none})"
echo "deb_test: package $DEB"
[ -f "$DEB" ] || die "$DEB does not exist: run \`make deb\`"

WORK="$ROOT/target/deb-test/$$"
rm -rf "$WORK"; mkdir -p "$WORK"

echo
echo "== package contents (dpkg-deb -I / -c) =="
field() { dpkg-deb -f "$DEB" "$1"; }
check "Package: $PKG" eq "$(field Package)" "$PKG"
check "Version: $VERSION" eq "$(field Version)" "$VERSION"
check "Architecture: $ARCH" eq "$(field Architecture)" "$ARCH"
DEPENDS="$(field Depends)"
echo "       Depends: $DEPENDS"
check "Depends starts with: $WANT_KAMDEP" eq "${DEPENDS:0:${#WANT_KAMDEP}}" "$WANT_KAMDEP"
check "Depends names kamailio only there" \
  eq "$(printf '%s\n' "$DEPENDS" | tr ',' '\n' | grep -c -E '^ *kamailio( |$)')" \
     "$(printf '%s\n' "$WANT_KAMDEP" | tr ',' '\n' | grep -c .)"
check "Depends: libc6" eval 'printf "%s\n" "$DEPENDS" | grep -q -E "(^|, )libc6( |,|$)"'
dpkg-deb -c "$DEB" > "$WORK/contents"
cl() { awk -v p="./$1" '$6 == p { print $1, $2 }' "$WORK/contents"; }
check "$MOD  -rw-r--r-- root/root" eq "$(cl "${MOD#/}")" "-rw-r--r-- root/root"
for f in README.md copyright cfg-examples/round-robin-failover.cfg cfg-examples/db-mode.cfg cfg-examples/dispatcher.list; do
  check "/usr/share/doc/$PKG/$f  -rw-r--r-- root/root" eq "$(cl "usr/share/doc/$PKG/$f")" "-rw-r--r-- root/root"
done
check "every entry root/root" eq "$(awk '$2 != "root/root"' "$WORK/contents")" ""
check "nothing outside $MODDIR/ and /usr/share/doc/$PKG/" \
  eq "$(awk '$1 !~ /^d/ { print $6 }' "$WORK/contents" | grep -v -E "^\./(${MOD#/}|usr/share/doc/$PKG/.*)\$" || true)" ""
dpkg-deb -x "$DEB" "$WORK/x"
dpkg-deb -e "$DEB" "$WORK/x/DEBIAN"
check "packaged dispatcher.so is byte-identical to $SO" eq "$(sha "$WORK/x$MOD")" "$SO_SHA"
check "copyright names GPL-2.0-or-later" grep -q 'GPL-2.0-or-later' "$WORK/x/usr/share/doc/$PKG/copyright"
for s in preinst postrm; do
  f="$WORK/x/DEBIAN/$s"
  check "$s: executable, sh -n, set -e" eval '[ -x "$f" ] && sh -n "$f" && grep -q "^set -e" "$f"'
done
check "preinst: dpkg-divert --package $PKG --rename --divert $ORIG --add $MOD" \
  grep -q -F 'dpkg-divert --package "$PKG" --rename --divert "$ORIG" --add "$MOD"' "$WORK/x/DEBIAN/preinst"
check "postrm: dpkg-divert --package $PKG --rename --divert $ORIG --remove $MOD" \
  grep -q -F 'dpkg-divert --package "$PKG" --rename --divert "$ORIG" --remove "$MOD"' "$WORK/x/DEBIAN/postrm"
check "scripts divert $MOD to $ORIG" \
  eval 'grep -q -x "MOD=$MOD" "$WORK/x/DEBIAN/preinst" && grep -q -x "ORIG=$ORIG" "$WORK/x/DEBIAN/postrm"'
check "postrm handles remove, purge, abort-install" grep -q -E '^ +remove\|purge\|abort-install' "$WORK/x/DEBIAN/postrm"
rm -rf "$WORK/x"

if [ "$FAILS" -ne 0 ]; then die "FAILED: $FAILS package check(s) failed"; fi

# ---- the maintainer scripts in a scratch dpkg root (nothing on the machine is touched) --------
# (dpkg >= 1.21: dpkg-divert in the scripts honours DPKG_ROOT/DPKG_ADMINDIR set by dpkg --root)
if [ "$(id -u)" = 0 ] && dpkg --compare-versions "$(dpkg-query -W -f='${Version}' dpkg)" ge 1.21; then
  REAL_BEFORE="$(sha "$MOD" 2>/dev/null || true) $(dpkg-divert --listpackage "$MOD")"
  echo
  echo "== maintainer scripts in a scratch root (dpkg --root=<tmp> --force-script-chrootless) =="
  R="$WORK/root"
  mkdir -p "$R/var/lib/dpkg/info" "$R/var/lib/dpkg/updates" "$R/var/log" "$WORK/fakekam/DEBIAN" "$WORK/fakekam$MODDIR"
  touch "$R/var/lib/dpkg/status"
  # a stand-in for the kamailio package that owns the C module
  echo "stand-in for the C dispatcher.so" > "$WORK/fakekam$MODDIR/dispatcher.so"
  printf 'Package: kamailio\nVersion: %s\nArchitecture: %s\nMaintainer: test <root@localhost>\nDescription: stand-in\n' \
    "${DEBKAM:-$KVER-1}" "$ARCH" > "$WORK/fakekam/DEBIAN/control"
  (cd "$WORK/fakekam" && md5sum "${MOD#/}" > DEBIAN/md5sums)
  dpkg-deb --root-owner-group --build "$WORK/fakekam" "$WORK/fakekam.deb" > /dev/null
  sdpkg() { dpkg --root="$R" --force-script-chrootless --force-depends "$@" > "$WORK/scratch.log" 2>&1; }
  sdiv() { DPKG_ROOT="$R" dpkg-divert --admindir "$R/var/lib/dpkg" --list "$MOD"; }
  C_SHA="$(sha "$WORK/fakekam$MOD")"
  sdpkg -i "$WORK/fakekam.deb"
  check "install: preinst diverts, the package's dispatcher.so in place" \
    eval 'sdpkg -i "$DEB" && [ "$(sdiv)" = "diversion of $MOD to $ORIG by $PKG" ] && [ "$(sha "$R$MOD")" = "$SO_SHA" ] && [ "$(sha "$R$ORIG")" = "$C_SHA" ]'
  check "reinstall (preinst upgrade): same state" \
    eval 'sdpkg -i "$DEB" && [ "$(sdiv)" = "diversion of $MOD to $ORIG by $PKG" ] && [ "$(sha "$R$MOD")" = "$SO_SHA" ] && [ "$(sha "$R$ORIG")" = "$C_SHA" ]'
  check "remove: postrm restores the C module, no diversion" \
    eval 'sdpkg -r "$PKG" && [ -z "$(sdiv)" ] && [ "$(sha "$R$MOD")" = "$C_SHA" ] && [ ! -e "$R$ORIG" ]'
  check "purge after remove (postrm again): nothing changes" \
    eval 'sdpkg -P "$PKG" && [ -z "$(sdiv)" ] && [ "$(sha "$R$MOD")" = "$C_SHA" ] && [ ! -e "$R$ORIG" ]'
  # `make install` leaves the C module as dispatcher.so.c-orig and a copied module in its place
  cp "$R$MOD" "$R$ORIG"; echo "hand-copied module" > "$R$MOD"
  check "install over a \`make install\` (C module in dispatcher.so.c-orig): taken over" \
    eval 'sdpkg -i "$DEB" && [ "$(sdiv)" = "diversion of $MOD to $ORIG by $PKG" ] && [ "$(sha "$R$MOD")" = "$SO_SHA" ] && [ "$(sha "$R$ORIG")" = "$C_SHA" ]'
  check "... and removed: the C module is back" \
    eval 'sdpkg -P "$PKG" && [ -z "$(sdiv)" ] && [ "$(sha "$R$MOD")" = "$C_SHA" ] && [ ! -e "$R$ORIG" ]'
  echo "some other file" > "$R$ORIG"
  check "a foreign dispatcher.so.c-orig: install refused, nothing changed" \
    eval '! sdpkg -i "$DEB" && grep -q "is not the C dispatcher module" "$WORK/scratch.log" && [ -z "$(sdiv)" ] && [ "$(sha "$R$MOD")" = "$C_SHA" ] && [ "$(cat "$R$ORIG")" = "some other file" ]'
  check "the machine's $MOD and its diversions untouched by the scratch runs" \
    eq "$(sha "$MOD" 2>/dev/null || true) $(dpkg-divert --listpackage "$MOD")" "$REAL_BEFORE"
  rm -rf "$R" "$WORK/fakekam" "$WORK/fakekam.deb"
  if [ "$FAILS" -ne 0 ]; then die "FAILED: $FAILS maintainer-script check(s) failed (last dpkg log: $WORK/scratch.log)"; fi
fi

# ---- install test only for a module built for the installed Debian Kamailio ---------------------
if [ "$FOR_DEBIAN" != 1 ] || [ "$KVER" != "$INSTALLED_KVER" ]; then
  echo
  echo "deb_test: SKIP install test: $SO is built for kamailio $KVER, the installed Debian kamailio is" \
       "${INSTALLED_KVER:-none}${KAMAILIO_PREFIX:+ (KAMAILIO_PREFIX=$KAMAILIO_PREFIX)}; package checks passed"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "the install test needs root (dpkg -i)"

echo
echo "== pre-flight =="
# one install test at a time on this machine (held until exit; not passed to the demo's processes)
LOCK=/run/lock/kamailio-dispatcher-rs-deb-test.lock
exec 9> "$LOCK"
flock -w "${DEB_TEST_WAIT:-0}" 9 || die "refusing: another deb_test.sh holds $LOCK (set DEB_TEST_WAIT=<seconds> to wait)"
pkg_status() { dpkg-query -W -f='${db:Status-Abbrev}' "$PKG" 2>/dev/null | tr -d ' ' || true; }
diverter() { dpkg-divert --listpackage "$MOD"; }
[ -z "$(pkg_status)" ] || [ "$(pkg_status)" = un ] || [ "$(pkg_status)" = pn ] \
  || die "refusing: $PKG is already on this machine (status '$(pkg_status)'): dpkg -P $PKG first"
[ -z "$(diverter)" ] || die "refusing: $MOD is already diverted (by '$(diverter)'): dpkg-divert --list '$MOD'"
[ ! -e "$ORIG" ] || die "refusing: $ORIG exists (left over by \`make install\`?): restore the C module first"
OWNER="$(dpkg-query -S "$MOD" 2>/dev/null | grep -v '^diversion ' | head -n1 | cut -d: -f1 || true)"
[ "$OWNER" = kamailio ] || die "refusing: $MOD is not owned by the kamailio package (owner: '${OWNER:-none}')"
want_md5=""
for f in /var/lib/dpkg/info/kamailio.md5sums /var/lib/dpkg/info/kamailio:*.md5sums; do
  [ -f "$f" ] && want_md5="$(awk -v p="${MOD#/}" '$2 == p { print $1 }' "$f")" && break
done
[ "$(md5sum < "$MOD" | cut -d' ' -f1)" = "$want_md5" ] \
  || die "refusing: $MOD is not the file of the kamailio package (md5 differs from dpkg's): reinstall kamailio"

# Kamailio processes that use Debian's module dir: -L <moddir>, the Debian binary without -L
# (its default module path), or anything mapping a dispatcher.so from there
busy() {
  local p cmd exe out=""
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    if grep -q -F "$MODDIR/dispatcher.so" "$p/maps" 2>/dev/null; then
      out+="  pid ${p#/proc/}: maps $MODDIR/dispatcher.so: $(tr '\0' ' ' < "$p/cmdline" 2>/dev/null | cut -c1-160)"$'\n'
      continue
    fi
    exe="$(readlink "$p/exe" 2>/dev/null || true)"
    case "$exe" in */kamailio|*/kamailio\ \(deleted\)) ;; *) continue ;; esac
    cmd=" $(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) "
    if [[ "$cmd" == *" -L $MODDIR "* || "$cmd" == *" -L $MODDIR/ "* ]] \
       || { [ "$exe" = "$DEB_KAMAILIO" ] && [[ "$cmd" != *" -L "* ]]; }; then
      out+="  pid ${p#/proc/}: $(printf '%s' "$cmd" | cut -c1-160)"$'\n'
    fi
  done
  printf '%s' "$out"
}
deadline=$(( $(date +%s) + ${DEB_TEST_WAIT:-0} ))
while :; do
  b="$(busy)"
  [ -z "$b" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "deb_test: refusing to run: Kamailio processes use the C module in $MODDIR" >&2
    echo "deb_test: (other tests run it as their reference; installing the package would swap it):" >&2
    printf '%s' "$b" | sort -u | head -n 20 >&2
    echo "deb_test: run again when they are gone, or set DEB_TEST_WAIT=<seconds> to wait" >&2
    exit 1
  fi
  sleep 1
done
ok "no Kamailio uses $MODDIR"

ORIG_SHA="$(sha "$MOD")"
BACKUP="$WORK/backup-dispatcher.so"
cp -p "$MOD" "$BACKUP"
[ "$(sha "$BACKUP")" = "$ORIG_SHA" ] || die "backup of $MOD failed"
ok "C module sha256 $ORIG_SHA (backup: $BACKUP)"

# ---- leave the machine as found ---------------------------------------------------------------
INSTALL_T0=""
cleanup() {
  local rc=$? st
  trap - EXIT INT TERM
  set +e
  st="$(pkg_status)"
  if [ -n "$st" ] && [ "$st" != un ] && [ "$st" != pn ]; then
    echo "deb_test: cleanup: $PKG still on the machine ($st): removing it" >&2
    dpkg -r "$PKG" >&2; dpkg -P "$PKG" >&2
  fi
  if [ -n "$(diverter)" ]; then
    echo "deb_test: cleanup: removing the diversion of $MOD" >&2
    dpkg-divert --package "$PKG" --rename --divert "$ORIG" --remove "$MOD" >&2
  fi
  if [ ! -f "$MOD" ] || [ "$(sha "$MOD")" != "$ORIG_SHA" ]; then
    echo "deb_test: cleanup: restoring the C module from $BACKUP" >&2
    cp -p "$BACKUP" "$MOD.deb-test.tmp" && mv -f "$MOD.deb-test.tmp" "$MOD"
  fi
  if [ -f "$ORIG" ] && [ "$(sha "$ORIG")" = "$ORIG_SHA" ]; then rm -f "$ORIG"; fi
  if [ "$(sha "$MOD")" = "$ORIG_SHA" ] && [ -z "$(diverter)" ] && [ ! -e "$ORIG" ]; then
    rm -f "$BACKUP"
    echo "deb_test: machine as found: $MOD sha256 $ORIG_SHA (the C module), no diversion, $PKG not installed"
  else
    echo "deb_test: ERROR: could not restore $MOD (C module backup: $BACKUP)" >&2
    rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# which processes, other than ours, map a given dispatcher.so path right now
mappers() {
  local p out=""
  for p in /proc/[0-9]*; do
    grep -q -F "$1" "$p/maps" 2>/dev/null && out+="${p#/proc/} "
  done
  printf '%s' "$out"
}
installed_checks() {
  check "dpkg: $PKG $VERSION installed" eq "$(dpkg-query -W -f='${db:Status-Abbrev}${Version}' "$PKG")" "ii $VERSION"
  check "diversion: $MOD → $ORIG by $PKG" \
    eq "$(dpkg-divert --list "$MOD")" "diversion of $MOD to $ORIG by $PKG"
  check "$MOD is our build (sha256 $SO_SHA)" eq "$(sha "$MOD")" "$SO_SHA"
  check "$ORIG is the C module (sha256 $ORIG_SHA)" eq "$(sha "$ORIG")" "$ORIG_SHA"
  check "dpkg -S: $MOD belongs to $PKG" \
    eval 'dpkg-query -S "$MOD" | grep -v "^diversion " | grep -q -E "(^|, )$PKG(, .*)?: $MOD\$"'
}

echo
echo "== install (dpkg -i) =="
INSTALL_T0=$(date +%s.%N)
dpkg -i "$DEB" 2>&1 | sed 's/^/  | /'
installed_checks
echo "-- again (reinstall: preinst upgrade, idempotent) --"
dpkg -i "$DEB" 2>&1 | sed 's/^/  | /'
installed_checks
[ "$FAILS" -eq 0 ] || die "FAILED after install"

echo
echo "== demo with the installed module (DS_TEST_MODULE=installed: -L $MODDIR, loadmodule \"dispatcher.so\") =="
demo() { # demo <kind> <calls> <expected sha> <label>
  KAMAILIO_BIN="$DEB_KAMAILIO" KAMCMD_BIN="$DEB_KAMCMD" KAMAILIO_MODULES="$MODDIR" \
  DS_TEST_MODULE="$1" DEMO_CALLS="$2" DEMO_RATE=40 \
  DEB_TEST_EXPECT_SHA="$3" DEB_TEST_EXPECT_LABEL="$4" DEMO_ON_READY="$(printf '%q' "$SELF") --on-ready" \
    "$ROOT/tests/demo.sh" > "$WORK/demo-$1.log" 2>&1 9>&-
}
if demo installed "${DEB_TEST_CALLS:-80}" "$SO_SHA" "our build"; then
  ok "$(grep -m1 '^demo: OK' "$WORK/demo-installed.log")"
else
  bad "demo with the installed package failed (log: $WORK/demo-installed.log)"
fi
grep -E '^check:|^  backend|^  sipp client' "$WORK/demo-installed.log" | sed 's/^/       /' || true
[ "$FAILS" -eq 0 ] || { tail -n 30 "$WORK/demo-installed.log" >&2; die "FAILED with the package installed"; }

echo
echo "== remove (dpkg -r) =="
dpkg -r "$PKG" 2>&1 | sed 's/^/  | /'
st="$(pkg_status)"
if [ -n "$st" ] && [ "$st" != un ] && [ "$st" != pn ]; then
  echo "  ($PKG left in state '$st': purging; the postrm runs again, idempotent)"
  dpkg -P "$PKG" 2>&1 | sed 's/^/  | /'
fi
INSTALL_T1=$(date +%s.%N)
check "$PKG not installed" eval 'st="$(pkg_status)"; [ -z "$st" ] || [ "$st" = un ] || [ "$st" = pn ]'
check "no diversion of $MOD" eq "$(diverter)" ""
check "$ORIG gone" eval '[ ! -e "$ORIG" ]'
check "$MOD is the C module again (sha256 $ORIG_SHA)" eq "$(sha "$MOD")" "$ORIG_SHA"
check "dpkg -S: $MOD belongs to kamailio" eval 'dpkg-query -S "$MOD" | grep -q -x "kamailio: $MOD"'
check "dpkg -V kamailio: dispatcher.so unchanged" eval '! dpkg -V kamailio 2>&1 | grep -q -F "$MOD"'
echo "  (install window: $(awk -v a="$INSTALL_T0" -v b="$INSTALL_T1" 'BEGIN { printf "%.1f", b - a }') s)"
others="$(mappers "$MOD (deleted)")"
if [ -n "$others" ]; then
  echo "  WARNING: processes started by others during the install window still map the package's" \
       "(now deleted) dispatcher.so: pids $others" >&2
fi

echo
echo "== the C module is back =="
if "$DEB_KAMAILIO" -c -f "$CFG" -L "$MODDIR" -A LISTEN_PORT=5060 \
     -A "DS_LIST_FILE=\"$ROOT/cfg-examples/dispatcher.list\"" > "$WORK/kamailio-c.log" 2>&1 9>&-; then
  ok "kamailio -c -f $(basename "$CFG") -L $MODDIR: config accepted"
else
  bad "kamailio -c with the C module failed (log: $WORK/kamailio-c.log)"
fi
if demo c "${DEB_TEST_C_CALLS:-30}" "$ORIG_SHA" "the C module"; then
  ok "$(grep -m1 '^demo: OK' "$WORK/demo-c.log")"
else
  bad "demo with the C module failed (log: $WORK/demo-c.log)"
fi
grep -E '^check:' "$WORK/demo-c.log" | sed 's/^/       /' || true

echo
if [ "$FAILS" -ne 0 ]; then die "FAILED: $FAILS check(s)"; fi
echo "deb_test: PASS: $PKG $VERSION installs over the C module, is the dispatcher.so Kamailio loads, and removes cleanly"
