#!/usr/bin/env bash
# bench/apis/run.sh - triaged's own time before forwarding (x-triage-overhead-us: body
# parse, the path's checks and prompt view, features, score, policy, forward setup) for
# the same ~1 KB prompt sent to each routed API path: chat completions, Responses,
# completions and Anthropic Messages. Prints the median and p90 of N requests per path,
# sent one at a time, and the ratio to chat's median.
#
#   bench/apis/run.sh [--requests N] [--build DIR]
#
# One worker pinned to core 0, the mock on core 1; the outcome log on (as deployed).
# Needs a release build (made in build-bench when DIR does not exist).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

requests=400
build="$root/build-bench"
while [ $# -gt 0 ]; do
    case $1 in
    --requests) requests=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
for tool in curl taskset python3; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is not installed" >&2; exit 1; }
done
if [ ! -d "$build" ]; then
    meson setup "$build" "$root" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" >/dev/null

. "$root/bench/lib.sh"
bench_setup apis

mock=$(free_port)
taskset -c "$core_load" "$build/tests/mock/mockllm" --port "$mock" --chunks 4 >"$dir/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock"
port=$(free_port)
{
    triaged_conf "$port" "$mock" 1 warn "$dir/out.db"
    printf '[router]\ntiers = fast, strong, claude-fast, claude-strong\n'
    printf '[backend claude-fast]\nurl = http://127.0.0.1:%s/v1\nhead = weak\napi = anthropic\n' "$mock"
    printf '[backend claude-strong]\nurl = http://127.0.0.1:%s/v1\nhead = strong\napi = anthropic\n' "$mock"
} >"$dir/triage.conf"
taskset -c "$core_test" "$build/daemon/triaged" -c "$dir/triage.conf" 2>"$dir/triaged.log" &
pids+=($!)
wait_port "$port"

# the same ~1 KB prompt (a GSM8K-like word problem) in each API's shape
python3 - "$dir" <<'PY'
import json, sys
d = sys.argv[1]
q = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
     "in May. How many clips did Natalia sell altogether in April and May? ") * 6
q = q[:1000]
sysmsg = "You are a careful tutor."
bodies = {
    "chat": ("/v1/chat/completions", {"model": "triage", "messages": [
        {"role": "system", "content": sysmsg}, {"role": "user", "content": q}], "max_tokens": 256}),
    "responses": ("/v1/responses", {"model": "triage", "instructions": sysmsg, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": q}]}], "max_output_tokens": 256}),
    "completions": ("/v1/completions", {"model": "triage", "prompt": sysmsg + "\n" + q, "max_tokens": 256}),
    "messages": ("/v1/messages", {"model": "triage", "system": sysmsg, "max_tokens": 256, "messages": [
        {"role": "user", "content": [{"type": "text", "text": q}]}]}),
}
for name, (path, body) in bodies.items():
    with open(f"{d}/{name}.json", "w") as f:
        json.dump(body, f)
    with open(f"{d}/{name}.path", "w") as f:
        f.write(path)
PY

printf '| path | body bytes | median µs | p90 µs | median vs chat |\n|---|---:|---:|---:|---:|\n'
chat_median=
for name in chat responses completions messages; do
    path=$(cat "$dir/$name.path")
    : >"$dir/$name.us"
    for _ in $(seq 20); do # warm-up: the scorer's scratch, the connection pool
        curl -s -o /dev/null "http://127.0.0.1:$port$path" -H 'content-type: application/json' \
            --data-binary "@$dir/$name.json"
    done
    for _ in $(seq "$requests"); do
        taskset -c "$core_load" curl -s -o /dev/null -D - "http://127.0.0.1:$port$path" \
            -H 'content-type: application/json' --data-binary "@$dir/$name.json" |
            tr -d '\r' | awk -F': ' 'tolower($1) == "x-triage-overhead-us" {print $2}' >>"$dir/$name.us"
    done
    read -r median p90 < <(sort -n "$dir/$name.us" | awk '{v[NR] = $1} END {
        if (NR == 0) { print "- -"; exit }
        print v[int((NR + 1) / 2)], v[int(NR * 0.9 + 0.5)] }')
    [ -z "$chat_median" ] && chat_median=$median
    ratio=$(awk -v a="$median" -v b="$chat_median" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
    printf '| `%s` | %s | %s | %s | %s |\n' "$path" "$(wc -c <"$dir/$name.json")" "$median" "$p90" "$ratio"
done
