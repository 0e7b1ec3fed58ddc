#!/usr/bin/env bash
# tools/repeat_tests.sh - runs the whole suite N times in a row (optionally with both
# cores busy) and prints one line per run with what failed: how flaky tests are found.
#
#   tools/repeat_tests.sh [--build DIR] [--runs N] [--stress]
#
# --stress keeps `stress -c <cores>` running during each run (Debian's stress package).
# Each run's log is kept in DIR/repeat-logs/run-K.log.
set -uo pipefail
cd "$(dirname "$0")/.."
build=build
runs=20
stress=0
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --stress) stress=1; shift ;;
    *) echo "usage: $0 [--build DIR] [--runs N] [--stress]" >&2; exit 2 ;;
    esac
done
mkdir -p "$build/repeat-logs"
passed=0
for k in $(seq "$runs"); do
    hog=
    if [ $stress = 1 ]; then
        stress -c "$(nproc)" >/dev/null 2>&1 &
        hog=$!
    fi
    log=$build/repeat-logs/run-$k.log
    meson test -C "$build" --num-processes 2 --print-errorlogs >"$log" 2>&1
    rc=$?
    [ -n "$hog" ] && { kill "$hog"; pkill -P "$hog" 2>/dev/null; wait "$hog" 2>/dev/null; }
    [ $rc = 0 ] && passed=$((passed + 1))
    echo "run $k: $([ $rc = 0 ] && echo ok || echo FAILED) $(grep -E '^ *[0-9]+/[0-9]+ .*(FAIL|TIMEOUT)' "$log" | awk '{print $4}' | tr '\n' ' ')"
done
echo "$passed of $runs runs passed$([ $stress = 1 ] && echo ' (under stress)')"
[ "$passed" = "$runs" ]
