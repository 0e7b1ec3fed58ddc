#!/usr/bin/env bash
# mock-bench.sh - how fast is mockllm? Non-stream requests per second on one core (wrk, 50
# keep-alive connections) and the memory for 10,000 concurrent slow SSE streams.
# Usage: bench/mock-bench.sh [BUILDDIR]   (needs wrk; ulimit -n >= 20000 for the stream test)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
mock=$build/tests/mock/mockllm
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT

start() {
    "$mock" --port 0 "$@" >"$tmp/port" &
    pid=$!
    for _ in $(seq 50); do [ -s "$tmp/port" ] && break; sleep 0.1; done
    port=$(awk '{print $3}' "$tmp/port")
}

cat >"$tmp/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"What is 2+2? Please answer briefly."}]}'
wrk.headers["Content-Type"] = "application/json"
LUA
cat >"$tmp/stream.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}],"mock":{"chunks":20,"chunk_delay_ms":300}}'
wrk.headers["Content-Type"] = "application/json"
LUA

start
echo "== non-stream JSON, 1 mockllm thread, wrk -t1 -c50 -d5s"
wrk -t1 -c50 -d5s -s "$tmp/post.lua" "http://127.0.0.1:$port/v1/chat/completions" | grep -E "Requests/sec|Latency"
kill $pid; wait $pid || true

start
echo "== 10,000 concurrent SSE streams (20 chunks x 300 ms each)"
wrk -t2 -c10000 -d9s --timeout 20s -s "$tmp/stream.lua" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null 2>&1 &
wrk_pid=$!
sleep 4
echo "mockllm RSS: $(ps -o rss= -p $pid) KB; $(curl -s "127.0.0.1:$port/_mock/stats" | cut -c1-90)"
wait $wrk_pid || true
