#!/usr/bin/env bash
# curl.sh - drives triaged with curl, the way shell users and scripts call it: plain and
# streamed completions, usage in streams, errors as OpenAI error bodies, and triage's
# routing headers. run.sh starts mockllm + triaged and sets TRIAGE_URL.
set -uo pipefail
url=${TRIAGE_URL:?run through run.sh}/v1/chat/completions
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
check() { # NAME CONDITION...: one line per check, like the node client's
    local name=$1
    shift
    if "$@"; then echo "ok - $name"; else echo "not ok - $name"; failed=$((failed + 1)); fi
}
# post BODY [curl args]: response body in $tmp/body, headers in $tmp/head, prints the status
post() {
    local body=$1
    shift
    curl -s -o "$tmp/body" -D "$tmp/head" -w '%{http_code}' "$url" \
        -H 'content-type: application/json' -d "$body" "$@"
}
header() { tr -d '\r' <"$tmp/head" | awk -F': ' -v h="$1" 'tolower($1) == h {print $2}'; }
msgs='"messages":[{"role":"user","content":"What is 2 + 2? Answer with one number."}]'

status=$(post "{\"model\":\"triage\",$msgs,\"mock\":{\"content\":\"The answer is 4.\"}}")
check "non-streaming: 200" test "$status" = 200
check "non-streaming: the answer" grep -q '"content":"The answer is 4."' "$tmp/body"
check "non-streaming: usage" grep -q '"completion_tokens":4' "$tmp/body"
check "headers: request id" test -n "$(header x-triage-request-id)"
check "headers: backend" grep -qxE 'fast|strong' <<<"$(header x-triage-backend)"
check "headers: score in [0,1]" awk -v s="$(header x-triage-score)" 'BEGIN {exit !(s != "" && s >= 0 && s <= 1)}'

status=$(post "{\"model\":\"triage\",\"stream\":true,$msgs,\"mock\":{\"content\":\"one two three four five six\",\"chunk_delay_ms\":5}}" -N)
check "streaming: 200" test "$status" = 200
check "streaming: event stream" grep -qi '^content-type: text/event-stream' <(tr -d '\r' <"$tmp/head")
check "streaming: six content chunks" test "$(grep -c '"delta":{[^}]*"content"' "$tmp/body")" -eq 6
check "streaming: ends in [DONE]" test "$(grep '^data: ' "$tmp/body" | tail -n 1)" = "data: [DONE]"
check "streaming: no usage unless asked" bash -c "! grep -q '\"usage\":{' '$tmp/body'"

post "{\"model\":\"triage\",\"stream\":true,\"stream_options\":{\"include_usage\":true},$msgs,\"mock\":{\"chunks\":7}}" -N >/dev/null
check "include_usage: a usage chunk with no choices" grep -q '"choices":\[\],.*"usage":{[^}]*"completion_tokens":7' "$tmp/body"

status=$(post '{"model":"triage", "messages": [')
check "invalid JSON: 400" test "$status" = 400
check "invalid JSON: OpenAI error body" grep -q '"error":{.*"code":"invalid_json"' "$tmp/body"
status=$(post "{\"model\":\"no-such-model\",$msgs}")
check "unknown model: 404 model_not_found" bash -c "[ '$status' = 404 ] && grep -q model_not_found '$tmp/body'"
status=$(post "{\"model\":\"fast\",$msgs,\"mock\":{\"status\":429,\"retry_after\":3}}")
check "backend error status relayed" test "$status" = 429
check "backend error body relayed" grep -q '"error"' "$tmp/body"

echo "$failed failed"
[ "$failed" -eq 0 ]
