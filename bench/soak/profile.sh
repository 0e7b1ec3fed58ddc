#!/usr/bin/env bash
# bench/soak/profile.sh - where triaged's CPU goes per request: one worker in front of
# mockllm under wrk (bench/proxy/post.lua, ~1 KB body, c50, JSON by default), sampled with
# `perf record -e cpu-clock --call-graph dwarf`, and each sample charged to the innermost
# frame that belongs to a known part: MHD (HTTP server), the upstream client (its plain-HTTP
# transport; curl for https), jansson (JSON), features_*, router_* (model), storage_* /
# SQLite (writer thread), log_*, libuv loop, triaged's own code; libc and kernel frames are charged to their caller (the kernel
# share is shown on its own too). Prints a table of % of triaged's CPU and µs per request.
# --streams N instead profiles N slow SSE streams held open by bench/streams/sse_stamps
# (20 chunks 500 ms apart; "per request" is then per stream started in the window).
#
#   bench/soak/profile.sh [--duration S] [--conns C] [--stream] [--streams N] [--freq HZ]
#                         [--keep DIR] [--build DIR]
#
# Hardware counters are not needed (cpu-clock is a software event). --keep DIR keeps
# perf.data for `perf report -i DIR/perf.data`. Needs perf, wrk, a release build.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

duration=10
conns=50
stream=0
streams=0
freq=999
keep=""
build="$root/build-bench"
while [ $# -gt 0 ]; do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --conns) conns=$2; shift 2 ;;
    --stream) stream=1; shift ;;
    --streams) streams=$2; shift 2 ;;
    --freq) freq=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in perf wrk taskset; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -d "$build" ]; then
    meson setup "$build" "$root" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" daemon/triaged tests/mock/mockllm >/dev/null

. "$root/bench/lib.sh"
bench_setup profile
bench_on_exit() { [ -z "$keep" ] || { mkdir -p "$keep"; cp "$dir/perf.data" "$keep/" 2>/dev/null || true; }; }

mock_port=$(free_port)
taskset -c "$core_load" "$build/tests/mock/mockllm" --port "$mock_port" --chunks 16 \
    >"$dir/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock_port"
port=$(free_port)
triaged_conf "$port" "$mock_port" 1 warn "$dir/triage.db" >"$dir/triage.conf"
taskset -c 0 "$build/daemon/triaged" --config "$dir/triage.conf" 2>"$dir/triaged.log" &
tpid=$!
pids+=($tpid)
wait_port "$port"

hz=$(getconf CLK_TCK)
if [ "$streams" -gt 0 ]; then
    ulimit -n "$(ulimit -Hn)"
    client="$build/bench/sse_stamps"
    mkdir -p "$build/bench"
    cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -pedantic "$root/bench/streams/sse_stamps.c" \
        -o "$client" $(pkg-config --cflags --libs libuv)
    taskset -c "$core_load" "$client" --url "http://127.0.0.1:$port/v1/chat/completions" \
        --concurrency "$streams" --chunks 20 --delay-ms 500 --ramp 5 --timeout-s 120 \
        >"$dir/client.out" 2>&1 &
    cpid=$!
    sleep 2
    t0=$(awk '{print $14 + $15}' "/proc/$tpid/stat")
    perf record -q -e cpu-clock -F "$freq" --call-graph dwarf,8192 -p "$tpid" -o "$dir/perf.data" \
        -- sleep "$duration" 2>"$dir/perf.log" || true
    t1=$(awk '{print $14 + $15}' "/proc/$tpid/stat")
    wait "$cpid" || true
    reqs=$streams
    us_per_req=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
    echo "triaged profile - $(date -u '+%Y-%m-%d %H:%M UTC'): $streams slow SSE streams (sse_stamps, 20 chunks 500 ms apart), ${duration}s window from 2 s after the start"
    sed 's/^/  /' "$dir/client.out"
else
    # warm up (connections, SQLite file), then profile a steady run
    STREAM=$stream taskset -c "$core_load" wrk -t1 -c"$conns" -d1s -s "$root/bench/proxy/post.lua" \
        "http://127.0.0.1:$port/v1/chat/completions" >/dev/null 2>&1
    t0=$(awk '{print $14 + $15}' "/proc/$tpid/stat")
    perf record -q -e cpu-clock -F "$freq" --call-graph dwarf,8192 -p "$tpid" -o "$dir/perf.data" \
        -- sleep "$duration" 2>"$dir/perf.log" &
    perfpid=$!
    out=$(STREAM=$stream taskset -c "$core_load" wrk -t1 -c"$conns" -d"${duration}s" -s \
        "$root/bench/proxy/post.lua" "http://127.0.0.1:$port/v1/chat/completions" 2>&1)
    wait "$perfpid" || true
    t1=$(awk '{print $14 + $15}' "/proc/$tpid/stat")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    us_per_req=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", d / hz * 1e6 / n }')
    echo "triaged profile - $(date -u '+%Y-%m-%d %H:%M UTC'): wrk -t1 -c$conns -d${duration}s $( [ "$stream" = 1 ] && echo SSE || echo JSON ), $reqs requests, $rps req/s"
