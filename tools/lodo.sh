#!/usr/bin/env bash
# Leave-one-dataset-out: train on every other shipped set, evaluate on the held-out one.
# usage: tools/lodo.sh BUILD_DIR [training options...]
set -euo pipefail
T=$1/cli/triage
shift
D=$(dirname "$0")/../data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sets="routellm_mmlu routellm_gsm8k mmlu_pro llmrouter_train"
for held in $sets; do
    args=()
    for s in $sets; do [ "$s" = "$held" ] || args+=(--data "$D/$s.jsonl.gz"); done
    args+=(--data "$D/math_train.jsonl.gz")
    "$T" train "${args[@]}" --out "$tmp/m.tmod" "$@" 2>/dev/null
    printf '%-16s ' "$held"
    "$T" eval --model "$tmp/m.tmod" --data "$D/$held.jsonl.gz" --weak weak --strong strong 2>/dev/null | sed -n 2p
done
"$T" eval --model "$tmp/m.tmod" --data "$D/math_test.jsonl.gz" --spearman level 2>/dev/null
