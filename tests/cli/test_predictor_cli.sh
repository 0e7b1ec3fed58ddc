#!/usr/bin/env bash
# test_predictor_cli.sh - the public formats of `triage train|score|eval|calibrate` and their exit codes.
# usage: test_predictor_cli.sh TRIAGE_BINARY
set -euo pipefail
T=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# a labelled set: proofs need the strong backend, greetings do not
for i in $(seq 0 399); do
    if [ $((i % 3)) -eq 0 ]; then
        printf '{"prompt": "Prove theorem %d about integrals $\\\\int x^%d dx$", "outcomes": {"weak": %d.0, "strong": 1.0}, "set": "synthetic", "level": 5}\n' \
            "$i" $((i % 7)) $((i % 2))
    else
        printf '{"prompt": "Say hello to friend %d", "outcomes": {"weak": 1.0, "strong": 1.0}, "set": "synthetic", "level": 1}\n' "$i"
    fi
done >"$dir/train.jsonl"
printf '%s\n' '{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}], "outcomes": {"weak": 1, "strong": 1}}' \
    >>"$dir/train.jsonl"
gzip -c "$dir/train.jsonl" >"$dir/train.jsonl.gz"

# --help on every command, exit 0 and a usage line
for c in train score eval calibrate; do
    "$T" "$c" --help | grep -q "usage: triage $c" || fail "$c --help"
done
# usage errors exit 2
set +e
"$T" train --data "$dir/train.jsonl" >/dev/null 2>&1; [ $? -eq 2 ] || fail "train without --out should exit 2"
"$T" score >/dev/null 2>&1; [ $? -eq 2 ] || fail "score without --model should exit 2"
"$T" calibrate --model x --strong-share 2 >/dev/null 2>&1; [ $? -eq 2 ] || fail "share 2 should exit 2"
"$T" train --data "$dir/train.jsonl" --out "$dir/m" --epochs 0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "epochs 0"
set -e

# train: plain and gzip input give the same model; the same seed gives the same bytes
"$T" train --data "$dir/train.jsonl" --out "$dir/a.tmod" --seed 3 --bits 14 --dim 4 2>/dev/null
"$T" train --data "$dir/train.jsonl.gz" --out "$dir/b.tmod" --seed 3 --bits 14 --dim 4 2>/dev/null
cmp -s "$dir/a.tmod" "$dir/b.tmod" || fail "gzip and plain input trained different models"
"$T" train --data "$dir/train.jsonl" --out "$dir/c.tmod" --seed 4 --bits 14 --dim 4 2>/dev/null
cmp -s "$dir/a.tmod" "$dir/c.tmod" && fail "a different seed gave the same model"

# train rejects bad lines with file:line
printf '{"prompt":"x","outcomes":{"weak":1}}\n{"prompt":"y","outcomes":{"weak":2}}\n' >"$dir/bad.jsonl"
set +e
err=$("$T" train --data "$dir/bad.jsonl" --out "$dir/bad.tmod" 2>&1); rc=$?
set -e
[ $rc -eq 1 ] || fail "bad outcome should exit 1"
echo "$err" | grep -q "bad.jsonl:2:" || fail "error should name bad.jsonl:2: got '$err'"

# score: one JSON object per input line, in order, errors in place
printf '%s\n' '{"prompt":"Say hello to friend 3"}' 'not json' \
    '{"messages":[{"role":"user","content":"Prove theorem 9 about integrals $\\int x^2 dx$"}]}' \
    '{"messages":[]}' >"$dir/in.jsonl"
set +e
"$T" score --model "$dir/a.tmod" <"$dir/in.jsonl" >"$dir/out.jsonl"; rc=$?
set -e
[ $rc -eq 1 ] || fail "score with bad lines should exit 1"
[ "$(wc -l <"$dir/out.jsonl")" -eq 4 ] || fail "score should print 4 lines"
num='(0|1)\.[0-9]{6}'
ok="^\\{\"score\": $num, \"p\": \\{\"weak\": $num, \"strong\": $num\\}\\}\$"
sed -n 1p "$dir/out.jsonl" | grep -Eq "$ok" || fail "score line 1: $(sed -n 1p "$dir/out.jsonl")"
sed -n 3p "$dir/out.jsonl" | grep -Eq "$ok" || fail "score line 3: $(sed -n 3p "$dir/out.jsonl")"
sed -n 2p "$dir/out.jsonl" | grep -q '^{"error": "line 2: ' || fail "score line 2 should be an error"
sed -n 4p "$dir/out.jsonl" | grep -q '^{"error": "line 4: ' || fail "score line 4 should be an error"
a=$(sed -n 1p "$dir/out.jsonl" | sed 's/^{"score": \([0-9.]*\),.*/\1/')
b=$(sed -n 3p "$dir/out.jsonl" | sed 's/^{"score": \([0-9.]*\),.*/\1/')
awk -v a="$a" -v b="$b" 'BEGIN { exit !(b > a) }' || fail "the proof should score above the greeting ($b <= $a)"
"$T" score --model "$dir/a.tmod" <"$dir/train.jsonl" | wc -l | grep -qx 401 || fail "score line count"
set +e
"$T" score --model "$dir/nonexistent.tmod" </dev/null 2>"$dir/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "nonexistent.tmod" "$dir/err" || fail "missing model should exit 1 naming it"
head -c 100 "$dir/a.tmod" >"$dir/trunc.tmod"
set +e
"$T" score --model "$dir/trunc.tmod" </dev/null 2>"$dir/err"; rc=$?
set -e
[ $rc -eq 1 ] && grep -q "size mismatch" "$dir/err" || fail "truncated model should be rejected"

