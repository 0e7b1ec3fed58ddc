#!/usr/bin/env bash
# bench/cascade/latency.sh - what the cascade costs in time: end-to-end latency (and, for
# streaming clients, time to first byte) of escalated requests and of the rest, against
# routing the same prompts without a cascade (policy threshold), with mock backends of
# fixed latency. Prints one markdown table of p50/p95 in ms per policy and class.
#
#   bench/cascade/latency.sh [--requests N] [--parallel P] [--threshold T] [--build DIR]
#
# Backends (two mockllm): fast answers after 20 ms + 10 pieces 5 ms apart (70 ms whole),
# strong after 100 ms + 10 pieces 20 ms apart (300 ms whole). Prompt i's answer is sure
# ("... The answer is N.", tokens at log-probability -0.05) for even i and unsure (hedged,
# self-correcting, at -2.5) for odd i, so the cascade's untrained default escalates about
# half; half the prompts are a sum, half a proof. policy cascade: every prompt in the band
# (cascade_low 0, cascade_high 1), escalate_at 0.5; policy threshold: the shipped model at
# the threshold given (--threshold, 0.65: between the two prompts' scores, 0.58 and 0.73).
# Each request is one curl (its own timers); P run at once.
# Needs curl and a release build (made in build-bench).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

n=200
par=2
thr=0.65
build="$root/build-bench"
while [ $# -gt 0 ]; do
    case $1 in
    --requests) n=$2; shift 2 ;;
    --parallel) par=$2; shift 2 ;;
    --threshold) thr=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "latency.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
command -v curl >/dev/null || { echo "latency.sh: curl is not installed" >&2; exit 1; }
if [ ! -d "$build" ]; then
    meson setup "$build" "$root" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" >/dev/null

. "$root/bench/lib.sh"
bench_setup cascade-latency

start_mock() { # PORT LATENCY_MS CHUNK_DELAY_MS
    "$build/tests/mock/mockllm" --port "$1" --latency-ms "$2" --chunks 10 \
        --chunk-delay-ms "$3" >"$dir/mock-$1.log" 2>&1 &
    pids+=($!)
    wait_port "$1"
}
fast=$(free_port); start_mock "$fast" 20 5
strong=$(free_port); start_mock "$strong" 100 20

start_triaged() { # NAME POLICY-LINES...
    local name=$1 port
    shift
    port=$(free_port)
    {
        printf '[server]\nlisten = 127.0.0.1\nport = %s\nworkers = 1\nlog_level = warn\n' "$port"
        printf '[router]\nmodel = %s/models/default.tmod\naliases = triage\n' "$root"
        printf 'tiers = fast, strong\n'
        for line in "$@"; do printf '%s\n' "$line"; done
        printf '[backend fast]\nurl = http://127.0.0.1:%s/v1\nmax_retries = 0\n' "$fast"
        printf 'price_input = 0.6\nprice_output = 0.6\n'
        printf '[backend strong]\nurl = http://127.0.0.1:%s/v1\n' "$strong"
        printf 'price_input = 10\nprice_output = 30\n'
    } >"$dir/$name.conf"
    "$build/daemon/triaged" --config "$dir/$name.conf" >"$dir/$name.log" 2>&1 &
    pids+=($!)
    wait_port "$port"
    echo "$port"
}

# one PORT I STREAM: one request; prints "backend escalated e2e_ms ttfb_ms".
one() {
    local port=$1 i=$2 stream=$3 content prompt lp
    if [ $((i % 2)) -eq 0 ]; then
        content="$i + 17 = $((i + 17)). The answer is $((i + 17))."
        lp=-0.05
    else
        content="Maybe $((i + 16)), I am not sure. Wait, actually perhaps it is $((i + 18))"
        lp=-2.5
    fi
    # two kinds of prompt, so that routing by score alone sends some to each tier
    if [ $((i % 4)) -lt 2 ]; then
        prompt="What is $i + 17?"
    else
        prompt="Prove that for every integer n > $i the sum of the first n odd numbers is n^2, by induction, and derive a closed form for the sum of their cubes."
    fi
    curl -s -o /dev/null -D - -H 'content-type: application/json' \
        -w 'T %{time_total} %{time_starttransfer}\n' \
        -d "{\"model\":\"triage\",\"stream\":$stream,\"messages\":[{\"role\":\"user\",\"content\":\"$prompt\"}],\"mock\":{\"content\":\"$content\",\"logprob\":$lp}}" \
        "http://127.0.0.1:$port/v1/chat/completions" |
        tr -d '\r' | awk '/^x-triage-backend:/ {b = $2} /^x-triage-escalated:/ {e = $2}
            /^T / {printf "%s %s %.1f %.1f\n", b, (e == "" ? "-" : e), $2 * 1000, $3 * 1000}'
}
export -f one

run() { # PORT STREAM OUT
    seq 0 $((n - 1)) | xargs -P "$par" -I{} bash -c "one $1 {} $2" >"$3"
}

# pct FILE COLUMN P: nearest-rank percentile of a column
pct() {
    local k
    k=$(wc -l <"$1")
    [ "$k" -eq 0 ] && { echo "-"; return; }
    sort -n -k "$2" "$1" | awk -v c="$2" -v r="$(( (k * $3 + 99) / 100 ))" 'NR == r {print $c}'
}

row() { # LABEL FILE
    local f=$2 k
    k=$(wc -l <"$f")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$1" "$k" "$(pct "$f" 3 50)" "$(pct "$f" 3 95)" \
        "$(pct "$f" 4 50)" "$(pct "$f" 4 95)"
}

p_thr=$(start_triaged threshold 'policy = threshold' "threshold = $thr")
p_cas=$(start_triaged cascade 'policy = cascade' 'cascade_low = 0' 'cascade_high = 1' \
    'escalate_at = 0.5')
for s in false true; do
    run "$p_thr" "$s" "$dir/thr-$s"
    run "$p_cas" "$s" "$dir/cas-$s"
done

echo "latency.sh: $n requests per run, $par at once; fast 70 ms whole (TTFB ~25 ms), strong 300 ms (~120 ms)"
echo
echo "| policy, class | n | e2e p50 ms | e2e p95 ms | TTFB p50 ms | TTFB p95 ms |"
echo "|---|---|---|---|---|---|"
for s in false true; do
    mode=JSON
    [ "$s" = true ] && mode=SSE
    awk '$1 == "fast"' "$dir/thr-$s" >"$dir/a"; row "threshold, $mode, to fast" "$dir/a"
    awk '$1 == "strong"' "$dir/thr-$s" >"$dir/a"; row "threshold, $mode, to strong" "$dir/a"
    row "threshold, $mode, all" "$dir/thr-$s"
    awk '$2 == "0"' "$dir/cas-$s" >"$dir/a"; row "cascade, $mode, served (fast)" "$dir/a"
    awk '$2 == "1"' "$dir/cas-$s" >"$dir/a"; row "cascade, $mode, escalated" "$dir/a"
    row "cascade, $mode, all" "$dir/cas-$s"
done
