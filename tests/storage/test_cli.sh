#!/bin/sh
# test_cli.sh - `triage stats` and `triage export` against a seeded log.
# usage: test_cli.sh TRIAGE SEED_DB
set -eu
triage=$1 seed=$2
dir=$(mktemp -d /tmp/triage-storage-cli-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$seed" "$dir/t.db"

# Table: per-backend rows, shares, the saving line, the timeout in recent errors.
"$triage" stats --db "$dir/t.db" --window 1h --price fast=1:1 --price strong=20:20 >"$dir/out"
grep -Eq '^fast +3 +60\.0% +0 ' "$dir/out" || fail "fast row: $(cat "$dir/out")"
grep -Eq '^strong +2 +40\.0% +1 ' "$dir/out" || fail "strong row"
# baseline 5 * 0.04 = 0.2, actual 3 * 0.002 + 2 * 0.04 = 0.086, saving 0.114 = 57.0%
grep -q 'everything to strong: \$0.1140 of \$0.2000 (57.0%)' "$dir/out" || fail "saving: $(cat "$dir/out")"
grep -q 'upstream_timeout' "$dir/out" || fail "recent errors"
# whose errors: the strong timeout is that backend's own; no 4xx, no fallback
grep -q '^backend errors 1, client errors 0, fallbacks 0$' "$dir/out" || fail "error split: $(cat "$dir/out")"

# JSON: the same document as /v1/stats.
"$triage" stats --db "$dir/t.db" --window 15m --json >"$dir/json"
grep -q '"requests": 5' "$dir/json" || fail "json requests"
grep -q '"saving": null' "$dir/json" || fail "json saving without prices"

# Usage errors exit 2.
if "$triage" stats --db "$dir/t.db" --window 2h >/dev/null 2>&1; then fail "2h accepted"; fi
rc=0; "$triage" stats --db "$dir/t.db" --window 2h >/dev/null 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "bad window exit $rc"
rc=0; "$triage" stats --db "$dir/missing.db" >/dev/null 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "missing db exit $rc"
[ ! -e "$dir/missing.db" ] || fail "stats created a database"

# Export: two labelled prompts; skipped rows are reported on stderr.
"$triage" export --db "$dir/t.db" --out "$dir/train.jsonl" 2>"$dir/err"
[ "$(wc -l <"$dir/train.jsonl")" = 2 ] || fail "export lines: $(cat "$dir/train.jsonl")"
grep -qx '{"messages":\[{"role":"user","content":"hi"}\],"outcomes":{"fast":1.0},"sources":{"fast":"feedback"}}' "$dir/train.jsonl" \
    || fail "export hi: $(cat "$dir/train.jsonl")"
grep -qx '{"messages":\[{"role":"user","content":"hard"}\],"outcomes":{"strong":0.0},"sources":{"strong":"feedback"}}' "$dir/train.jsonl" \
    || fail "export hard"
grep -q '2 examples from 5 requests' "$dir/err" || fail "export summary: $(cat "$dir/err")"
grep -q 'skipped 2 requests without prompt text or features (store_prompts = full or features' "$dir/err" || fail "no_prompt"
grep -q 'skipped 1 requests without feedback or outcome' "$dir/err" || fail "no_outcome"
grep -q 'outcomes from feedback 2, judge 0, offline 0' "$dir/err" || fail "by source"
[ ! -e "$dir/train.jsonl.tmp" ] || fail "temp file left"
# To stdout too.
[ "$("$triage" export --db "$dir/t.db" 2>/dev/null | wc -l)" = 2 ] || fail "export stdout"
echo ok
