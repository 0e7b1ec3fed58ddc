#!/bin/sh
# train_default.sh - rebuilds models/default.tmod from the data shipped in data/ (deterministic:
# the same data, options and seed give the same bytes).
# usage: tools/train_default.sh [BUILD_DIR (build)]
#
# GSM8K's test questions are held out of the default model: RouteLLM's GSM8K set *is*
# that test set (it serves the cross-validation in bench/quality.sh), and the
# converter drops the LLMRouter prompts that contain one, so `triage demo`, which
# replays them, measures routing on prompts the model has never seen.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
[ -x "$build/cli/triage" ] || build=$root/$build
cd "$root"
exec "$build/cli/triage" train \
    --data data/routellm_mmlu.jsonl.gz \
    --data data/mmlu_pro.jsonl.gz \
    --data data/llmrouter_train.jsonl.gz \
    --data data/math_train.jsonl.gz \
    --strong strong --weak weak \
    --dim 0 --lr 0.01 --score-mix 0.75 --epochs 6 --seed 1 \
    --out models/default.tmod
