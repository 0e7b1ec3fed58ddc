#!/usr/bin/env bash
# bench/proxy/ab.sh - is one build's proxy path cheaper or dearer than another's?
# Runs three single-worker triaged processes against one mock backend: A (the base
# build), B (the build under test) and A' (a second A, the noise yardstick), with the
# same config (threshold routing, no cascade, outcome log on). Each repetition loads
# every process in turn with the same wrk load, in an order that rotates through all
# six permutations so drift hits all three alike, and reads each process's CPU time
# from /proc. Per load it prints the median CPU µs per request of each, and the
# per-repetition ratios B/A and A'/A (median, min-max): B differs from A beyond noise
# when its ratios fall outside the spread A' shows against its own twin.
#
#   bench/proxy/ab.sh --base BUILD_A --new BUILD_B [--duration S] [--reps N]
#
# Builds are release build folders (meson --buildtype=release). The processes under
# test are pinned to core 0; wrk and the mock share core 1. Needs: wrk, taskset.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

duration=3
reps=6
base=
new=
while [ $# -gt 0 ]; do
    case $1 in
    --base) base=$2; shift 2 ;;
    --new) new=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "ab.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
if [ -z "$base" ] || [ -z "$new" ]; then
    echo "ab.sh: --base BUILD and --new BUILD are both needed" >&2
    exit 2
fi
for b in "$base" "$new"; do
    [ -x "$b/daemon/triaged" ] || { echo "ab.sh: no $b/daemon/triaged" >&2; exit 1; }
done
for tool in wrk taskset; do
    command -v "$tool" >/dev/null || { echo "ab.sh: $tool is not installed" >&2; exit 1; }
done

. "$root/bench/lib.sh"
bench_setup ab

mock=$(free_port)
taskset -c "$core_load" "$new/tests/mock/mockllm" --port "$mock" --chunks 16 \
    >"$dir/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock"

declare -A port tpid
start() { # NAME BUILD
    local p; p=$(free_port)
    mkdir -p "$dir/$1"
    triaged_conf "$p" "$mock" 1 info "$dir/$1/triage.db" >"$dir/$1/triage.conf"
    taskset -c "$core_test" "$2/daemon/triaged" --config "$dir/$1/triage.conf" \
        2>"$dir/$1/stderr.log" &
    pids+=($!)
    tpid[$1]=$!
    port[$1]=$p
    wait_port "$p"
}
start A "$base"
start B "$new"
start A2 "$base"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
results="$dir/results.tsv"
: >"$results"

run() { # NAME KIND CONNS REP
    local stream=0; [ "$2" = sse ] && stream=1
    local t0 t1 out reqs
    t0=$(ticks "${tpid[$1]}")
    out=$(STREAM=$stream taskset -c "$core_load" wrk -t1 -c"$3" -d"${duration}s" \
        -s "$here/post.lua" "http://127.0.0.1:${port[$1]}/v1/chat/completions" 2>&1)
    t1=$(ticks "${tpid[$1]}")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then
        echo "ab.sh: $1 $2 c$3 had errors:" >&2
        echo "$out" >&2
        exit 1
    fi
    awk -v n="$1" -v k="$2 c$3" -v r="$4" -v d=$((t1 - t0)) -v hz="$hz" -v q="$reqs" \
        'BEGIN { printf "%s\t%s\t%s\t%.2f\n", n, k, r, d / hz * 1e6 / q }' >>"$results"
    printf '  %-2s %-8s rep %s: %s requests, %s us/req\n' "$1" "$2 c$3" "$4" "$reqs" \
        "$(tail -1 "$results" | cut -f4)" >&2
}

perms=("A B A2" "B A2 A" "A2 A B" "A A2 B" "B A A2" "A2 B A")
# warm every process (allocator, connection pools, SQLite pages) before measuring
for n in A B A2; do
    STREAM=0 taskset -c "$core_load" wrk -t1 -c8 -d1s -s "$here/post.lua" \
        "http://127.0.0.1:${port[$n]}/v1/chat/completions" >/dev/null 2>&1
done
for rep in $(seq "$reps"); do
    for load in "json 1" "json 50" "sse 50"; do
        set -- $load
        for n in ${perms[$(((rep - 1) % 6))]}; do run "$n" "$1" "$2" "$rep"; done
    done
done

echo
echo "triage proxy A/B — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, ${duration}s x $reps reps"
echo "A = $base ($(git -C "$base/.." rev-parse --short HEAD 2>/dev/null || echo '?'))," \
    "B = $new ($(git -C "$new/.." rev-parse --short HEAD 2>/dev/null || echo '?'))"
echo
awk -F'\t' '
function sort(a, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
}
function med(a, n) { sort(a, n); return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
{ cpu[$1, $2, $3] = $4; if (!($2 in seen)) { seen[$2] = 1; loads[++nl] = $2 } if ($3 > nr) nr = $3 }
END {
    print "| load | A µs/req | B µs/req | A\x27 µs/req | B/A median (min-max) | A\x27/A median (min-max) |"
    print "|---|---:|---:|---:|---:|---:|"
    for (l = 1; l <= nl; l++) {
        k = loads[l]
        for (r = 1; r <= nr; r++) {
            a[r] = cpu["A", k, r]; b[r] = cpu["B", k, r]; c[r] = cpu["A2", k, r]
            rb[r] = b[r] / a[r]; rc[r] = c[r] / a[r]
        }
        ma = med(a, nr); mb = med(b, nr); mc = med(c, nr)
        mrb = med(rb, nr); mrc = med(rc, nr)
        printf "| %s | %.1f | %.1f | %.1f | %.3f (%.3f-%.3f) | %.3f (%.3f-%.3f) |\n",
            k, ma, mb, mc, mrb, rb[1], rb[nr], mrc, rc[1], rc[nr]
    }
}' "$results"
