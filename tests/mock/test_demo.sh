#!/usr/bin/env bash
# test_demo.sh - `triage demo` against a `triage replay` backend: grading by the final number
# (after ####, in \boxed{}, else the last one; commas, signs, decimals), the table, the
# prices from the config and the SVG; then end to end through the real triaged in front of
# two replays, with thresholds placed from the scores it reports.
# Usage: test_demo.sh TRIAGE TRIAGED MAKE_MODEL
set -uo pipefail
triage=$1 triaged=$2 make_model=$3
. "$(dirname "$0")/../lib/free_port.sh"
tmp=$(mktemp -d)
pid=
pids=()
trap 'for p in $pid "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/out" ] && cat "$tmp/out"; exit 1; }

# 7 prompts in the toy model's vocabulary (one clearly hard); the recorded answers get 5 right
cat >"$tmp/data.jsonl" <<'JSONL'
{"prompt": "prove that the series of eigenvalues converges uniformly", "reference": "1234", "answers": {"m": "So 1,000 + 234 = 1,234\n#### 1,234", "w": "#### 1,235"}}
{"prompt": "what is 1 plus 3", "reference": "-5", "answers": {"m": "Hence $x = \\boxed{-5}$.", "w": "x = 5"}}
{"prompt": "what is 2 plus 5", "reference": "7", "answers": {"m": "3 apples and 4 pears make 7.", "w": "3 apples and 4 pears make 7."}}
{"prompt": "what is 4 plus 4", "reference": "12.5", "answers": {"m": "It costs 12.50 dollars", "w": "It costs 12.50 dollars"}}
{"prompt": "what is 6 plus 2", "reference": "8", "answers": {"m": "#### 8\nor maybe 9", "w": "#### 8\nor maybe 9"}}
{"prompt": "what is 7 plus 4", "reference": "11", "answers": {"m": "It is 10.", "w": "It is 10."}}
{"prompt": "what is 9 plus 1", "reference": "3", "answers": {"m": "No idea.", "w": "No idea."}}
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
# no model file: no cascade rows, and it says why
grep -q 'no cascade rows: .*none.tmod' "$tmp/err" || fail "no-model cascade note"
grep -q '^| cascade' "$tmp/out" && fail "cascade rows without a model"
grep -q '<svg' "$tmp/curve.svg" && grep -q '</svg>' "$tmp/curve.svg" || fail "svg"
[ "$(grep -c '<circle' "$tmp/curve.svg")" = 3 ] || fail "svg points"

# default thresholds (auto): a routed run as configured; without x-triage-score (a bare
# replay) no threshold runs follow
"$triage" demo --url "http://127.0.0.1:$port" --config "$tmp/triage.conf" --data "$tmp/data.jsonl" \
    --svg "$tmp/c1.svg" >"$tmp/out" 2>&1 || fail "demo auto"
grep -q '^| triage (triage, as configured) | 71.4% |' "$tmp/out" || fail "auto: configured row"
grep -q 'no x-triage-score' "$tmp/out" || fail "auto: no scores message"

# --limit, and a clear failure when nothing answers
"$triage" demo --url "http://127.0.0.1:$port" --config "$tmp/triage.conf" --data "$tmp/data.jsonl" \
    --thresholds 0.5 --limit 2 --svg "$tmp/c2.svg" >"$tmp/out" 2>&1 || fail "demo --limit"
grep -q '^2 prompts per policy' "$tmp/out" || fail "--limit 2"
"$triage" demo --url "http://127.0.0.1:1" --config "$tmp/triage.conf" --data "$tmp/data.jsonl" \
    --svg "$tmp/c3.svg" >"$tmp/out" 2>&1 && fail "demo with no daemon should fail"