fi
echo "triaged CPU: $us_per_req us per $( [ "$streams" -gt 0 ] && echo "stream (CPU in the window / streams)" || echo request) (utime+stime from /proc/$tpid/stat)"
echo "command: perf record -e cpu-clock -F $freq --call-graph dwarf,8192 -p <triaged> -- sleep $duration"
echo

perf script -i "$dir/perf.data" -F comm,tid,ip,sym,dso 2>/dev/null | awk -v uspr="$us_per_req" '
function libpart(dso) {
    if (dso ~ /libmicrohttpd/) return "MHD (HTTP server: parse, respond, sockets)"
    if (dso ~ /libcurl/) return "curl (upstream client)"
    if (dso ~ /libjansson/) return "jansson (JSON parse/dump)"
    if (dso ~ /libsqlite3/) return "SQLite (storage writer)"
    if (dso ~ /libuv/) return "libuv loop"
    return ""
}
function ownpart(sym) {
    if (sym ~ /^features_/) return "features"
    if (sym ~ /^upstream|^(conn_attach|conn_open|conn_close|conn_release|conn_lost|send_request|take_input|parse_head|on_read|on_write|on_connect|on_resume)$/)
        return "upstream client (HTTP/1.1 on libuv, with its syscalls)"
    if (sym ~ /^router_|^model_|^policy_/) return "router (model score, policy)"
    if (sym ~ /^storage_/) return "storage (queue, writer)"
    if (sym ~ /^log_|^daemon__log/) return "logging"
    if (sym ~ /^metrics_|^dashboard_|^hooks_/) return "metrics hooks"
    return ""
}
# The innermost library frame, or the innermost prefixed triaged function above a static
# helper (emit() in features.c counts as features_extract), else the static helper.
function classify(   i, k, unk) {
    unk = ""
    for (i = 1; i <= n; i++) {
        if (dsos[i] ~ /triaged/) {
            k = ownpart(syms[i])
            if (k != "") return k
            if (unk == "") unk = syms[i]
            continue
        }
        k = libpart(dsos[i])
        if (k != "") return unk != "" ? "triaged other (" unk ")" : k
    }
    return unk != "" ? "triaged other (" unk ")" : ""
}
function flush(   cat, i) {
    if (n == 0) return
    total++
    if (kernel_leaf) kern++
    cat = classify()
    if (cat == "") cat = (kernel_leaf ? "kernel, no user caller" : "other (libc/unknown: " syms[1] ")")
    c[cat]++
    if (kernel_leaf) ck[cat]++
    th[comm]++
    n = 0
}
/^[^ \t]/ { flush(); comm = $1 "/" $2; kernel_leaf = -1; next }
/^[ \t]*$/ { flush(); next }
{
    # "\t addr sym+off (dso)"
    line = $0; sub(/^[ \t]+[0-9a-f]+ /, "", line)
    dso = line; sub(/.*\(/, "", dso); sub(/\)$/, "", dso)
    sym = line; sub(/ \([^()]*\)$/, "", sym); sub(/\+0x[0-9a-f]+$/, "", sym)
    if (kernel_leaf == -1) kernel_leaf = (dso ~ /kernel/) ? 1 : 0
    if (dso ~ /kernel/ || dso ~ /libc\.so|ld-linux/ || sym == "[unknown]") {
        # charge to the caller; remember a leaf libc name for "other"
        if (n == 0 && dso !~ /kernel/) { syms[++n] = sym; dsos[n] = "libc-leaf" }
        next
    }
    syms[++n] = sym; dsos[n] = dso
}
END {
    flush()
    if (total == 0) { print "no samples"; exit 1 }
    printf "| part | %% of triaged CPU | µs/request | of which in kernel |\n|---|---|---|---|\n"
    # sort categories by count, merging the small "other" ones
    for (k in c) if (c[k] / total < 0.005 && (k ~ /^triaged other|^other/)) { small += c[k]; smallk += ck[k]; delete c[k] }
    if (small) { c["small rest (< 0.5% each)"] = small; ck["small rest (< 0.5% each)"] = smallk }
    m = 0; for (k in c) keys[++m] = k
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (c[keys[j]] > c[keys[i]]) { t = keys[i]; keys[i] = keys[j]; keys[j] = t }
    for (i = 1; i <= m; i++) printf "| %s | %.1f | %.2f | %.1f%% |\n", keys[i], 100 * c[keys[i]] / total, uspr * c[keys[i]] / total, 100 * ck[keys[i]] / total
    printf "\n%d samples; kernel leaf in %.1f%% of them. By thread (comm/tid): ", total, 100 * kern / total
    for (t in th) printf "%s %.1f%%  ", t, 100 * th[t] / total
    printf "\n"
}'
