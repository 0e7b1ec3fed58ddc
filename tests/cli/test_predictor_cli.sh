#!/usr/bin/env bash
# test_predictor_cli.sh - the public formats of `triage train|score|eval|calibrate` and their exit codes.
# usage: test_predictor_cli.sh TRIAGE_BINARY
set -euo pipefail
T=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# a labelled set: proofs need the strong backend, greetings do not
python3 - "$dir" <<'PY'
import gzip, json, sys
d = sys.argv[1]
rows = []
for i in range(400):
    hard = i % 3 == 0
    p = (f"Prove theorem {i} about integrals $\\int x^{i % 7} dx$" if hard
         else f"Say hello to friend {i}")
    rows.append({"prompt": p, "outcomes": {"weak": float(i % 2) if hard else 1.0, "strong": 1.0},
                 "set": "synthetic", "level": 5 if hard else 1})
rows.append({"messages": [{"role": "system", "content": "be brief"},
                          {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}],
             "outcomes": {"weak": 1, "strong": 1}})
with open(f"{d}/train.jsonl", "w") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
with gzip.open(f"{d}/train.jsonl.gz", "wt") as f:
    for r in rows:
        f.write(json.dumps(r) + "\n")
PY

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
python3 - "$dir/out.jsonl" <<'PY' || fail "score output format"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
a, bad, b, empty = lines
for o in (a, b):
    assert set(o) == {"score", "p"}, o
    assert list(o["p"]) == ["weak", "strong"], o
    assert 0 <= o["score"] <= 1 and all(0 <= v <= 1 for v in o["p"].values()), o
assert "error" in bad and "line 2" in bad["error"], bad
assert "error" in empty and "line 4" in empty["error"], empty
assert b["score"] > a["score"], (a, b)
PY
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
python3 -c "import sys; a = float('$apgr'); sys.exit(0 if 0.8 < a <= 1.0 else 1)" ||
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
python3 - "$t30" "$t70" "$tref" <<'PY' || fail "calibrate: $t30 $t70 $tref"
import sys
t30, t70, tref = map(float, sys.argv[1:4])
assert t70 < t30, (t30, t70)
assert abs(tref - t30) < 0.05, (tref, t30)  # the model's reference set is the training set
PY
# about 30% of the data scores at or above t30
"$T" score --model "$dir/a.tmod" <"$dir/train.jsonl" >"$dir/scores"
python3 - "$dir/scores" "$t30" <<'PY' || fail "calibrated share"
import json, sys
s = [json.loads(l)["score"] for l in open(sys.argv[1])]
t = float(sys.argv[2])
share = sum(x >= t - 5e-7 for x in s) / len(s)
assert 0.25 <= share <= 0.40, share  # ties make it approximate
PY
echo "ok"