grep -q 'every request failed' "$tmp/out" || fail "no-daemon message"
# end to end: triaged routes between a weak replay (fast) and a strong one
start_replay() { # start_replay ANSWERS: prints the port
    "$triage" replay --data "$tmp/data.jsonl" --answers "$1" --port 0 >"$tmp/$1.port" 2>/dev/null &
    pids+=($!)
    for _ in $(seq 100); do [ -s "$tmp/$1.port" ] && break; sleep 0.05; done
}
start_replay w
start_replay m
"$make_model" "$tmp/model.tmod" || fail "make_model"
dport=$(free_port) || fail "free_port"
cat >"$tmp/e2e.conf" <<CONF
[server]
listen = 127.0.0.1
port = $dport
log_level = warn
[router]
model = $tmp/model.tmod
aliases = triage
tiers = fast, strong
escalate_at = 0
[backend fast]
url = http://127.0.0.1:$(awk '{print $3}' "$tmp/w.port")/v1
model = w
price_input = 1000
price_output = 1000
[backend strong]
url = http://127.0.0.1:$(awk '{print $3}' "$tmp/m.port")/v1
model = m
price_input = 10000
price_output = 10000
CONF
"$triaged" -c "$tmp/e2e.conf" >"$tmp/triaged.log" 2>&1 &
pids+=($!)
up=
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$dport") 2>/dev/null && { up=1; break; }
    sleep 0.05
done
[ -n "$up" ] || fail "triaged did not start: $(cat "$tmp/triaged.log")"
"$triage" demo --url "http://127.0.0.1:$dport" --config "$tmp/e2e.conf" --data "$tmp/data.jsonl" \
    --svg "$tmp/e2e.svg" >"$tmp/out" 2>&1 || fail "demo through triaged"
grep -q '^| always fast (fast) | 42.9% |' "$tmp/out" || fail "e2e fast row"
grep -q '^| always strong (strong) | 71.4% |' "$tmp/out" || fail "e2e strong row"
grep -q '^| triage (triage, as configured) |' "$tmp/out" || fail "e2e configured row"
grep -q '^| triage (triage:0\.[0-9]*) |' "$tmp/out" || fail "e2e: no threshold rows from the scores"
# the 10% threshold sends the top-scored prompt (1 of 7) to strong despite rounded scores
grep -q '^| triage (triage:0\.[0-9]*) | [0-9.]*% | [0-9.]*% | [0-9.e-]* | [0-9.e-]* | 14\.3% |' "$tmp/out" \
    || fail "e2e: top-share threshold"
grep -q 'Note:' "$tmp/out" && fail "e2e: triaged named no backend"
awk -F'|' '/^\| (always|triage|cascade)/ { if ($9 + 0 != 0) bad = 1 } END { exit bad }' "$tmp/out" \
    || fail "e2e: errors"
# the cascade, replayed from the fixed runs' answers: at escalate_at 0 every answer
# escalates (strong's accuracy, both calls paid); at the cuts from the scores fewer do,
# and every row pays at least the fast calls
grep -q '^| cascade (escalate_at 0) | 71.4% | .* | 100.0% |' "$tmp/out" || fail "e2e: cascade row"
fast=$(awk -F'|' '/^\| always fast/ {print $5}' "$tmp/out")
strong=$(awk -F'|' '/^\| always strong/ {print $5}' "$tmp/out")
all=$(awk -F'|' '/^\| cascade \(escalate_at 0\)/ {print $5}' "$tmp/out")
awk -v f="$fast" -v s="$strong" -v a="$all" 'BEGIN { exit !(a > 0.99 * (f + s) && a < 1.01 * (f + s)) }' \
    || fail "e2e: cascade cost $all, fast $fast + strong $strong"
[ "$(grep -c '^| cascade (escalate_at 0\.' "$tmp/out")" -ge 1 ] || fail "e2e: cascade cuts"
awk -F'|' -v f="$fast" '/^\| cascade/ { if ($5 + 0 < f - 1e-9 || $7 + 0 > 100) bad = 1 } END { exit bad }' \
    "$tmp/out" || fail "e2e: cascade rows pay the fast calls"
grep -q 'cascade at escalate_at e' "$tmp/e2e.svg" || fail "e2e: cascade curve in the svg"
echo ok
