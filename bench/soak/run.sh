#!/usr/bin/env bash
# bench/soak/run.sh - memory soak of triaged (one worker) in front of mockllm: idle RSS with
# the model loaded, then wrk (bench/proxy/post.lua, ~1 KB non-stream chat completions,
# c50) in segments, sampling VmRSS/VmHWM/fds of triaged at every checkpoint; prints the RSS
# after the first 100,000 requests and after 1,000,000, and their ratio.
# Targets (issue #7): idle RSS <= 32 MB; RSS(1M) <= 1.1 x RSS(100k).
#
#   bench/soak/run.sh [--quick] [--requests N] [--first N] [--conns C] [--stream]
#                     [--max-seconds S] [--build DIR]
#
# --quick: 10,000 then 100,000 requests. Stops by itself after --max-seconds (default 900)
# even if the request budget is not reached. Needs wrk and a release build (build-bench).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

total=1000000
first=100000
conns=50
stream=0
max_s=900
build="$root/build-bench"
while [ $# -gt 0 ]; do
    case $1 in
    --quick) total=100000; first=10000; shift ;;
    --requests) total=$2; shift 2 ;;
    --first) first=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --stream) stream=1; shift ;;
    --max-seconds) max_s=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak/run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
command -v wrk >/dev/null || { echo "soak/run.sh: wrk is not installed" >&2; exit 1; }
if [ ! -d "$build" ]; then
    meson setup "$build" "$root" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" daemon/triaged tests/mock/mockllm >/dev/null

. "$root/bench/lib.sh"
bench_setup soak

mock_port=$(free_port)
taskset -c "$core_load" "$build/tests/mock/mockllm" --port "$mock_port" --chunks 16 \
    >"$dir/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock_port"

port=$(free_port)
triaged_conf "$port" "$mock_port" 1 warn "$dir/triage.db" >"$dir/triage.conf"
taskset -c "$core_test" "$build/daemon/triaged" --config "$dir/triage.conf" 2>"$dir/triaged.log" &
tpid=$!
pids+=($tpid)
wait_port "$port"

kb() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$tpid/status"; }
mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

sleep 1
idle_rss=$(kb VmRSS)
echo "triage soak - $(date -u '+%Y-%m-%d %H:%M UTC'), $ncpu cores; triaged pid $tpid (1 worker, core $core_test), wrk c$conns + mock on core $core_load"
echo "model: $root/models/default.tmod ($(du -k "$root/models/default.tmod" | cut -f1) KB)"
echo "idle RSS with the model loaded: $(mb "$idle_rss") MB (target <= 32 MB)"
echo
printf '%10s %8s %9s %9s %6s %8s %8s\n' requests errors "RSS MB" "HWM MB" fds "req/s" "db MB"

done_reqs=0
errors=0
rss_first=""
rss_last=0
t_start=$(date +%s)
rate=0
next=$first
while [ "$done_reqs" -lt "$total" ]; do
    elapsed=$(($(date +%s) - t_start))
    if [ "$elapsed" -ge "$max_s" ]; then
        echo "soak/run.sh: stopping at the time limit ($max_s s) after $done_reqs requests" >&2
        break
    fi
    # Aim each segment at the next checkpoint (the first, then every "first" more).
    want=$((next - done_reqs))
    if [ "$rate" -gt 0 ]; then
        secs=$(( (want + rate - 1) / rate ))
    else
        secs=2
    fi
    [ "$secs" -lt 1 ] && secs=1
    [ "$secs" -gt 60 ] && secs=60
    out=$(STREAM=$stream taskset -c "$core_load" wrk -t1 -c"$conns" -d"${secs}s" \
        -s "$root/bench/proxy/post.lua" "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    e=$(awk '/Non-2xx/ {s += $5}
             /Socket errors/ {for (i = 3; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i}
             END {print s + 0}' <<<"$out")
    r=$(awk '/Requests\/sec/ {printf "%d", $2}' <<<"$out")
    [ -n "$n" ] || { echo "soak/run.sh: wrk failed: $out" >&2; exit 1; }
    done_reqs=$((done_reqs + n))
    errors=$((errors + e))
    if [ "$e" -gt 0 ]; then
        echo "  segment with errors: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ' | tr '\n' ';')" >&2
    fi
    rate=${r:-0}
    if [ "$done_reqs" -ge "$next" ] || [ "$done_reqs" -ge "$total" ]; then
        sleep 1 # let the closed connections and the writer's batch settle
        rss=$(kb VmRSS)
        printf '%10d %8d %9s %9s %6d %8d %8s\n' "$done_reqs" "$errors" "$(mb "$rss")" \
            "$(mb "$(kb VmHWM)")" "$(ls /proc/$tpid/fd | wc -l)" "$rate" \
            "$(du -sk "$dir" | awk '{printf "%.1f", $1 / 1024}')"
        [ -z "$rss_first" ] && { rss_first=$rss; n_first=$done_reqs; }
        rss_last=$rss
        while [ "$next" -le "$done_reqs" ]; do next=$((next + first)); done
        [ "$next" -gt "$total" ] && next=$total
    fi
done

echo
echo "idle RSS:                   $(mb "$idle_rss") MB (target <= 32 MB)"
if [ -n "$rss_first" ]; then
    echo "RSS after $n_first requests:  $(mb "$rss_first") MB"
    echo "RSS after $done_reqs requests: $(mb "$rss_last") MB"
    awk -v a="$rss_first" -v b="$rss_last" 'BEGIN { printf "ratio:                      %.3f (target <= 1.1)\n", b / a }'
fi
echo "errors (non-2xx + socket):  $errors"
echo "VmHWM:                      $(mb "$(kb VmHWM)") MB"
if [ "$errors" -gt 0 ]; then
    echo "last lines of triaged's log:"
    tail -5 "$dir/triaged.log" | sed 's/^/  /'
fi
