#!/usr/bin/env bash
# run.sh - the 'clients' suite: starts three mockllm backends and triaged on a generated
# config (OpenAI backends fast and strong, an embeddings backend, Anthropic backends
# claude-fast and claude-strong), then drives triaged with a real client: the official
# openai npm package (openai-sdk.test.mjs), the official @anthropic-ai/sdk
# (anthropic-sdk.test.mjs) or curl (curl.sh), with TRIAGE_URL and MOCK_*_URL set.
# A node client exits 77 (skipped) when node or its package in tests/clients/node_modules
# is missing (`npm ci` there).
# Usage: run.sh MOCKLLM TRIAGED MAKE_MODEL {node|anthropic|curl}
set -uo pipefail
mockllm=$1 triaged=$2 make_model=$3 client=${4:-node}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../lib/free_port.sh"

if [ "$client" != curl ]; then
    pkg=openai
    [ "$client" = anthropic ] && pkg=@anthropic-ai/sdk
    command -v node >/dev/null || { echo "node not found: skipped"; exit 77; }
    [ -f "$here/node_modules/$pkg/package.json" ] \
        || { echo "no tests/clients/node_modules/$pkg (run npm ci there): skipped"; exit 77; }
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

start_mock() { # start_mock NAME: sets port_NAME
    "$mockllm" --port 0 >"$tmp/$1.port" 2>"$tmp/$1.log" &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$tmp/$1.port" ] && break; sleep 0.05; done
    local p
    p=$(awk '{print $3}' "$tmp/$1.port")
    [ -n "$p" ] || { echo "mockllm $1 did not start"; cat "$tmp/$1.log"; exit 1; }
    eval "port_$1=$p"
}
start_mock fast
start_mock strong
start_mock claude

# a tiny predictor model: this suite tests the wire protocol, not routing quality
"$make_model" "$tmp/model.tmod" || { echo "make_model failed"; exit 1; }

port=$(free_port) || exit 1
cat >"$tmp/triage.conf" <<CONF
[server]
listen = 127.0.0.1
port = $port
log_level = warn
[router]
model = $tmp/model.tmod
aliases = triage
policy = threshold
threshold = 0.5
tiers = fast, strong, claude-fast, claude-strong
fallback = strong, fast
[backend fast]
url = http://127.0.0.1:$port_fast/v1
model = mock-fast
price_input = 0.6
price_output = 0.6
max_retries = 0
[backend strong]
url = http://127.0.0.1:$port_strong/v1
model = mock-strong
price_input = 10
price_output = 30
max_retries = 0
[backend embed]
url = http://127.0.0.1:$port_fast/v1
model = text-embedding-mock
max_retries = 0
[backend claude-fast]
url = http://127.0.0.1:$port_fast/v1
model = claude-haiku-mock
api = anthropic
api_key_env = TRIAGE_TEST_ANTHROPIC_KEY
price_input = 1
price_output = 5
max_retries = 0
[backend claude-strong]
url = http://127.0.0.1:$port_claude/v1
model = claude-opus-mock
api = anthropic
api_key_env = TRIAGE_TEST_ANTHROPIC_KEY
price_input = 15
price_output = 75
max_retries = 0
CONF
TRIAGE_TEST_ANTHROPIC_KEY=sk-ant-backend-key "$triaged" -c "$tmp/triage.conf" >"$tmp/triaged.log" 2>&1 &
pids+=($!)
up=
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then up=1; break; fi
    sleep 0.05
done
[ -n "$up" ] || { echo "triaged did not start"; cat "$tmp/triaged.log"; exit 1; }

export TRIAGE_URL="http://127.0.0.1:$port" MOCK_FAST_URL="http://127.0.0.1:$port_fast" \
    MOCK_STRONG_URL="http://127.0.0.1:$port_strong" MOCK_CLAUDE_URL="http://127.0.0.1:$port_claude"
if [ "$client" = node ]; then
    (cd "$here" && node openai-sdk.test.mjs)
elif [ "$client" = anthropic ]; then
    (cd "$here" && node anthropic-sdk.test.mjs)
else
    bash "$here/curl.sh"
fi
rc=$?
[ $rc -eq 0 ] || { echo "--- triaged log"; cat "$tmp/triaged.log"; }
exit $rc
