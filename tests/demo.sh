#!/usr/bin/env bash
# The main job (`make demo`): Kamailio with the dispatcher module and
# cfg-examples/round-robin-failover.cfg in front of three SIPp backends, 300 calls from
# a SIPp client, then the per-backend distribution and `kamcmd dispatcher.list`.
#
#   tests/demo.sh                      # the Rust module (target/release/dispatcher.so)
#   DS_TEST_MODULE=c tests/demo.sh     # Debian's C module, for comparison
#   DS_TEST_MODULE=installed tests/demo.sh   # whatever dispatcher.so the module dir holds
#                                      # (e.g. the .deb's), -L <moddir> with no override
#   DEMO_ON_READY='cmd' tests/demo.sh  # run `sh -c cmd` once Kamailio is up (env DEMO_KAMAILIO_PID,
#                                      # DEMO_CTL, DEMO_RUN); the demo fails if it fails
#   DS_RUST_MODULE=/path/dispatcher.so tests/demo.sh
#   DEMO_CALLS=300 DEMO_RATE=50 tests/demo.sh
#
# Everything runs on 127.0.0.1 with free ports; every process started here is stopped by
# PID on exit (also on failure or Ctrl-C). Exits non-zero if any call failed.
# The run dir (logs, list, SIPp traces) is kept: target/it-run/demo-<pid>/.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
KAMAILIO="${KAMAILIO_BIN:-/usr/sbin/kamailio}"
KAMCMD="${KAMCMD_BIN:-/usr/sbin/kamcmd}"
SIPP="${SIPP_BIN:-/usr/bin/sipp}"
MODDIR="${KAMAILIO_MODULES:-/usr/lib/x86_64-linux-gnu/kamailio/modules}"
CFG="$ROOT/cfg-examples/round-robin-failover.cfg"
CALLS="${DEMO_CALLS:-300}"
RATE="${DEMO_RATE:-50}"
KIND="$(printf '%s' "${DS_TEST_MODULE:-rust}" | tr 'A-Z' 'a-z')"

case "$KIND" in
  c|installed) SO="$MODDIR/dispatcher.so" ;;
  rust|rs|"") KIND=rust; SO="${DS_RUST_MODULE:-$ROOT/target/release/dispatcher.so}" ;;
  *) echo "demo: DS_TEST_MODULE=$KIND: expected rust, c or installed" >&2; exit 2 ;;
