#!/bin/sh
# test_unit.sh - checks the generated systemd unit: `systemd-analyze verify` and the
# offline security exposure score (must be <= MAX_EXPOSURE).
#
# Usage: test_unit.sh verify|security UNIT-FILE
# Exits 77 (skip) when systemd-analyze is not installed (Debian package systemd).
set -u
mode=$1
unit=$2
MAX_EXPOSURE=2.0

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd-analyze not found: skipping"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The unit's name is what systemd-analyze reports; use the installed name.
cp "$unit" "$tmp/triaged.service"

case $mode in
verify)
    # Fails on a missing or non-executable ExecStart binary; unknown keys and other
    # warnings only print, so any output counts as a failure too.
    out=$(systemd-analyze verify --man=no "$tmp/triaged.service" 2>&1)
    rc=$?
    echo "systemd-analyze verify: exit $rc"
    [ -n "$out" ] && echo "$out"
    [ $rc -eq 0 ] && [ -z "$out" ] || exit 1
    echo "OK: no warnings"
    ;;
security)
    out=$(systemd-analyze security --offline=yes "$tmp/triaged.service" 2>&1)
    rc=$?
    # Print what is still exposed (the lines marked with a cross), then the verdict.
    echo "$out" | grep '✗' || true
    line=$(echo "$out" | grep 'Overall exposure level')
    echo "${line:-no exposure line (exit $rc)}"
    score=$(echo "$line" | sed -n 's/.*: \([0-9][0-9.]*\).*/\1/p')
    [ -n "$score" ] || exit 1
    if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'; then
        echo "OK: exposure $score <= $MAX_EXPOSURE"
    else
        echo "FAIL: exposure $score > $MAX_EXPOSURE"
        exit 1
    fi
    ;;
*)
    echo "usage: $0 verify|security UNIT-FILE" >&2
    exit 2
    ;;
esac
