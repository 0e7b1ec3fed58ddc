#!/bin/sh
# test_packages.sh - the package lists: ./run.sh installs .ci/packages-run (build and
# run only), .ci/run installs .ci/packages (that plus the test tools).
#
# Usage: test_packages.sh SOURCE-ROOT
set -u
root=$1
run_list="$root/.ci/packages-run"
ci_list="$root/.ci/packages"
fail=0
bad() { echo "FAIL: $*"; fail=1; }

[ -s "$run_list" ] || bad ".ci/packages-run is missing or empty"
[ -s "$ci_list" ] || bad ".ci/packages is missing or empty"

# CI installs everything a user's build needs: the run list is part of the CI list.
while read -r pkg; do
    [ -n "$pkg" ] || continue
    grep -qx "$pkg" "$ci_list" || bad "$pkg is in .ci/packages-run but not in .ci/packages"
done <"$run_list"

# Test tools stay off a user's machine.
for tool in chromium prometheus nginx wrk clang libcmocka-dev; do
    if grep -qx "$tool" "$run_list"; then bad "$tool (a test tool) is in .ci/packages-run"; fi
    grep -qx "$tool" "$ci_list" || bad "$tool is missing from .ci/packages"
done

# Every library meson.build requires has its -dev package in the run list.
for pair in libmicrohttpd:libmicrohttpd-dev libcurl:libcurl4-openssl-dev libuv:libuv1-dev \
    jansson:libjansson-dev sqlite3:libsqlite3-dev libcrypto:libssl-dev zlib:zlib1g-dev; do
    dep=${pair%%:*} pkg=${pair#*:}
    grep -q "dependency('$dep')" "$root/meson.build" || bad "meson.build no longer needs $dep: update this test"
    grep -qx "$pkg" "$run_list" || bad "$pkg (for $dep) is missing from .ci/packages-run"
done
# Optional libraries (meson feature options) are CI's, not a user's: the PostgreSQL
# store builds when libpq-dev is there and is not needed to run the SQLite default.
grep -q "dependency('libpq', required : get_option('postgresql'))" "$root/meson.build" \
    || bad "meson.build no longer makes libpq optional: update this test"
grep -qx libpq-dev "$run_list" && bad "libpq-dev (optional, [storage] url) is in .ci/packages-run"
grep -qx libpq-dev "$ci_list" || bad "libpq-dev is missing from .ci/packages (CI builds the PostgreSQL engine)"
grep -q -- '-Dpostgresql=enabled' "$root/.ci/run" || bad ".ci/run does not build with -Dpostgresql=enabled"
grep -q 'pkg-config --exists.*libpq' "$root/run.sh" && bad "run.sh still probes for libpq"
for pkg in meson ninja-build pkg-config build-essential; do
    grep -qx "$pkg" "$run_list" || bad "$pkg is missing from .ci/packages-run"
done

# Each entry point reads its own list.
grep -q 'cat .ci/packages-run' "$root/run.sh" || bad "run.sh does not install .ci/packages-run"
grep -q 'cat .ci/packages)' "$root/.ci/run" || bad ".ci/run does not install .ci/packages"

[ "$fail" = 0 ] && echo "package lists OK"
exit "$fail"