esac
case "$SO" in /*) ;; *) SO="$ROOT/$SO" ;; esac
if [ ! -f "$SO" ]; then
  echo "demo: the $KIND dispatcher module $SO does not exist: build it with \`make\`" >&2
  exit 1
fi
for b in "$KAMAILIO" "$KAMCMD" "$SIPP"; do
  [ -x "$b" ] || { echo "demo: $b not found (run \`make setup\`)" >&2; exit 1; }
done

RUN="$ROOT/target/it-run/demo-$$"
rm -rf "$RUN"
mkdir -p "$RUN"
CTL="$RUN/kamailio_ctl"
if [ "${#CTL}" -gt 100 ]; then CTL="/tmp/ds-demo-$$.ctl"; fi

# ---------------------------------------------------------------------------------------
# process tracking: every PID we start, stopped in reverse order on exit
# ---------------------------------------------------------------------------------------
PIDS=()
stop_pid() {
  local pid="$1" i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "demo: pid $pid ignored SIGTERM, sending SIGKILL" >&2
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  # leftovers of its process group (Kamailio's children)
  for i in $(seq 1 20); do
    kill -0 -- "-$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$? i
  trap - EXIT INT TERM
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    stop_pid "${PIDS[$i]}"
  done
  [ "$CTL" != "$RUN/kamailio_ctl" ] && rm -f "$CTL"
  [ -n "${MODTMP:-}" ] && rm -rf "$MODTMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start "$@" in its own process group (so its children can be found) and track it
start_bg() {
  local out="$1"; shift
  setsid "$@" > "$out" 2>&1 < /dev/null &
  PIDS+=("$!")
  LAST_PID=$!
}

# ---------------------------------------------------------------------------------------
# free ports (checked against /proc/net: no extra tools needed)
# ---------------------------------------------------------------------------------------
USED_PORTS=" "
port_in_use() {
  local hex
  hex=$(printf '%04X' "$1")
  awk -v h="$hex" 'NR>1 { split($2, a, ":"); if (toupper(a[2]) == h) { found=1 } } END { exit found ? 0 : 1 }' \
    /proc/net/udp /proc/net/udp6 /proc/net/tcp /proc/net/tcp6 2>/dev/null
}
# drawn below the kernel's ephemeral range, so that no bind(0) can take a chosen port
EPH_LO=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[ "$EPH_LO" -gt 12000 ] 2>/dev/null || EPH_LO=32768
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$(( 10000 + RANDOM % (EPH_LO - 10000) ))
    case "$USED_PORTS" in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return 0
    fi
  done
  echo "demo: no free port found" >&2
  return 1
}
wait_for() { # wait_for <seconds> <command...>
  local n=$(( $1 * 10 )); shift
  while [ "$n" -gt 0 ]; do
    if "$@"; then return 0; fi
    sleep 0.1
    n=$(( n - 1 ))
  done
  return 1
}

echo "demo: module under test: $KIND ($SO)"
echo "demo: run dir: $RUN"

# ---------------------------------------------------------------------------------------
# three SIPp backends
# ---------------------------------------------------------------------------------------
BACKEND_PORTS=()
for i in 1 2 3; do
  p=$(free_port); cp=$(free_port)
  BACKEND_PORTS+=("$p")
  start_bg "$RUN/backend$i.sipp.out" "$SIPP" -sf "$ROOT/tests/data/uas_200.xml" \
    -i 127.0.0.1 -bind_local -p "$p" -cp "$cp" -nostdin \
    -trace_msg -message_file "$RUN/backend$i.messages.log" \
    -trace_err -error_file "$RUN/backend$i.errors.log"
  if ! wait_for 10 port_in_use "$p"; then
    echo "demo: backend $i did not start on port $p:" >&2
    tail -n 20 "$RUN/backend$i.sipp.out" >&2
    exit 1
  fi
  echo "demo: backend $i: sipp UAS on 127.0.0.1:$p (pid $LAST_PID)"
done

LIST="$RUN/dispatcher.list"
{
  echo "# demo list written by tests/demo.sh: set 1 = the three sipp backends"
  for i in 1 2 3; do
    echo "1 sip:127.0.0.1:${BACKEND_PORTS[$((i-1))]} 0 0 duid=backend$i"
  done
} > "$LIST"

# ---------------------------------------------------------------------------------------
# Kamailio with the example config and the module under test
# ---------------------------------------------------------------------------------------
if [ "$KIND" = c ] || [ "$KIND" = installed ]; then
  MPATH="$MODDIR"
else
  # all of Debian's modules, with dispatcher.so replaced by ours
  MODTMP="$(mktemp -d /tmp/ds-demo-modules.XXXXXX)"
  for m in "$MODDIR"/*.so; do ln -s "$m" "$MODTMP/$(basename "$m")"; done
  ln -sfn "$SO" "$MODTMP/dispatcher.so"
  MPATH="$MODTMP"
fi

KPORT=$(free_port)
start_bg "$RUN/kamailio.log" "$KAMAILIO" -DD -E -f "$CFG" -w "$RUN" -P "$RUN/kamailio.pid" \
  -m 64 -M 8 -L "$MPATH" \
  -A "LISTEN_PORT=$KPORT" \
  -A "DS_LIST_FILE=\"$LIST\"" \
  -A "CTL_SOCKET=\"unix:$CTL\""
KPID=$LAST_PID
kam_ready() {
  [ -S "$CTL" ] && port_in_use "$KPORT" && "$KAMCMD" -s "unix:$CTL" dispatcher.list > /dev/null 2>&1
}
ready=0
for _ in $(seq 1 200); do
  if kam_ready; then ready=1; break; fi
  kill -0 "$KPID" 2>/dev/null || break
  sleep 0.1
done
if [ "$ready" != 1 ]; then
  echo "demo: kamailio did not start; log tail:" >&2
  tail -n 30 "$RUN/kamailio.log" >&2
  exit 1
fi
echo "demo: kamailio (pid $KPID) on udp:127.0.0.1:$KPORT with $CFG"
if [ -n "${DEMO_ON_READY:-}" ]; then
  DEMO_KAMAILIO_PID="$KPID" DEMO_CTL="$CTL" DEMO_RUN="$RUN" sh -c "$DEMO_ON_READY" \
    || { echo "demo: FAILED: DEMO_ON_READY command failed" >&2; exit 1; }
fi

# ---------------------------------------------------------------------------------------
# the calls
# ---------------------------------------------------------------------------------------
UPORT=$(free_port); UCPORT=$(free_port)
echo "demo: placing $CALLS calls at $RATE calls/s ..."
set +e
timeout $(( CALLS / RATE + 60 )) "$SIPP" -sf "$ROOT/tests/data/uac.xml" -s demo "127.0.0.1:$KPORT" \
  -i 127.0.0.1 -bind_local -p "$UPORT" -cp "$UCPORT" \
  -m "$CALLS" -r "$RATE" -l 200 -nostdin \
  -timeout "$(( CALLS / RATE + 45 ))s" -timeout_error \
  -trace_stat -stf "$RUN/uac.stat.csv" -fd 1 \
  -trace_err -error_file "$RUN/uac.errors.log" \
  > "$RUN/uac.sipp.out" 2>&1 < /dev/null
UAC_RC=$?
set -e

stat_col() { # stat_col <column name>: value in the last line of the SIPp stat CSV
  awk -F';' -v c="$1" 'NR==1 { for (i=1; i<=NF; i++) if ($i == c) col=i; next }
                       NF > 1 { v=$col } END { print (v == "" ? 0 : v) }' "$RUN/uac.stat.csv" 2>/dev/null || echo 0
}
OK=$(stat_col 'SuccessfulCall(C)')
FAILED=$(stat_col 'FailedCall(C)')
CREATED=$(stat_col 'TotalCallCreated')

# calls each backend received: distinct Call-IDs of the INVITEs in its message log
invites() {
  awk '/message received/ { getline; while ($0 ~ /^[[:space:]]*$/) getline; inv = ($1 == "INVITE"); next }
       inv && tolower($1) == "call-id:" { ids[$2] = 1; inv = 0 }
       END { n = 0; for (k in ids) n++; print n }' "$1" 2>/dev/null || echo 0
}
sleep 0.5
echo
echo "================ distribution (round-robin over set 1) ================"
TOTAL=0
for i in 1 2 3; do
  n=$(invites "$RUN/backend$i.messages.log")
  TOTAL=$(( TOTAL + n ))
  printf '  backend %d  sip:127.0.0.1:%-5s  %4d calls\n' "$i" "${BACKEND_PORTS[$((i-1))]}" "$n"
done
printf '  total received by backends:       %4d\n' "$TOTAL"
printf '  sipp client: %s created, %s successful, %s failed (exit code %s)\n' "$CREATED" "$OK" "$FAILED" "$UAC_RC"
echo
echo "================ kamcmd dispatcher.list ================"
"$KAMCMD" -s "unix:$CTL" dispatcher.list || true
echo

if [ "$UAC_RC" -ne 0 ] || [ "$FAILED" != 0 ] || [ "$OK" != "$CALLS" ]; then
  echo "demo: FAILED: $FAILED failed calls, $OK of $CALLS successful (sipp exit $UAC_RC); see $RUN" >&2
  tail -n 15 "$RUN/kamailio.log" >&2
  exit 1
fi
echo "demo: OK: $OK/$CALLS calls successful through the $KIND dispatcher module"
