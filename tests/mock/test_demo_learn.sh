#!/usr/bin/env bash
# test_demo_learn.sh - `triage demo --learn`, short: two `triage replay` backends with the
# recorded GSM8K answers stand in for ./run.sh's; the demo starts its own judge and
# triaged, 60 prompts flow in 3 steps of 20 with the log alone to learn from, and the
# output must be a real learning curve: a row per step, each step's retrain decided
# (promoted, or kept with its reason), the daemon's labels and spend, the model versions
# /v1/stats reports, and an SVG with the curve. Nothing may be left running or on disk.
# Usage: test_demo_learn.sh TRIAGE TRIAGED
set -uo pipefail
triage=$1 triaged=$2
root=${TRIAGE_SOURCE_ROOT:?}
data=$root/data/replay/gsm8k.jsonl.gz
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; cat "$tmp/out" "$tmp/err" 2>/dev/null; exit 1; }

spawn() { # NAME ARGS... -> sets $port
    local name=$1
    shift
    "$triage" replay --data "$data" --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=($!)
    for _ in $(seq 100); do
        port=$(awk '/listening/ {print $3}' "$tmp/$name.out")
        [ -n "$port" ] && return 0
        sleep 0.05
    done
    fail "$name did not start: $(cat "$tmp/$name.err")"
}
spawn fast --answers mixtral-8x7b-instruct; fast=$port
spawn strong --answers gpt-4-1106-preview; strong=$port
cat >"$tmp/triage.conf" <<CONF
[router]
model = $root/models/default.tmod
strong_share = 0.3
tiers = fast, strong
[backend fast]
url = http://127.0.0.1:$fast/v1
model = mixtral-8x7b-instruct
head = weak
price_input = 0.6
price_output = 0.6
[backend strong]
url = http://127.0.0.1:$strong/v1
model = gpt-4-1106-preview
head = strong
price_input = 10
price_output = 30
CONF

"$triage" demo --learn --config "$tmp/triage.conf" --limit 130 --step 20 --min-holdout 3 \
    --base-data none --triaged "$triaged" --svg "$tmp/curve.svg" >"$tmp/out" 2>"$tmp/err" ||
    fail "demo --learn failed"

# the table: the shipped model, then one row per step with 20, 40, 60 judged prompts
grep -q '^| 0 | 0 | [0-9a-f]* | 0\.[0-9]* | .* | the shipped model |$' "$tmp/out" || fail "no shipped row"
for n in 20 40 60; do
    grep -qE "^\| $n \| $n \| [0-9a-f]+ \| [01]\.[0-9]{3} \| [0-9.]+% \| [0-9.e+-]+ \| [0-9.]+% \| [0-9.e+-]+ \| (promoted: held-out APGR|kept: held-out APGR .*\((too few held out|not better by the margin)\))" \
        "$tmp/out" || fail "no decided retrain after $n judged prompts"
done
[ "$(grep -c '^| [0-9]* | [0-9]* | ' "$tmp/out")" = 4 ] || fail "expected 4 curve points"
# the cascade's curve: the champion's escalation model on the fast tier's recorded answers
grep -qE '^The cascade there \(.*\): shipped [0-9.e+-]+, learned [0-9.e+-]+ USD per 1,000 prompts \([0-9]+% escalated\)\.$' \
    "$tmp/out" || fail "no cascade summary"
grep -q '>The cascade: USD per 1,000 prompts' "$tmp/curve.svg" || fail "no cascade panel"
# the summary names the outcome: promotions, or why there were none
grep -qE '^(Promotions: [1-3] of 3 retrains\.|No promotion: kept: held-out APGR .*)$' "$tmp/out" ||
    fail "no promotion summary"
# 60 prompts, both answers of each judged; the judge calls cost money at strong's prices
grep -qE '^Labels: 120 from the judge; learning spend [0-9.]+ USD \(60 shadow calls [0-9.e-]+ USD, 120 judge calls [0-9.e-]+ USD\) for 60 client prompts\.$' \
    "$tmp/out" || fail "labels and spend"
# /v1/stats: the shipped model plus one version per retrain; a change per promotion
line=$(grep '^Model versions (/v1/stats): ' "$tmp/out") || fail "no model versions line"
versions=$(sed -E 's/^Model versions \(\/v1\/stats\): ([0-9]+), ([0-9]+) changes.*/\1/' <<<"$line")
changes=$(sed -E 's/^Model versions \(\/v1\/stats\): ([0-9]+), ([0-9]+) changes.*/\2/' <<<"$line")
promotions=$(sed -nE 's/^Promotions: ([0-9]+) of.*/\1/p' "$tmp/out")
[ "$versions" -ge 2 ] && [ "$versions" -le 4 ] || fail "versions: $line"
[ "$changes" = $((1 + ${promotions:-0})) ] || fail "changes $changes for ${promotions:-0} promotions: $line"

# the curve: a polyline of 4 points in the APGR panel, and the reference levels
grep -q '<svg' "$tmp/curve.svg" || fail "no svg"
pts=$(grep -m1 -o 'polyline fill="none" stroke="#2a9d8f" stroke-width="2.5" points="[^"]*"' "$tmp/curve.svg" |
    sed 's/.*points="//; s/"$//' | wc -w)
[ "$pts" = 4 ] || fail "curve has $pts points"
grep -q '>shipped model (0\.[0-9]*)<' "$tmp/curve.svg" || fail "no shipped level"
grep -q '>random routing (0.500)<' "$tmp/curve.svg" || fail "no random level"

# the demo's daemon and judge are gone, and so is its folder
state=$(sed -nE 's/.* State: ([^ ]+) \(removed at the end\)$/\1/p' "$tmp/err")
[ -n "$state" ] || fail "no state folder named"
[ ! -e "$state" ] || fail "left behind: $(ls -R "$state")"
pgrep -f "$state/triage.conf" >/dev/null && fail "its triaged still runs"

# bad input is refused with a clear message
"$triage" demo --learn --config "$tmp/triage.conf" --step 10000 --triaged "$triaged" \
    >/dev/null 2>"$tmp/err2" && fail "--step larger than half accepted"
grep -q 'more than half' "$tmp/err2" || fail "step error: $(cat "$tmp/err2")"
"$triage" demo --learn --config "$tmp/triage.conf" --shadow-rate 2 >/dev/null 2>"$tmp/err2" &&
    fail "--shadow-rate 2 accepted"
echo ok
