#!/usr/bin/env bash
# `make alloc-check`: the integration suite once more with Kamailio's debugging shm allocator
# (DS_ALLOC_CHECK=1: `-x qm`, `mem_safety` 1 so that a double free is logged instead of
# aborting, `mem_summary` 2 so that every shm block still in use is dumped at shutdown, after
# the modules' destroy functions). Fails on any double free, free of a bad pointer or
# overwritten fragment border, and on any shm block allocated by this module (through its C
# shim) that is still held at shutdown. Findings: target/alloc-check/findings.txt.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
F="$ROOT/target/alloc-check/findings.txt"
rm -rf "$ROOT/target/alloc-check"
mkdir -p "$ROOT/target/alloc-check"
# the storm's timing is not the point here; keep it short
DS_ALLOC_CHECK=1 DS_STORM_SECS="${DS_STORM_SECS:-15}" DS_STORM_RATE="${DS_STORM_RATE:-150}" \
  make -s integration ${KAMAILIO_PREFIX:+KAMAILIO_PREFIX="$KAMAILIO_PREFIX"} > "$ROOT/target/alloc-check/tests.log" 2>&1
rc=$?
grep -E "^test result:" "$ROOT/target/alloc-check/tests.log" | sed 's/^/alloc-check: /'
runs=$(grep -c '^== ' "$F" 2>/dev/null || true)
dumps=$(grep -c '^== .*(shutdown dump: yes)' "$F" 2>/dev/null || true)
errors=$(grep -c '^allocator error' "$F" 2>/dev/null || true)
held=$(grep -c '^held at shutdown' "$F" 2>/dev/null || true)
echo "alloc-check: $runs Kamailio runs, $dumps with a shutdown dump of the shm blocks in use"
echo "alloc-check: allocator errors (double free, bad pointer, overwritten): $errors"
echo "alloc-check: shm blocks of the module still held at shutdown: $held"
if [ "$errors" != 0 ] || [ "$held" != 0 ]; then
  grep -E '^(==|allocator error|held at shutdown)' "$F" | grep -B1 -E '^(allocator error|held)' | head -40
fi
if [ $rc != 0 ]; then echo "alloc-check: the integration tests failed under -x qm (see target/alloc-check/tests.log)"; fi
[ $rc = 0 ] && [ "$errors" = 0 ] && [ "$held" = 0 ] && [ "$dumps" -gt 0 ]
