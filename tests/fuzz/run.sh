#!/usr/bin/env bash
# run.sh - build the libFuzzer targets with clang and fuzz each for N seconds; fails on
# any crash, sanitizer report, leak or timeout.
#
# usage: tests/fuzz/run.sh [SECONDS-PER-TARGET (60)] [TARGET...]   e.g. run.sh 300 conf
# env:   FUZZ_BUILD_DIR (build-fuzz)
# New interesting inputs go to $FUZZ_BUILD_DIR/fuzz-work/<target>/ (the checked-in
# seed corpus is only read); crashing inputs to $FUZZ_BUILD_DIR/fuzz-artifacts/<target>/.
# To keep a finding as a regression seed, copy it into tests/fuzz/corpus/<target>/.
set -uo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-60}
shift || true
dir=${FUZZ_BUILD_DIR:-build-fuzz}

if [ ! -f "$dir/build.ninja" ]; then
    # fuzzer-no-link gives every library coverage instrumentation; the targets
    # themselves are linked with -fsanitize=fuzzer by tests/fuzz/meson.build.
    CC=clang meson setup "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
        -Dc_args=-fsanitize=fuzzer-no-link -Dbuildtype=debugoptimized >"$dir-setup.log" 2>&1 \
        || { cat "$dir-setup.log"; rm -f "$dir-setup.log"; echo "fuzz: meson setup failed"; exit 1; }
    mv "$dir-setup.log" "$dir/fuzz-setup.log"
fi
if [ $# -eq 0 ]; then
    set -- $(sed -n "s/^  '\([a-z_]*\)' : .*/\1/p" tests/fuzz/meson.build)
    for f in tests/fuzz/fuzz_features.c tests/fuzz/fuzz_model.c; do
        [ -f "$f" ] && { t=${f##*/fuzz_}; set -- "$@" "${t%.c}"; }
    done
fi
targets=()
for t in "$@"; do targets+=("tests/fuzz/fuzz_$t"); done
# fuzz_http runs its backend, tests/mock's mockllm, as a child process
for t in "$@"; do [ "$t" = http ] && targets+=("tests/mock/mockllm"); done
ninja -C "$dir" "${targets[@]}" >"$dir/fuzz-build.log" 2>&1 \
    || { tail -n 40 "$dir/fuzz-build.log"; echo "fuzz: build failed"; exit 1; }

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
failed=0
for t in "$@"; do
    exe="$dir/tests/fuzz/fuzz_$t"
    work="$dir/fuzz-work/$t"
    art="$dir/fuzz-artifacts/$t/"
    mkdir -p "$work" "$art"
    seeds=()
    [ -d "tests/fuzz/corpus/$t" ] && seeds=("tests/fuzz/corpus/$t")
    dict=()
    [ -f "tests/fuzz/$t.dict" ] && dict=("-dict=tests/fuzz/$t.dict")
    log="$dir/fuzz-$t.log"
    "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$art" "${dict[@]}" "$work" "${seeds[@]}" \
        >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    if [ $rc -eq 0 ]; then
        echo "fuzz $t: ok, ${execs:-?} runs in ${secs}s, ${cov:-cov: ?}, corpus $(ls "$work" | wc -l)"
    else
        failed=$((failed + 1))
        echo "fuzz $t: FAILED (exit $rc) after ${execs:-?} runs; log $log, input in $art"
        grep -m 5 -E 'ERROR|SUMMARY|runtime error' "$log"
    fi
done
[ $failed -eq 0 ]
