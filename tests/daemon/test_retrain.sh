#!/usr/bin/env bash
# test_retrain.sh - the learning loop end to end: traffic through triaged with
# store_prompts = full, feedback saying the fast backend fails hard prompts, then
# `triage train --db` on the log, a hot reload, and the retrained model must send
# unseen hard prompts to strong and unseen easy ones to fast. Then the same traffic
# with store_prompts = features: the log keeps no text, and trains a model as able.
# Usage: test_retrain.sh TRIAGE TRIAGED MOCKLLM MAKE_MODEL
set -uo pipefail
triage=$1 triaged=$2 mockllm=$3 make_model=$4
. "$(dirname "$0")/../lib/free_port.sh"
tmp=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; tail -n 20 "$tmp/triaged.log" 2>/dev/null; exit 1; }

"$mockllm" --port 0 >"$tmp/mock.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$tmp/mock.out" && break; sleep 0.05; done
mport=$(awk '/listening/ {print $3}' "$tmp/mock.out")
[ -n "$mport" ] || fail "mockllm did not start"

port=$(free_port) || fail "free_port"
"$make_model" "$tmp/m.tmod" || fail "make_model"
cat >"$tmp/triage.conf" <<EOF
[server]
listen = 127.0.0.1
port = $port
[router]
model = m.tmod
strong_share = 0.5
tiers = fast, strong
[storage]
path = log.db
store_prompts = full
flush_interval_ms = 10
[backend fast]
url = http://127.0.0.1:$mport/v1
[backend strong]
url = http://127.0.0.1:$mport/v1
EOF
"$triaged" --config "$tmp/triage.conf" 2>"$tmp/triaged.log" &
pids+=($!)
for _ in $(seq 100); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.05; done
curl -sf "localhost:$port/healthz" >/dev/null || fail "triaged did not start"

easy() { echo "what is $1 plus $2 in total"; }
hard() { echo "derive the asymptotic eigenvalue spacing of operator $1 and prove convergence"; }

# label_all < LINES, each "BACKEND SCORE TEXT": asks BACKEND the TEXT, then gives
# the answer the feedback SCORE. One curl process for all the asks, one for all the
# feedback, on kept-alive connections (a process per request took most of this test's
# time under ASan).
label_all() {
    local n=0 backend score text scores=()
    rm -rf "$tmp/h" && mkdir "$tmp/h"
    : >"$tmp/ask.cfg"
    while read -r backend score text; do
        n=$((n + 1))
        scores[n]=$score
        [ $n = 1 ] || echo next >>"$tmp/ask.cfg"
        printf 'url = "http://127.0.0.1:%s/v1/chat/completions"\nheader = "content-type: application/json"\ndata = "{\\"model\\":\\"%s\\",\\"messages\\":[{\\"role\\":\\"user\\",\\"content\\":\\"%s\\"}]}"\ndump-header = "%s"\noutput = "/dev/null"\n' \
            "$port" "$backend" "$text" "$tmp/h/$n.head" >>"$tmp/ask.cfg"
    done
    curl -s -K "$tmp/ask.cfg" || fail "asks: curl failed"
    # the request ids, one line "N ID" per answer, in order
    seq 1 "$n" | sed "s|.*|$tmp/h/&.head|" | xargs awk -F': ' \
        'FNR == 1 { f++ } tolower($1) == "x-triage-request-id" { sub(/\r$/, "", $2); print f, $2 }' \
        >"$tmp/ids"
    [ "$(wc -l <"$tmp/ids")" = "$n" ] || fail "asks: $(wc -l <"$tmp/ids") request ids for $n asks"
    : >"$tmp/fb.cfg"
    local i id
    while read -r i id; do
        [ "$i" = 1 ] || echo next >>"$tmp/fb.cfg"
        printf 'url = "http://127.0.0.1:%s/v1/feedback"\nheader = "content-type: application/json"\ndata = "{\\"request_id\\":\\"%s\\",\\"score\\":%s,\\"source\\":\\"grader\\"}"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
            "$port" "$id" "${scores[i]}" >>"$tmp/fb.cfg"
    done <"$tmp/ids"
    curl -s -K "$tmp/fb.cfg" >"$tmp/fb.codes" || fail "feedback: curl failed"
    [ "$(grep -c '^200$' "$tmp/fb.codes")" = "$n" ] || fail "feedback: $(sort "$tmp/fb.codes" | uniq -c)"
}

# The log: every prompt answered by both backends; the grader says fast fails the
# hard ones, strong answers everything.
label_all < <(for i in $(seq 1 30); do
    e=$(easy "$i" "$((i * 7 % 13))") h=$(hard "$i")
    printf 'fast 1 %s\nstrong 1 %s\nfast 0 %s\nstrong 1 %s\n' "$e" "$e" "$h" "$h"
done)

"$triage" train --db "$tmp/log.db" --weak fast --strong strong --out "$tmp/new.tmod" \
    2>"$tmp/train.log" || fail "triage train --db: $(cat "$tmp/train.log")"
