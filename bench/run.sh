#!/usr/bin/env bash
# Benchmarks (`make bench`): the Rust dispatcher module against Debian's C module in the
# same Kamailio 5.6.3 binary (-x tlsf), same cfg, same run. Prints one Markdown table per
# benchmark and writes them all to bench/results.md. Benchmarks never fail on a ratio;
# the exit code is non-zero only if the harness itself could not run.
#
#   bench/run.sh                       # all: select, ping, lists (~6 min on 2 cores)
#   BENCH=select bench/run.sh          # a subset: select | ping | lists (comma separated)
#   BENCH_REPS=1 BENCH=lists bench/run.sh
#   DS_RUST_MODULE=/path/dispatcher.so bench/run.sh
#
# More knobs (K, sizes, windows, reload count): see the top of bench/bench.py.
# Loopback only (127.0.0.0/8), random free ports; every process started here is stopped
# by PID on exit (the driver stops its own children; the trap below stops whatever a
# killed driver left behind, by the PIDs it recorded).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
command -v "$PY" > /dev/null || { echo "bench: python3 not found" >&2; exit 2; }

DRIVER_PID=""
cleanup() {
  local rc=$? pidfile pid name
  trap - EXIT INT TERM HUP
  if [ -n "$DRIVER_PID" ] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    kill -TERM "$DRIVER_PID" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$DRIVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DRIVER_PID" 2>/dev/null
  fi
  [ -n "$DRIVER_PID" ] && wait "$DRIVER_PID" 2>/dev/null
  # processes the driver recorded (each leads its own process group) and may have left
  for pidfile in "$ROOT"/target/bench-run/*-"$DRIVER_PID"/pids; do
    [ -n "$DRIVER_PID" ] && [ -f "$pidfile" ] || continue
    while read -r pid name; do
      if kill -0 -- "-$pid" 2>/dev/null; then
        echo "bench: stopping leftover $name (pid $pid)" >&2
        kill -TERM -- "-$pid" 2>/dev/null
        sleep 1
        kill -KILL -- "-$pid" 2>/dev/null
      fi
    done < "$pidfile"
  done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

"$PY" "$ROOT/bench/bench.py" run --out "$ROOT/bench/results.md" "$@" &
DRIVER_PID=$!
wait "$DRIVER_PID"