# eval: a header and a model row with APGR, CPT(50%), CPT(80%), AUC
"$T" eval --model "$dir/a.tmod" --data "$dir/train.jsonl" --weak weak --strong strong >"$dir/eval" 2>/dev/null
grep -q "APGR" "$dir/eval" && grep -q "CPT(50%)" "$dir/eval" && grep -q "CPT(80%)" "$dir/eval" &&
    grep -q "AUC" "$dir/eval" || fail "eval header: $(cat "$dir/eval")"
apgr=$(awk '$1 == "model" {print $3}' "$dir/eval")
awk -v a="$apgr" 'BEGIN { exit !(a > 0.8 && a <= 1.0) }' ||
    fail "APGR on the training set should be high, got $apgr"
"$T" eval --cv 3 --data "$dir/train.jsonl" --weak weak --strong strong --baselines --bits 14 \
    --dim 4 --markdown --label synth >"$dir/cv" 2>/dev/null
for s in model-cv lr-cv length random; do
    grep -q "| synth | $s |" "$dir/cv" || fail "cv row $s missing: $(cat "$dir/cv")"
done
"$T" eval --model "$dir/a.tmod" --data "$dir/train.jsonl" --spearman level 2>/dev/null |
    grep -q "^spearman(score, level) 0\.[5-9]" || fail "spearman of level"
set +e
"$T" eval --model "$dir/a.tmod" --data "$dir/train.jsonl" --weak weak --strong nope >/dev/null 2>&1
[ $? -eq 1 ] || fail "unknown outcome name should exit 1"
set -e

# calibrate: a number; larger shares give lower thresholds; share 1 is the minimum score
t30=$("$T" calibrate --model "$dir/a.tmod" --data "$dir/train.jsonl" --strong-share 0.3 2>/dev/null)
t70=$("$T" calibrate --model "$dir/a.tmod" --data "$dir/train.jsonl" --strong-share 0.7 2>/dev/null)
tref=$("$T" calibrate --model "$dir/a.tmod" --strong-share 0.3)
awk -v a="$t30" -v b="$t70" -v r="$tref" 'BEGIN { d = r - a; if (d < 0) d = -d; exit !(b < a && d < 0.05) }' ||
    fail "calibrate: share 0.3 -> $t30, 0.7 -> $t70, reference 0.3 -> $tref"
# about 30% of the data scores at or above t30 (ties make it approximate)
"$T" score --model "$dir/a.tmod" <"$dir/train.jsonl" >"$dir/scores"
share=$(sed 's/^{"score": \([0-9.]*\),.*/\1/' "$dir/scores" |
    awk -v t="$t30" '$1 >= t - 5e-7 { k++ } END { print k / NR }')
awk -v s="$share" 'BEGIN { exit !(s >= 0.25 && s <= 0.40) }' || fail "calibrated share $share"
# calibrate --tiers 40,40: two cuts, the second the same as a strong share of 20%, the
# first as one of 60%; the last tier may name its share; shares past 100% exit 2
cuts=$("$T" calibrate --model "$dir/a.tmod" --data "$dir/train.jsonl" --tiers 40,40 | tr '\n' ' ')
t60=$("$T" calibrate --model "$dir/a.tmod" --data "$dir/train.jsonl" --strong-share 0.6)
t20=$("$T" calibrate --model "$dir/a.tmod" --data "$dir/train.jsonl" --strong-share 0.2)
[ "$cuts" = "$t60 $t20 " ] || fail "calibrate --tiers 40,40: '$cuts', want '$t60 $t20 '"
cuts2=$("$T" calibrate --model "$dir/a.tmod" --data "$dir/train.jsonl" --tiers 40%,40%,20% | tr '\n' ' ')
[ "$cuts2" = "$cuts" ] || fail "calibrate --tiers 40%,40%,20%: '$cuts2'"
set +e
"$T" calibrate --model "$dir/a.tmod" --tiers 40,70 >/dev/null 2>&1; [ $? -eq 2 ] || fail "tiers 110% should exit 2"
"$T" calibrate --model "$dir/a.tmod" --tiers 40,x >/dev/null 2>&1; [ $? -eq 2 ] || fail "tiers 40,x should exit 2"
"$T" calibrate --model "$dir/a.tmod" --tiers 40 --strong-share 0.3 >/dev/null 2>&1; [ $? -eq 2 ] ||
    fail "tiers and strong-share together should exit 2"
set -e
# the shipped model: heads weak and strong (conf/triage.conf maps backends to them), and
# a maths problem needs the strong backend more than a greeting does
if [ -n "${TRIAGE_SOURCE_ROOT:-}" ] && [ -f "$TRIAGE_SOURCE_ROOT/models/default.tmod" ]; then
    printf '%s\n' '{"messages":[{"role":"user","content":"hi"}]}' \
        '{"messages":[{"role":"user","content":"Let f(x) = x^3 - 3x + 1. Find the number of real roots of f(f(x)) = 0."}]}' |
        "$T" score --model "$TRIAGE_SOURCE_ROOT/models/default.tmod" >"$dir/default"
    grep -Eq "$ok" "$dir/default" || fail "default model output: $(cat "$dir/default")"
    a=$(sed -n 1p "$dir/default" | sed 's/^{"score": \([0-9.]*\),.*/\1/')
    b=$(sed -n 2p "$dir/default" | sed 's/^{"score": \([0-9.]*\),.*/\1/')
    awk -v a="$a" -v b="$b" 'BEGIN { exit !(b > a + 0.05) }' ||
        fail "default model: maths $b should score well above a greeting $a"
fi
echo "ok"
