#!/usr/bin/env bash
# bench/proxy/run.sh - the same wrk load against the mock backend directly, nginx as a
# plain reverse proxy, and triaged (one worker; one worker with busy_poll_us = 200,
# "triaged_bp"; and all cores), interleaved, and one
# markdown table of medians: requests/s, p50/p99 latency, CPU µs per request of the
# process under test (from /proc/<pid>/stat), RSS, and ratios to nginx.
#
#   bench/proxy/run.sh [--duration S] [--reps N] [--smoke] [--build DIR] [--no-outcome-log]
#
# The process under test is pinned to core 0; wrk and the mock share core 1.
# Needs: wrk, nginx (Debian packages), a release build (made in build-bench).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

duration=10
reps=3
smoke=0
outcome_log=1
build="$root/build-bench"
while [ $# -gt 0 ]; do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --smoke) smoke=1; duration=2; reps=1; shift ;;
    --build) build=$2; shift 2 ;;
    --no-outcome-log) outcome_log=0; shift ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

for tool in wrk nginx taskset; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -d "$build" ]; then
    meson setup "$build" "$root" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" >/dev/null

. "$root/bench/lib.sh"
bench_setup bench

start_mock() { # PORT CHUNKS
    taskset -c "$core_load" "$build/tests/mock/mockllm" --port "$1" --chunks "$2" \
        >"$dir/mock-$1.log" 2>&1 &
    pids+=($!)
    tpid[$1]=$!
    wait_port "$1"
}

mock_json=$(free_port); start_mock "$mock_json" 16
mock_sse=$(free_port); start_mock "$mock_sse" 16

# nginx, one worker, pinned; its master does no request work but is counted too.
start_nginx() { # PORT UPSTREAM NAME
    mkdir -p "$dir/$3"
    sed -e "s|@DIR@|$dir/$3|g" -e "s|@PORT@|$1|g" -e "s|@UPSTREAM@|$2|g" \
        "$here/nginx.conf.in" >"$dir/$3/nginx.conf"
    taskset -c "$core_test" nginx -c "$dir/$3/nginx.conf" -e "$dir/$3/nginx-error.log" \
        2>>"$dir/$3/stderr.log" &
    pids+=($!)
    wait_port "$1"
    # the master does no request work, but count it with its worker
    tpid[$1]="$! $(pgrep -P $! | tr '\n' ' ')"
}

start_triaged() { # PORT UPSTREAM NAME WORKERS CORES [SERVER_LINE]
    mkdir -p "$dir/$3"
    # log_level info: one access line per request, as in production
    triaged_conf "$1" "$2" "$4" info "$([ "$outcome_log" = 1 ] && echo "$dir/$3/triage.db")" \
        ${6:+"$6"} >"$dir/$3/triage.conf"
    taskset -c "$5" "$build/daemon/triaged" --config "$dir/$3/triage.conf" \
        2>"$dir/$3/stderr.log" &
    pids+=($!)
    tpid[$1]=$!
    wait_port "$1"
}

declare -A port
port[direct-json]=$mock_json; port[direct-sse]=$mock_sse
port[nginx-json]=$(free_port); start_nginx "${port[nginx-json]}" "$mock_json" nginx-json
port[nginx-sse]=$(free_port); start_nginx "${port[nginx-sse]}" "$mock_sse" nginx-sse
port[triaged-json]=$(free_port); start_triaged "${port[triaged-json]}" "$mock_json" t1-json 1 "$core_test"
port[triaged-sse]=$(free_port); start_triaged "${port[triaged-sse]}" "$mock_sse" t1-sse 1 "$core_test"
port[triaged_bp-json]=$(free_port)
start_triaged "${port[triaged_bp-json]}" "$mock_json" bp-json 1 "$core_test" "busy_poll_us = 200"
port[triaged_bp-sse]=$(free_port)
start_triaged "${port[triaged_bp-sse]}" "$mock_sse" bp-sse 1 "$core_test" "busy_poll_us = 200"
port[triaged_mc-json]=$(free_port)
start_triaged "${port[triaged_mc-json]}" "$mock_json" tn-json "$ncpu" "0-$((ncpu - 1))"

