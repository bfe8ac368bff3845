#!/usr/bin/env bash
# Post-build checks for the dispatcher module (run by `make test` after the build).
#
#   tests/postbuild.sh [path/to/dispatcher.so]     (default: target/release/dispatcher.so)
#
# (a) Every undefined dynamic symbol of the module must be provided at dlopen time:
#     defined by /usr/sbin/kamailio (linked -rdynamic) or by libc / libm / libgcc_s /
#     ld-linux / libsrdb1. Versioned GLIBC_* symbols count as libc, GCC_* as libgcc_s.
#     Kamailio dlopens modules with RTLD_NOW, so one missing symbol stops Kamailio.
# (b) `kamailio -c` accepts every cfg-examples/*.cfg (and the integration-test cfg
#     template) with this module loaded as `dispatcher.so`: a temp dir holds symlinks to all
#     of Debian's modules with dispatcher.so pointing at ours, and is passed with -L.
#     Note: `kamailio -c` parses the cfg, dlopens the modules and sets the modparams, but
#     does not run mod_init or the fixups, so list files are not read; the examples still
#     get DS_LIST_FILE=cfg-examples/dispatcher.list through -A.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SO="${1:-$ROOT/target/release/dispatcher.so}"
KAMAILIO="${KAMAILIO_BIN:-/usr/sbin/kamailio}"
MODDIR="${KAMAILIO_MODULES:-/usr/lib/x86_64-linux-gnu/kamailio/modules}"
LIBDIR=/lib/x86_64-linux-gnu
if [ -n "${KAMAILIO_PREFIX:-}" ]; then
  SRDB1="$(ls "$KAMAILIO_PREFIX"/lib64/kamailio/libsrdb1.so.1 "$KAMAILIO_PREFIX"/lib/kamailio/libsrdb1.so.1 2>/dev/null | head -n1 || true)"
else
  SRDB1="$(ls /usr/lib/x86_64-linux-gnu/kamailio/libsrdb1.so.1 2>/dev/null || true)"
fi

fail=0
case "$SO" in /*) ;; *) SO="$PWD/$SO" ;; esac
if [ ! -f "$SO" ]; then
  echo "postbuild: module $SO not found: build it with \`make\`" >&2
  exit 1
fi
for tool in nm "$KAMAILIO"; do
  command -v "$tool" >/dev/null 2>&1 || { echo "postbuild: $tool not found" >&2; exit 1; }
done

TMP="$(mktemp -d /tmp/ds-postbuild.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------------------------------
# (a) undefined symbols
# ---------------------------------------------------------------------------------------
echo "postbuild: (a) undefined dynamic symbols of $SO"
# names defined by the executable and by the allowed libraries (version suffix removed)
defined_in() { nm -D --defined-only "$1" 2>/dev/null | awk 'NF>=3 {print $3}' | sed 's/@.*//'; }
{
  defined_in "$KAMAILIO"
  for lib in "$LIBDIR/libc.so.6" "$LIBDIR/libm.so.6" "$LIBDIR/libgcc_s.so.1" \
             "$LIBDIR/ld-linux-x86-64.so.2" ${SRDB1:+"$SRDB1"}; do
    [ -e "$lib" ] && defined_in "$lib"
  done
} | sort -u > "$TMP/defined"

# strong undefined symbols of the module ("w"/"v" weak ones may stay unresolved)
nm -D --undefined-only "$SO" | awk '$1=="U" {print $2}' | sort -u > "$TMP/undef"
total=$(wc -l < "$TMP/undef")
: > "$TMP/offenders"
while IFS= read -r sym; do
  name="${sym%%@*}"
  case "$sym" in
    *@GLIBC_*|*@GCC_*) continue ;;   # versioned libc/libm/ld-linux/libgcc_s symbols
  esac
  if ! grep -qxF -- "$name" "$TMP/defined"; then
    echo "$sym" >> "$TMP/offenders"
  fi
done < "$TMP/undef"
if [ -s "$TMP/offenders" ]; then
  echo "postbuild: FAIL: $(wc -l < "$TMP/offenders") of $total undefined symbols are defined neither by $KAMAILIO nor by libc/libm/libgcc_s/ld-linux/libsrdb1:" >&2
  sed 's/^/    /' "$TMP/offenders" >&2
  fail=1
else
  echo "postbuild: ok: all $total undefined symbols resolve against kamailio or the allowed libraries"
fi

# the loader also insists on these exports
for sym in module_version module_flags exports; do
  if ! nm -D --defined-only "$SO" | awk '{print $3}' | grep -qx "$sym"; then
    echo "postbuild: FAIL: $SO does not export $sym" >&2
    fail=1
  fi
done

# ---------------------------------------------------------------------------------------
# (b) kamailio -c on the example configs, with our module as dispatcher.so
# ---------------------------------------------------------------------------------------
echo "postbuild: (b) kamailio -c with $SO as dispatcher.so"
mkdir "$TMP/modules"
for m in "$MODDIR"/*.so; do
  ln -s "$m" "$TMP/modules/$(basename "$m")"
done
ln -sfn "$SO" "$TMP/modules/dispatcher.so"
if [ "$(readlink -f "$TMP/modules/dispatcher.so")" != "$(readlink -f "$SO")" ]; then
  echo "postbuild: FAIL: could not point $TMP/modules/dispatcher.so at $SO" >&2
  exit 1
fi

check_cfg() {
  local cfg="$1"; shift
  local log="$TMP/check-$(basename "$cfg").log"
  if "$KAMAILIO" -c -f "$cfg" -L "$TMP/modules" "$@" > "$log" 2>&1 \
      && grep -q "config file ok" "$log"; then
    echo "postbuild: ok: $cfg"
  else
    echo "postbuild: FAIL: kamailio -c rejected $cfg:" >&2
    tail -n 25 "$log" | sed 's/^/    /' >&2
    fail=1
  fi
}

shopt -s nullglob
examples=("$ROOT"/cfg-examples/*.cfg)
if [ "${#examples[@]}" -eq 0 ]; then
  echo "postbuild: FAIL: no cfg-examples/*.cfg found" >&2
  fail=1
fi
for cfg in "${examples[@]}"; do
  check_cfg "$cfg" \
    -A "DS_LIST_FILE=\"$ROOT/cfg-examples/dispatcher.list\"" \
    -A "CTL_SOCKET=\"unix:$TMP/kamailio_ctl\""
done

# the integration-test template, rendered with dummy values
tmpl="$ROOT/tests/data/ds-test.cfg.tmpl"
if [ -f "$tmpl" ]; then
  sed -e 's/{{DEBUG}}/2/; s/{{CHILDREN}}/1/; s/{{PORT}}/5060/' \
      -e "s#{{DISPATCHER_SO}}#dispatcher.so#" \
      -e 's/{{FR_TIMER}}/1000/; s/{{FR_INV_TIMER}}/3000/' \
      -e "s#{{RUNDIR}}#$TMP#; s#{{LIST_FILE}}#$ROOT/cfg-examples/dispatcher.list#" \
      -e 's/{{EXTRA_PARAMS}}//' "$tmpl" > "$TMP/ds-test.cfg"
  check_cfg "$TMP/ds-test.cfg"
fi

if [ "$fail" -ne 0 ]; then
  echo "postbuild: FAILED" >&2
  exit 1
fi
echo "postbuild: all checks passed"
