#!/usr/bin/env bash
# test_models.sh - `triage models`: add, list, promote, rollback on real model files, and its
# errors (exit 1) and usage errors (exit 2).
# usage: test_models.sh TRIAGE MAKE_MODEL
set -euo pipefail
T=$1 make_model=$2
dir=$(mktemp -d /tmp/triage-models-XXXXXX)
trap 'rm -rf "$dir"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
db=$dir/log.db
# expect RC CMD...: runs CMD, output in $dir/out, and fails unless it exits RC.
expect() {
    local want=$1 rc=0
    shift
    "$@" >"$dir/out" 2>&1 || rc=$?
    [ "$rc" = "$want" ] || fail "exit $rc, not $want: $*: $(cat "$dir/out")"
}
has() { grep -Eq -- "$1" "$dir/out" || fail "no /$1/ in: $(cat "$dir/out")"; }

for s in 1 2 3; do "$make_model" "$dir/m$s.tmod" "$s" >/dev/null || fail "make_model $s"; done

# A missing log is an error for everything but add.
expect 1 "$T" models --db "$db"
has 'no such file'
expect 1 "$T" models rollback --db "$db"

# add --promote starts the log; the first model has no parent.
expect 0 "$T" models add "$dir/m1.tmod" --db "$db" --promote
has '^champion: [0-9a-f]{16} '
has '^was: +none'
has 'kill -HUP'
has '/admin/reload'
A=$(sed -n 's/^champion: \([0-9a-f]*\) .*/\1/p' "$dir/out")
# add: a candidate whose parent is the champion.
expect 0 "$T" models add "$dir/m2.tmod" --db "$db"
has '^added [0-9a-f]{16} .* as a candidate'
B=$(sed -n 's/^added \([0-9a-f]*\) .*/\1/p' "$dir/out")
[ "$A" != "$B" ] || fail "one version for two models"

# list: newest first, the champion marked, the lineage shown.
expect 0 "$T" models --db "$db"
has '^ +version +status +source +created \(UTC\) +promoted \(UTC\) +parent +train +holdout'
[ "$(sed -n 2p "$dir/out" | awk '{print $1, $2, $3}')" = "$B candidate manual" ] \
    || fail "newest first: $(cat "$dir/out")"
has "^  $B candidate manual .* $A +- +- +- +- +- +$dir/m2.tmod\$"
has "^\* $A champion +manual .* $dir/m1.tmod\$"
expect 0 "$T" models list --db "$db" --json
[ "$(grep -c '"version"' "$dir/out")" = 2 ] || fail "json rows: $(cat "$dir/out")"
has '"champion": true'
has "\"parent\": \"$A\""
has '"apgr": null'
has '"esc_auc": null'
has '"escalation_from": null'

# add of a known version changes nothing.
expect 0 "$T" models add "$dir/m1.tmod" --db "$db"
has 'in the registry already, champion'

# promote (by a prefix): B serves, A is retired; again: nothing to do.
expect 0 "$T" models promote "${B:0:8}" --db "$db"
has "^champion: $B "
has "^was: +$A\$"
has 'reload'
expect 0 "$T" models --db "$db"
has "^\* $B champion "
has "^  $A retired "
expect 0 "$T" models promote "$B" --db "$db"
has 'champion already'

# rollback: back to A.
expect 0 "$T" models rollback --db "$db"
has "^champion: $A "
has "^was: +$B \(now retired\)"
expect 0 "$T" models --db "$db"
has "^\* $A champion "
has "^  $B retired "
# triage stats shows the versions over time: B promoted, then A back by a rollback.
expect 0 "$T" stats --db "$db"
has '^model versions: 2; changes of champion'
[ "$(grep -E ' (first|promotion|rollback) +-> ' "$dir/out" | awk '{print $3, $5}' | tr '\n' ' ')" = \
    "promotion $B rollback $A " ] || fail "changes: $(cat "$dir/out")"
has "^  $B +retired +manual "
has '^ +version +status +source +created +APGR +vs parent +held out +esc AUC +vs parent +answers$'
expect 0 "$T" stats --db "$db" --json
has '"kind": "rollback"'
has '"esc_auc": null'

# Errors, exit 1: unknown version, ambiguous prefix, missing or corrupt file, a file that
# was replaced, nothing to roll back to.
expect 1 "$T" models promote 0123456789abcdef --db "$db"
has 'no model version "0123456789abcdef"'
expect 1 "$T" models promote "" --db "$db"
has '2 versions start with'
expect 1 "$T" models add "$dir/nope.tmod" --db "$db"
has 'does not load'
head -c 100 "$dir/m3.tmod" >"$dir/short.tmod"
expect 1 "$T" models add "$dir/short.tmod" --db "$db"
has 'short.tmod: does not load'
expect 0 "$T" models add "$dir/m3.tmod" --db "$db"
C=$(sed -n 's/^added \([0-9a-f]*\) .*/\1/p' "$dir/out")
cp "$dir/m2.tmod" "$dir/m3.tmod"
expect 1 "$T" models promote "$C" --db "$db"
has "holds model version $B, not $C"
expect 0 "$T" models --db "$db"
has "^\* $A champion "

# A rollback target whose file is gone is refused and the champion stays.
expect 0 "$T" models promote "$B" --db "$db"
mv "$dir/m1.tmod" "$dir/m1.away"
expect 1 "$T" models rollback --db "$db"
has "not rolled back to $A: $B is champion still"
expect 0 "$T" models --db "$db"
has "^\* $B champion "
mv "$dir/m1.away" "$dir/m1.tmod"

one=$dir/one.db
expect 0 "$T" models add "$dir/m1.tmod" --db "$one" --promote
expect 1 "$T" models rollback --db "$one"
has 'nothing to roll back to'
expect 0 "$T" models --db "$one"
has "^\* $A champion "

# Usage errors, exit 2; help, exit 0.
expect 2 "$T" models
has 'db FILE is required'
expect 2 "$T" models frobnicate --db "$db"
has "unknown action 'frobnicate'"
expect 2 "$T" models promote --db "$db"
has 'promote needs a VERSION'
expect 2 "$T" models add --db "$db"
expect 2 "$T" models rollback extra --db "$db"
has "unexpected argument 'extra'"
expect 2 "$T" models promote "$A" --json --db "$db"
expect 2 "$T" models list --promote --db "$db"
expect 2 "$T" models --bogus --db "$db"
expect 0 "$T" models --help
has 'usage: triage models'
has 'rollback'
expect 0 "$T" --help
has '^  models +model versions'
echo "ok"