cpu_ticks() { # PIDS...: utime+stime summed
    local t=0 p
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || continue
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$t"
}
rss_kb() { # PID FIELD(VmRSS|VmHWM), summed over pids
    local t=0 p
    for p in $1; do
        t=$((t + $(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    echo "$t"
}

to_ms() { # wrk latency like 1.23ms / 456.00us / 1.02s
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
        printf "%.3f", n }'
}

hz=$(getconf CLK_TCK)
results="$dir/results.tsv"
: >"$results"

# run TARGET KIND(json|sse) CONNS REP
run() {
    local target=$1 kind=$2 conns=$3 rep=$4
    local p=${port[$target-$kind]}
    local tpids=${tpid[$p]}
    local rss_idle; rss_idle=$(rss_kb "$tpids" VmRSS)
    local t0; t0=$(cpu_ticks $tpids)
    local stream=0; [ "$kind" = sse ] && stream=1
    local out
    out=$(STREAM=$stream taskset -c "$core_load" wrk -t1 -c"$conns" -d"${duration}s" --latency \
        -s "$here/post.lua" "http://127.0.0.1:$p/v1/chat/completions" 2>&1)
    local t1; t1=$(cpu_ticks $tpids)
    local reqs rps p50 p99 errs
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errs=$(awk '/Non-2xx/ {s += $5}
                /Socket errors/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i}
                END {print s + 0}' <<<"$out")
    [ -n "$errs" ] || errs=0
    local cpu_us
    cpu_us=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="${reqs:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", d / hz * 1e6 / n; else print "nan" }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$kind" "$conns" "$rep" \
        "$rps" "$p50" "$p99" "$cpu_us" "$errs" "$rss_idle" "$(rss_kb "$tpids" VmRSS)" \
        "$(rss_kb "$tpids" VmHWM)" >>"$results"
    printf '  %-12s %-4s c%-3s rep %s: %8s req/s  p50 %s ms  cpu %s us/req  errors %s\n' \
        "$target" "$kind" "$conns" "$rep" "$rps" "$p50" "$cpu_us" "$errs" >&2
}

scenarios=("json 1" "json 50" "sse 50")
for rep in $(seq "$reps"); do
    for sc in "${scenarios[@]}"; do
        set -- $sc
        # Interleave the targets within each repetition so drift hits all alike.
        for target in direct nginx triaged triaged_bp triaged_mc; do
            [ -n "${port[$target-$1]:-}" ] || continue
            run "$target" "$1" "$2" "$rep"
        done
    done
done

# Medians per (target, kind, conns), and ratios to nginx from the same run.
echo
echo "triage proxy benchmark — $(date -u +%Y-%m-%d), $(nproc) cores, $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ *//'), ${duration}s x $reps reps"
echo
awk -F'\t' '
function median(key, col,   n, i, j, t, a) {
    n = split(vals[key, col], a, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
{
    key = $1 SUBSEP $2 SUBSEP $3
    if (!(key in seen)) { seen[key] = 1; order[++nk] = key }
    for (c = 5; c <= 12; c++) vals[key, c] = vals[key, c] " " $c
}
END {
    print "| target | load | req/s | p50 ms | p99 ms | CPU µs/req | errors | RSS idle MB | RSS after MB | RSS peak MB | req/s vs nginx | CPU vs nginx |"
    print "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= nk; i++) {
        split(order[i], k, SUBSEP)
        ng = "nginx" SUBSEP k[2] SUBSEP k[3]
        rps = median(order[i], 5); cpu = median(order[i], 8)
        r1 = (ng in seen) ? sprintf("%.2fx", rps / median(ng, 5)) : "-"
        r2 = (ng in seen && k[1] != "direct") ? sprintf("%.2fx", cpu / median(ng, 8)) : "-"
        printf "| %s | %s c%s | %.0f | %.3f | %.3f | %.1f | %d | %.1f | %.1f | %.1f | %s | %s |\n",
            k[1], k[2], k[3], rps, median(order[i], 6), median(order[i], 7), cpu,
            median(order[i], 9), median(order[i], 10) / 1024, median(order[i], 11) / 1024,
            median(order[i], 12) / 1024, r1, r2
    }
    d = "direct" SUBSEP "json" SUBSEP "1"
    split("nginx triaged triaged_bp", names, " ")
    printf "\nAdded p50 latency at c1 over direct (target <= 0.15 ms):"
    for (i = 1; i <= 3; i++) {
        t = names[i] SUBSEP "json" SUBSEP "1"
        if ((d in seen) && (t in seen))
            printf " %s %.3f ms;", names[i], median(t, 6) - median(d, 6)
    }
    print ""
}' "$results"

# A smoke run fails when any request failed or a target served nothing.
if [ "$smoke" = 1 ]; then
    awk -F'\t' '$9 > 0 || $5 + 0 == 0 { bad = 1; print "smoke: " $1 " " $2 " c" $3 ": " $9 " errors, " $5 " req/s" > "/dev/stderr" }
                END { exit bad }' "$results"
fi
