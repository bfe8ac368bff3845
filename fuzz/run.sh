#!/usr/bin/env bash
# Coverage-guided fuzzing of the pure core with cargo-afl (AFL++), on the stable toolchain.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      (make fuzz FUZZ_SECONDS=N)
#
# Builds the targets (fuzz/fuzz_targets/*.rs) with AFL++ instrumentation, then runs each
# target ONE AT A TIME for SECONDS (default: $FUZZ_SECONDS, else 60) under `nice -n 19`,
# starting from the committed seed corpus fuzz/corpus/<target>/ with the token dictionary
# fuzz/dict/ds.dict. Prints executions, paths (corpus entries), edge coverage, crashes and
# hangs per target and exits non-zero when any target found a crash or a hang (the inputs
# are in fuzz/out/<target>/default/{crashes,hangs}/), or did not run.
#
# Environment: FUZZ_TARGET_DIR (cargo target dir, default fuzz/target), FUZZ_OUT (output dir,
# default fuzz/out), FUZZ_TIMEOUT_MS (per-execution hang threshold, default 1000).
set -euo pipefail

# everything in a function: bash reads it whole before running, so editing this file
# while a long run is going cannot derail the run
main() {
    local here secs all targets out_root timeout_ms failed summary
    here=$(cd "$(dirname "$0")" && pwd)
    secs=${1:-${FUZZ_SECONDS:-60}}
    [ $# -gt 0 ] && shift
    all=(listfile attrs uri dbrow rpcargs snapshot)
    targets=("$@")
    [ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
    case $secs in ''|*[!0-9]*) echo "fuzz/run.sh: SECONDS must be a number, got '$secs'" >&2; exit 2;; esac

    # the main crate builds as the pure core only (cfg no_kamailio) when kamailio cannot be run
    export KAMAILIO_BIN=/nonexistent/kamailio-for-fuzzing
    unset KAMAILIO_PREFIX DS_REQUIRE_KAMAILIO
    export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$here/target}
    out_root=${FUZZ_OUT:-$here/out}
    timeout_ms=${FUZZ_TIMEOUT_MS:-1000}

    # cargo-afl (from crates.io; its install also builds the AFL++ it ships)
    if ! cargo afl --version >/dev/null 2>&1; then
        echo "== installing cargo-afl"
        nice -n 19 cargo install cargo-afl --locked
    fi
    # builds AFL++ for this toolchain unless it is already built (then it only says so)
    nice -n 19 cargo afl config --build >/dev/null 2>&1 || true

    echo "== building the fuzz targets"
    (cd "$here" && nice -n 19 cargo afl build --release --quiet)

    failed=0
    summary=()
    for t in "${targets[@]}"; do
        bin=$CARGO_TARGET_DIR/release/$t
        [ -x "$bin" ] || { echo "fuzz/run.sh: unknown target '$t' (have: ${all[*]})" >&2; exit 2; }
        out=$out_root/$t
        rm -rf "$out"
        mkdir -p "$out"
        echo "== $t: ${secs}s"
        # AFL_NO_AFFINITY: do not pin a core (other jobs share the machine);
        # AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES: core_pattern may pipe to a crash handler
        set +e
        AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
        AFL_QUIET=1 AFL_SUPPRESS_OUTPUT=1 \
            nice -n 19 cargo afl fuzz -V "$secs" -t "$timeout_ms" -x "$here/dict/ds.dict" -i "$here/corpus/$t" -o "$out" -- "$bin" \
            > "$out/afl.log" 2>&1
        rc=$?
        set -e
        stats=$out/default/fuzzer_stats
        if [ ! -f "$stats" ]; then
            echo "   afl-fuzz did not start (exit $rc); last lines of $out/afl.log:" >&2
            tail -n 20 "$out/afl.log" >&2
            failed=1
            summary+=("$(printf '%-9s %s' "$t" "NOT RUN (afl-fuzz exit $rc)")")
            continue
        fi
        get() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$stats"; }
        execs=$(get execs_done); paths=$(get corpus_count); edges=$(get edges_found); cvg=$(get bitmap_cvg)
        crashes=$(get saved_crashes); hangs=$(get saved_hangs); eps=$(get execs_per_sec)
        crashes=${crashes:-$(get unique_crashes)}; hangs=${hangs:-$(get unique_hangs)}
        line=$(printf '%-9s execs %10s (%7s/s)  paths %5s  edges %5s/%s (map %s)  crashes %s  hangs %s' \
            "$t" "$execs" "$eps" "$paths" "$edges" "$(get total_edges)" "$cvg" "$crashes" "$hangs")
        echo "   $line"
        summary+=("$line")
        if [ "${crashes:-0}" != 0 ] || [ "${hangs:-0}" != 0 ]; then
            failed=1
            ls "$out/default/crashes" "$out/default/hangs" 2>/dev/null | sed 's/^/   /'
        fi
    done

    echo "== fuzz summary (${secs}s per target)"
    printf '%s\n' "${summary[@]}"
    if [ $failed -ne 0 ]; then
        echo "FUZZ FAILED: crashes, hangs or a target that did not run (see $out_root/<target>/)"
        exit 1
    fi
    echo "fuzz ok: no crash, no hang"
}

main "$@"
exit $?
