#!/usr/bin/env bash
# test_demo.sh - `triage demo` against a `triage replay` backend: grading by the final number
# (after ####, in \boxed{}, else the last one; commas, signs, decimals), the table, the
# prices from the config and the SVG. Usage: test_demo.sh PATH-TO-TRIAGE
set -uo pipefail
triage=$1
tmp=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/out" ] && cat "$tmp/out"; exit 1; }

# 7 prompts; the recorded answers get 5 right
cat >"$tmp/data.jsonl" <<'JSONL'
{"prompt": "p1", "reference": "1234", "answers": {"m": "So 1,000 + 234 = 1,234\n#### 1,234"}}
{"prompt": "p2", "reference": "-5", "answers": {"m": "Hence $x = \\boxed{-5}$."}}
{"prompt": "p3", "reference": "7", "answers": {"m": "3 apples and 4 pears make 7."}}
{"prompt": "p4", "reference": "12.5", "answers": {"m": "It costs 12.50 dollars"}}
{"prompt": "p5", "reference": "8", "answers": {"m": "#### 8\nor maybe 9"}}
{"prompt": "p6", "reference": "11", "answers": {"m": "It is 10."}}
{"prompt": "p7", "reference": "3", "answers": {"m": "No idea."}}
JSONL
cat >"$tmp/triage.conf" <<'CONF'
[router]
model = none.tmod
aliases = triage
tiers = fast, strong
[backend fast]
url = http://127.0.0.1:1/v1
model = m
price_input = 1000
price_output = 1000
[backend strong]
url = http://127.0.0.1:1/v1
model = m
price_input = 10000
price_output = 10000
CONF

"$triage" replay --data "$tmp/data.jsonl" --answers m --port 0 >"$tmp/port" 2>"$tmp/replay.log" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/port" ] && break; sleep 0.05; done
port=$(awk '{print $3}' "$tmp/port")
[ -n "$port" ] || fail "replay did not start: $(cat "$tmp/replay.log")"

"$triage" demo --url "http://127.0.0.1:$port" --config "$tmp/triage.conf" --data "$tmp/data.jsonl" \
    --thresholds 0.5 --svg "$tmp/curve.svg" >"$tmp/out" 2>"$tmp/err" || fail "demo failed: $(cat "$tmp/err")"

grep -q '^| always fast (fast) | 71.4% |' "$tmp/out" || fail "fast row"
grep -q '^| always strong (strong) | 71.4% |' "$tmp/out" || fail "strong row"
grep -q '^| triage (triage:0.5) | 71.4% |' "$tmp/out" || fail "routed row"
grep -q '^| always strong (strong) | .* | 100.0% |' "$tmp/out" || fail "strong share"
# strong costs 10x fast: same tokens, 10x the prices
fast=$(awk -F'|' '/always fast/ {print $5}' "$tmp/out")
strong=$(awk -F'|' '/always strong/ {print $5}' "$tmp/out")
awk -v f="$fast" -v s="$strong" 'BEGIN { exit !(f > 0 && s > 9.9 * f && s < 10.1 * f) }' \
    || fail "costs fast=$fast strong=$strong"
# no x-triage-backend from a bare replay: the routed run's cost is flagged, not invented
grep -q 'Note: 7 answers of triage (triage:0.5)' "$tmp/out" || fail "unknown-backend note"
grep -q '<svg' "$tmp/curve.svg" && grep -q '</svg>' "$tmp/curve.svg" || fail "svg"
[ "$(grep -c '<circle' "$tmp/curve.svg")" = 3 ] || fail "svg points"

# --limit, and a clear failure when nothing answers
"$triage" demo --url "http://127.0.0.1:$port" --config "$tmp/triage.conf" --data "$tmp/data.jsonl" \
    --thresholds 0.5 --limit 2 --svg "$tmp/c2.svg" >"$tmp/out" 2>&1 || fail "demo --limit"
grep -q '^2 prompts per policy' "$tmp/out" || fail "--limit 2"
"$triage" demo --url "http://127.0.0.1:1" --config "$tmp/triage.conf" --data "$tmp/data.jsonl" \
    --svg "$tmp/c3.svg" >"$tmp/out" 2>&1 && fail "demo with no daemon should fail"
grep -q 'every request failed' "$tmp/out" || fail "no-daemon message"
echo ok
