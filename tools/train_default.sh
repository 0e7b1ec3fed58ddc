#!/bin/sh
# train_default.sh - rebuilds models/default.tmod from the data shipped in data/ (deterministic:
# the same data, options and seed give the same bytes).
# usage: tools/train_default.sh [BUILD_DIR (build)]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[ -x "$build/cli/triage" ] || build=$root/$build
cd "$root"
exec "$build/cli/triage" train \
    --data data/routellm_mmlu.jsonl.gz \
    --data data/routellm_gsm8k.jsonl.gz \
    --data data/mmlu_pro.jsonl.gz \
    --data data/llmrouter_train.jsonl.gz \
    --data data/math_train.jsonl.gz \
    --strong strong --weak weak \
    --dim 0 --lr 0.01 --score-mix 0.75 --epochs 6 --seed 1 \
    --out models/default.tmod
