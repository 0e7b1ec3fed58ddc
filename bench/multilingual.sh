#!/bin/sh
# multilingual.sh - how far apart a model scores the same prompt written in different languages
# (tests/features/multilingual.jsonl: the same prompts in English, German, French, Spanish,
# Russian, Chinese and Japanese). Prints, per language, the mean signed and mean absolute
# difference from the English score, then the mean absolute deviation from English over all
# languages and the spread (highest minus lowest score of one prompt over its languages), mean
# and max. Figures, not pass/fail (tests/features/test_multilingual.sh holds the bound).
#
# usage: bench/multilingual.sh [BUILD_DIR (build)] [MODEL (models/default.tmod)] [SET]
# --per-prompt as the first argument adds one line per prompt with its scores.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
per_prompt=0
if [ "${1:-}" = --per-prompt ]; then per_prompt=1; shift; fi
build=${1:-build}
model=${2:-$root/models/default.tmod}
set=${3:-$root/tests/features/multilingual.jsonl}
[ -x "$build/cli/triage" ] || build=$root/$build
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
"$build/cli/triage" score --model "$model" <"$set" >"$tmp"
echo "model $model, set $set ($(wc -l <"$set") prompts)"
exec awk -v per_prompt="$per_prompt" -f "$root/bench/multilingual.awk" "$set" "$tmp"