grep -q "60 labelled prompts" "$tmp/train.log" || fail "expected 60 labelled prompts: $(cat "$tmp/train.log")"

# A log without prompt text says so plainly.
sqlite3 "$tmp/log.db" "UPDATE requests SET prompt = NULL" 2>/dev/null &&
    { "$triage" train --db "$tmp/log.db" --out "$tmp/none.tmod" 2>"$tmp/none.log";
      grep -q "store_prompts = full" "$tmp/none.log" || fail "no hint about store_prompts: $(cat "$tmp/none.log")"; }

# Swap the model in without a restart and route prompts it has never seen.
v1=$(curl -s "localhost:$port/readyz")
cp "$tmp/new.tmod" "$tmp/m.tmod"
code=$(curl -s -o "$tmp/reload" -w '%{http_code}' -X POST "localhost:$port/admin/reload")
[ "$code" = 200 ] || fail "reload: HTTP $code $(cat "$tmp/reload")"
[ "$(curl -s "localhost:$port/readyz")" != "$v1" ] || fail "the model version did not change"

route() {
    curl -s -D - -o /dev/null "localhost:$port/v1/chat/completions" \
        -H 'content-type: application/json' \
        -d "{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"$1\"}]}" |
        tr -d '\r' | awk -F': ' 'tolower($1) == "x-triage-backend" {print $2}'
}
for i in 101 102 103; do
    [ "$(route "$(hard "$i")")" = strong ] || fail "unseen hard prompt $i not routed to strong"
    [ "$(route "$(easy "$i" 5)")" = fast ] || fail "unseen easy prompt $i not routed to fast"
done

# store_prompts = features: a fresh daemon on a fresh log keeps each request's feature
# vector and hash, never its text, and `triage train --db` learns from them alone.
kill "${pids[1]}"
wait "${pids[1]}" 2>/dev/null
cp "$tmp/m.tmod" "$tmp/shipped.tmod"
"$make_model" "$tmp/m.tmod" || fail "make_model"
sed -e 's/^store_prompts = full/store_prompts = features/' -e 's/^path = log.db/path = feat.db/' \
    "$tmp/triage.conf" >"$tmp/feat.conf"
"$triaged" --config "$tmp/feat.conf" 2>"$tmp/triaged.log" &
pids[1]=$!
for _ in $(seq 100); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.05; done
curl -sf "localhost:$port/healthz" >/dev/null || fail "triaged (features) did not start"
label_all < <(for i in $(seq 1 20); do
    e=$(easy "$i" "$((i * 7 % 13))") h=$(hard "$i")
    printf 'fast 1 %s\nstrong 1 %s\nfast 0 %s\nstrong 1 %s\n' "$e" "$e" "$h" "$h"
done)
route "$(hard 7)" >/dev/null # a routed request stores its vector too
kill "${pids[1]}" # the writer drains at exit
wait "${pids[1]}" 2>/dev/null
if command -v sqlite3 >/dev/null; then
    q() { sqlite3 "$tmp/feat.db" "$1"; }
    [ "$(q 'SELECT count(*) FROM requests WHERE prompt IS NOT NULL')" = 0 ] \
        || fail "store_prompts = features kept prompt text"
    [ "$(q 'SELECT count(*) FROM requests WHERE features IS NULL OR prompt_hash IS NULL')" = 0 ] \
        || fail "rows without features or hash"
    [ "$(q 'SELECT count(*) FROM requests')" = 81 ] || fail "rows: $(q 'SELECT count(*) FROM requests')"
    [ "$(q "SELECT count(*) FROM requests WHERE CAST(features AS TEXT) LIKE '%eigenvalue%'")" = 0 ] \
        || fail "prompt text inside the feature blobs"
fi
# the vectors were hashed into the serving model's space: train in the same one (10 bits)
"$triage" train --db "$tmp/feat.db" --bits 10 --weak fast --strong strong --out "$tmp/feat.tmod" \
    2>"$tmp/train-f.log" || fail "triage train --db (features): $(cat "$tmp/train-f.log")"
grep -q "40 labelled prompts" "$tmp/train-f.log" || fail "features: $(cat "$tmp/train-f.log")"
score() { # MODEL TEXT -> the score
    printf '{"messages":[{"role":"user","content":"%s"}]}\n' "$2" | "$triage" score --model "$1" |
        sed -E 's/^\{"score": ([0-9.]+).*/\1/'
}
for i in 101 102 103; do
    awk -v e="$(score "$tmp/feat.tmod" "$(easy "$i" 5)")" -v h="$(score "$tmp/feat.tmod" "$(hard "$i")")" \
        'BEGIN { exit !(h > e + 0.2) }' || fail "the model from features did not learn ($i)"
done
"$triage" export --db "$tmp/feat.db" >"$tmp/feat.jsonl" 2>/dev/null || fail "export (features)"
[ "$(grep -c '"features":"VEYB' "$tmp/feat.jsonl")" = 40 ] || fail "export: $(head -c 300 "$tmp/feat.jsonl")"
echo ok
