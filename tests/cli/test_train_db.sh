#!/usr/bin/env bash
# test_train_db.sh - `triage train --db --config` and `triage export --config`: the log's
# backend names train the heads the config maps them to, from judge labels gathered by
# shadow calls, prompts with one backend's label included.
# usage: test_train_db.sh TRIAGE SEED_LEARNING
set -euo pipefail
T=$1 seed=$2
dir=$(mktemp -d /tmp/triage-train-db-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$seed" "$dir/log.db" || fail "seed"
# The example config's mapping: backend fast is scored by head weak.
cat >"$dir/triage.conf" <<CONF
[router]
model = never-loaded.tmod
tiers = fast, strong
[storage]
path = log.db
store_prompts = full
[backend fast]
url = http://127.0.0.1:9/v1
head = weak
api_key_env = TRIAGE_TEST_UNSET_KEY
[backend strong]
url = http://127.0.0.1:9/v1
CONF

# 50 prompts (40 with both grades, 10 with fast's only); judge and shadow rows are no prompts.
"$T" train --db "$dir/log.db" --config "$dir/triage.conf" --epochs 20 --out "$dir/m.tmod" \
    2>"$dir/train.err" || fail "train: $(cat "$dir/train.err")"
grep -q 'maps backends to heads: fast -> weak, strong -> strong' "$dir/train.err" \
    || fail "mapping not shown: $(cat "$dir/train.err")"
grep -q '50 labelled prompts (outcomes from feedback 0, judge 90, offline 0; 0 labelled cascade fast answers)' "$dir/train.err" \
    || fail "train summary: $(cat "$dir/train.err")"
grep -q '2 heads' "$dir/train.err" || fail "heads: $(cat "$dir/train.err")"
if grep -q "no outcomes named" "$dir/train.err"; then fail "score pair not found"; fi

# The model's heads are weak and strong, and both learned: fast (weak) fails hard prompts.
score() { # MODEL TEXT -> the score line
    printf '{"messages":[{"role":"user","content":"%s"}]}\n' "$2" | "$T" score --model "$1"
}
e=$(score "$dir/m.tmod" "what is 101 plus 5 in total")
h=$(score "$dir/m.tmod" "derive the asymptotic eigenvalue spacing of operator 101 and prove convergence of 3")
# (no `| grep -q` below: with pipefail, grep quitting early can fail the writer)
for l in "$e" "$h"; do
    [[ $l =~ ^\{\"score\":\ [0-9.]+,\ \"p\":\ \{\"weak\":\ [0-9.]+,\ \"strong\":\ [0-9.]+\}\}$ ]] \
        || fail "heads are not weak, strong: $l"
done
field() { echo "$1" | sed -E "s/.*\"$2\": ([0-9.]+).*/\1/"; }
awk -v e="$(field "$e" weak)" -v h="$(field "$h" weak)" 'BEGIN { exit !(e > 0.6 && h < 0.4) }' \
    || fail "weak head did not learn: easy $e, hard $h"
awk -v e="$(field "$e" strong)" -v h="$(field "$h" strong)" 'BEGIN { exit !(e > 0.6 && h > 0.6) }' \
    || fail "strong head did not learn: easy $e, hard $h"
awk -v e="$(field "$e" score)" -v h="$(field "$h" score)" 'BEGIN { exit !(h > e) }' \
    || fail "score: easy $e, hard $h"

# --weak/--strong may name backends: through the mapping, the same model bit for bit.
"$T" train --db "$dir/log.db" --config "$dir/triage.conf" --epochs 20 --weak fast \
    --strong strong --out "$dir/m2.tmod" 2>/dev/null || fail "train --weak fast"
cmp -s "$dir/m.tmod" "$dir/m2.tmod" || fail "--weak fast did not resolve to head weak"

# Without --config the log's names are the heads (as before), and --weak must say fast.
"$T" train --db "$dir/log.db" --epochs 20 --weak fast --out "$dir/raw.tmod" 2>"$dir/raw.err" \
    || fail "train without --config: $(cat "$dir/raw.err")"
score "$dir/raw.tmod" "hello" >"$dir/raw.score"
grep -Eq '"p": \{"fast": [0-9.]+, "strong": [0-9.]+\}' "$dir/raw.score" || fail "heads without --config"

# export --config writes head names; without it, backend names; the sources come along.
"$T" export --db "$dir/log.db" --config "$dir/triage.conf" --out "$dir/heads.jsonl" 2>"$dir/exp.err" \
    || fail "export --config: $(cat "$dir/exp.err")"
[ "$(wc -l <"$dir/heads.jsonl")" = 50 ] || fail "export lines"
[ "$(grep -c '"outcomes":{"weak":[01].0,"strong":1.0},"sources":{"weak":"judge","strong":"judge"}}$' "$dir/heads.jsonl")" = 40 ] \
    || fail "export two heads: $(head -n 2 "$dir/heads.jsonl")"
[ "$(grep -c '"outcomes":{"weak":[01].0},"sources":{"weak":"judge"}}$' "$dir/heads.jsonl")" = 10 ] \
    || fail "export one head"
grep -q 'outcomes from feedback 0, judge 90, offline 0' "$dir/exp.err" || fail "export summary: $(cat "$dir/exp.err")"
grep -q '130 shadow and judge calls' "$dir/exp.err" || fail "export calls: $(cat "$dir/exp.err")"
"$T" export --db "$dir/log.db" >"$dir/names.jsonl" 2>/dev/null || fail "export to stdout"
grep -q '"outcomes":{"fast":0.0,"strong":1.0}' "$dir/names.jsonl" || fail "export without --config"
# The exported file trains the same heads through --data.
"$T" train --data "$dir/heads.jsonl" --epochs 20 --out "$dir/m3.tmod" 2>/dev/null || fail "train --data"
score "$dir/m3.tmod" "hello" >"$dir/m3.score"
grep -Eq '"p": \{"weak": [0-9.]+, "strong": [0-9.]+\}' "$dir/m3.score" || fail "heads from the exported file"

# stats counts the clients' requests only; the learning calls' spend and labels apart.
"$T" stats --db "$dir/log.db" --window 1h >"$dir/stats.out"
grep -q '^requests 50, errors 0' "$dir/stats.out" || fail "stats requests: $(cat "$dir/stats.out")"
grep -Eq '^fast +50 +100\.0% ' "$dir/stats.out" || fail "stats fast row"
grep -q '^learning: 40 shadow calls (\$0.0400), 90 judge calls (\$0.0900); labels: judge 90, feedback 0, offline 0$' \
    "$dir/stats.out" || fail "stats learning: $(cat "$dir/stats.out")"

# A backend in the log that the config lacks keeps its name, with a warning.
sed '/^\[backend strong\]/,$d' "$dir/triage.conf" | sed 's/tiers = fast, strong/tiers = fast/' \
    >"$dir/fast-only.conf"
"$T" train --db "$dir/log.db" --config "$dir/fast-only.conf" --out "$dir/m4.tmod" 2>"$dir/m4.err" \
    || fail "train with a partial config: $(cat "$dir/m4.err")"
[ "$(grep -c "backend 'strong' in the log is not in" "$dir/m4.err")" = 1 ] || fail "warning: $(cat "$dir/m4.err")"

# A config that does not load is an error (exit 1), named.
set +e
"$T" train --db "$dir/log.db" --config "$dir/missing.conf" --out "$dir/x.tmod" 2>"$dir/bad.err"
rc=$?
set -e
[ "$rc" = 1 ] || fail "missing config exit $rc"
grep -q 'missing.conf' "$dir/bad.err" || fail "missing config message"
[ ! -e "$dir/x.tmod" ] || fail "model written despite the bad config"
"$T" train --help >"$dir/train.help" || fail "train --help exit"
grep -q -- '--config CONF' "$dir/train.help" || fail "train --help"
"$T" export --help >"$dir/export.help" || fail "export --help exit"
grep -q -- '--config CONF' "$dir/export.help" || fail "export --help: $(cat "$dir/export.help")"
echo ok
