#!/usr/bin/env bash
# `make test-matrix`: the whole test suite for every supported Kamailio.
#
#   tests/matrix.sh                          # 5.6.3 (Debian's package), 5.8.8, 6.0.7, 6.1.4
#   DS_MATRIX="6.0.7 6.1.4" tests/matrix.sh  # a subset
#
# For each version: builds that Kamailio (`make kamailio`, idempotent; Debian's 5.6.3 comes
# from apt), builds the module for it (`make build KAMAILIO_PREFIX=...`), then runs every suite
# of `make test` one by one (unit, postbuild, each tests/it_*.rs) so that the table can say
# which suite failed. The integration tests compare against that version's own C dispatcher.
# Prints a version x suite table (passed/failed counts) and writes it to
# target/matrix/results.md; exits non-zero if any suite failed.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export PATH="$HOME/.cargo/bin:$PATH"
DEBIAN_VER="$(/usr/sbin/kamailio -V 2>/dev/null | sed -n 's/^version: kamailio \([0-9.]*\) .*/\1/p')"
VERSIONS="${DS_MATRIX:-$DEBIAN_VER 5.8.8 6.0.7 6.1.4}"
SUITES="build unit postbuild $(for f in tests/it_*.rs; do basename "$f" .rs; done | tr '\n' ' ')"
OUT="$ROOT/target/matrix"
mkdir -p "$OUT"
declare -A RES TIME
total_pass=0; total_fail=0

# "N passed" / "N failed" of a cargo test log (summed over its "test result:" lines)
cargo_counts() {
  awk '/^test result:/ { for (i=1;i<=NF;i++) { if ($(i)=="passed;") p+=$(i-1); if ($(i)=="failed;") f+=$(i-1) } }
       END { printf "%d %d\n", p+0, f+0 }' "$1"
}

for v in $VERSIONS; do
  if [ "$v" = "$DEBIAN_VER" ]; then
    prefix=""; label="$v (Debian)"
  else
    prefix="/opt/kamailio-$v"
    flav="$(awk -v v="$v" '$1==v {print $2}' kamailio-headers/versions.txt)"
    label="$v ($flav)"
    t0=$(date +%s)
    if ! make -s kamailio KAMAILIO_VERSION="$v" > "$OUT/kamailio-$v.log" 2>&1; then
      echo "matrix: building Kamailio $v failed (see $OUT/kamailio-$v.log)"; tail -20 "$OUT/kamailio-$v.log"
      for s in $SUITES; do RES["$v,$s"]="not run"; done
      RES["$v,build"]="Kamailio build failed"; total_fail=$((total_fail+1))
      continue
    fi
    TIME["$v,kamailio"]=$(( $(date +%s) - t0 ))
  fi
  echo "=== matrix: Kamailio $label ==="
  mk=(make -s KAMAILIO_PREFIX="$prefix")
  for s in $SUITES; do
    log="$OUT/$v-$s.log"
    t0=$(date +%s)
    case "$s" in
      build)    "${mk[@]}" build > "$log" 2>&1 ;;
      unit)     "${mk[@]}" unit > "$log" 2>&1 ;;
      postbuild) "${mk[@]}" postbuild > "$log" 2>&1 ;;
      *)        "${mk[@]}" integration IT_TESTS="--test $s" > "$log" 2>&1 ;;
    esac
    rc=$?
    TIME["$v,$s"]=$(( $(date +%s) - t0 ))
    case "$s" in
      build|postbuild)
        if [ $rc = 0 ]; then RES["$v,$s"]="ok"; total_pass=$((total_pass+1))
        else RES["$v,$s"]="FAILED"; total_fail=$((total_fail+1)); fi ;;
      *)
        read -r p f < <(cargo_counts "$log")
        if [ $rc = 0 ] && [ "$f" = 0 ] && [ "$p" -gt 0 ]; then RES["$v,$s"]="$p passed"
        else RES["$v,$s"]="$p passed, $f failed (rc $rc)"; fi
        total_pass=$((total_pass+p)); total_fail=$((total_fail+f))
        [ $rc != 0 ] && [ "$f" = 0 ] && total_fail=$((total_fail+1)) ;;
    esac
    printf 'matrix: %-8s %-10s %-28s %4ss\n' "$v" "$s" "${RES["$v,$s"]}" "${TIME["$v,$s"]}"
    if [ $rc != 0 ]; then
      grep -E "^(test .* FAILED|failures:|---- )|panicked at|FAIL" "$log" | head -20 | sed 's/^/    /'
      [ "$s" = build ] && { tail -15 "$log"; for t in $SUITES; do [ -z "${RES["$v,$t"]:-}" ] && RES["$v,$t"]="not run"; done; break; }
    fi
  done
done

{
  printf '| suite |'; for v in $VERSIONS; do printf ' %s |' "$v"; done; echo
  printf '|---|'; for v in $VERSIONS; do printf -- '---|'; done; echo
  for s in $SUITES; do
    printf '| %s |' "$s"
    for v in $VERSIONS; do printf ' %s (%ss) |' "${RES["$v,$s"]:-not run}" "${TIME["$v,$s"]:-0}"; done
    echo
  done
  printf '| Kamailio build |'; for v in $VERSIONS; do
    if [ "$v" = "$DEBIAN_VER" ]; then printf ' apt package |'; else printf ' %ss |' "${TIME["$v,kamailio"]:-?}"; fi; done; echo
} > "$OUT/results.md"
echo
cat "$OUT/results.md"
echo
echo "matrix: $total_pass passed, $total_fail failed"
[ "$total_fail" = 0 ]
