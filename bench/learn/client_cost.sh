#!/usr/bin/env bash
# bench/learn/client_cost.sh - what learning costs the client: wrk against triaged with
# [learning] off (shadow_rate = 0), and on for every request (shadow_rate = 1, a judge),
# runs interleaved; medians of client p50 latency at c1, and of triaged's CPU per client
# request at c50 (its own CPU, shadow and judge calls included, since they run on the
# same loops). Backends and judge are mockllm; triaged pinned to core 0, the rest to 1.
#
#   bench/learn/client_cost.sh [--build DIR] [--duration S] [--reps N]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build
duration=4
reps=3
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--duration S] [--reps N]" >&2; exit 2 ;;
    esac
done
tmp=$(mktemp -d /tmp/triage-client-cost-XXXXXX)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

mock() { # NAME ARGS... -> $port
    taskset -c 1 "$build/tests/mock/mockllm" --port 0 "${@:2}" >"$tmp/$1.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$tmp/$1.out")
        [ -n "$port" ] && return 0
        sleep 0.05
    done
    exit 1
}
mock backend; backend=$port
mock judge --content "The answer is fine. Rating: [[7]]"; judge=$port
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# run RATE C: one wrk run against a fresh triaged; prints "p50_ms cpu_us_per_req"
run() {
    local rate=$1 conns=$2 port
    port=$(free_port)
    cat >"$tmp/t.conf" <<CONF
[server]
listen = 127.0.0.1
port = $port
workers = 1
log_level = warn
[router]
model = $root/models/default.tmod
tiers = fast, strong
[storage]
path = $tmp/log-$rate-$conns-$RANDOM.db
[learning]
shadow_rate = $rate
judge = judge
shadow_budget_usd_per_day = 1000
max_concurrent = 64
[backend fast]
url = http://127.0.0.1:$backend/v1
[backend strong]
url = http://127.0.0.1:$backend/v1
[backend judge]
url = http://127.0.0.1:$judge/v1
CONF
    taskset -c 0 "$build/daemon/triaged" --config "$tmp/t.conf" 2>"$tmp/t.err" &
    local tpid=$!
    for _ in $(seq 100); do curl -sf "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
    local t0 n0 t1
    t0=$(awk '{print $14 + $15}' /proc/$tpid/stat)
    taskset -c 1 wrk -t1 -c"$conns" -d"${duration}s" --latency -s "$root/bench/proxy/post.lua" \
        "http://127.0.0.1:$port/v1/chat/completions" >"$tmp/wrk.txt" 2>&1
    sleep 0.5 # the shadow and judge calls of the last requests finish
    t1=$(awk '{print $14 + $15}' /proc/$tpid/stat)
    kill $tpid; wait $tpid 2>/dev/null || true
    local reqs p50
    reqs=$(awk '/requests in/ {print $1}' "$tmp/wrk.txt")
    p50=$(awk '$1 == "50%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms/,"",v); else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' "$tmp/wrk.txt")
    echo "$p50 $(awk -v t=$((t1 - t0)) -v n="$reqs" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz / n * 1e6}')"
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
for i in $(seq "$reps"); do
    for rate in 0 1; do
        run $rate 1 | awk -v r=$rate '{print r, "c1", $1, $2}' >>"$tmp/res.txt"
        run $rate 50 | awk -v r=$rate '{print r, "c50", $1, $2}' >>"$tmp/res.txt"
    done
done
echo "learning cost to the client — $(date +%F), $(nproc) cores, ${duration}s x $reps reps"
echo "| shadow_rate | c1 p50 ms | c50 CPU µs per client request |"
echo "|---:|---:|---:|"
for rate in 0 1; do
    p50=$(awk -v r=$rate '$1 == r && $2 == "c1" {print $3}' "$tmp/res.txt" | median)
    cpu=$(awk -v r=$rate '$1 == r && $2 == "c50" {print $4}' "$tmp/res.txt" | median)
    echo "| $rate | $p50 | $cpu |"
done
