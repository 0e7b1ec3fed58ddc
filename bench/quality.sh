#!/usr/bin/env bash
# quality.sh - the predictor's quality benchmark: 5-fold cross-validation per dataset (model,
# logistic regression, prompt length, random), MATH difficulty levels, and generalisation to
# datasets left out of training. Prints markdown tables; figures, not pass/fail.
#
# usage: bench/quality.sh [BUILD_DIR (build)] [training options for the model...]
# The model's options default to MODEL_OPTS below (the ones models/default.tmod uses).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
shift || true
[ -x "$build/cli/triage" ] || build=$root/$build
T=$build/cli/triage
D=$root/data
MODEL_OPTS=(--dim 0 --lr 0.01 --score-mix 0.75 --epochs 6 --seed 1)
BAG_OPTS=(--dim 16 --lr 0.01 --lr-hidden 0.003 --score-mix 1 --epochs 6 --seed 1)
[ $# -gt 0 ] && MODEL_OPTS=("$@")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "## 5-fold cross-validation (weak = Mixtral-8x7B-Instruct, strong = GPT-4-1106 / gemini-1.5-pro-002)"
echo
echo "model-cv: ${MODEL_OPTS[*]} (the default model's options); lr-cv: logistic regression on the"
echo "same features and trainer (--dim 0 --score-mix 0); bag16-cv: ${BAG_OPTS[*]}."
echo "Figures are means over the 5 held-out folds; random is the mean of 10 seeds."
echo
first=1
for s in routellm_mmlu:"RouteLLM MMLU" routellm_gsm8k:"RouteLLM GSM8K" mmlu_pro:"MMLU-Pro"; do
    file=${s%%:*}
    label=${s#*:}
    "$T" eval --cv 5 --data "$D/$file.jsonl.gz" --weak weak --strong strong --baselines \
        --markdown --label "$label" "${MODEL_OPTS[@]}" 2>/dev/null >"$tmp/rows"
    # the fastText-style embedding bag (16 hidden units) on the same folds
    "$T" eval --cv 5 --data "$D/$file.jsonl.gz" --weak weak --strong strong --markdown \
        --label "$label" "${BAG_OPTS[@]}" 2>/dev/null | tail -n 1 | sed 's/| model-cv |/| bag16-cv |/' \
        >>"$tmp/rows"
    if [ $first = 1 ]; then cat "$tmp/rows"; first=0; else tail -n +3 "$tmp/rows"; fi
done

echo
echo "## MATH test: Spearman's rho of the score against the difficulty level (1-5)"
echo
echo "| model | trained on | rho(score) | rho(length) |"
echo "|---|---|---|---|"
# The default model's data (tools/train_default.sh): GSM8K's test questions held out.
all=(--data "$D/routellm_mmlu.jsonl.gz"
     --data "$D/mmlu_pro.jsonl.gz" --data "$D/llmrouter_train.jsonl.gz")
"$T" train "${all[@]}" --out "$tmp/nomath.tmod" "${MODEL_OPTS[@]}" 2>/dev/null
"$T" train "${all[@]}" --data "$D/math_train.jsonl.gz" --out "$tmp/all.tmod" "${MODEL_OPTS[@]}" \
    2>"$tmp/train.log"
for m in nomath:"routellm mmlu + mmlu_pro + llmrouter (no MATH)" all:"the same + MATH train levels (= the default model)"; do
    "$T" eval --model "$tmp/${m%%:*}.tmod" --data "$D/math_test.jsonl.gz" --spearman level \
        --baselines 2>/dev/null >"$tmp/rho"
    printf '| %s | %s | %s | %s |\n' "${m%%:*}" "${m#*:}" "$(awk 'NR==1{print $3}' "$tmp/rho")" \
        "$(awk 'NR==2{print $3}' "$tmp/rho")"
done

echo
echo "## Generalisation: trained on the other datasets (+ MATH train), evaluated on one never seen"
echo
echo "| held out | n | APGR | CPT(50%) | CPT(80%) | AUC | length APGR |"
echo "|---|---|---|---|---|---|---|"
sets="routellm_mmlu routellm_gsm8k mmlu_pro llmrouter_train"
for held in $sets; do
    args=()
    for s in $sets; do [ "$s" = "$held" ] || args+=(--data "$D/$s.jsonl.gz"); done
    "$T" train "${args[@]}" --data "$D/math_train.jsonl.gz" --out "$tmp/lodo.tmod" \
        "${MODEL_OPTS[@]}" 2>/dev/null
    "$T" eval --model "$tmp/lodo.tmod" --data "$D/$held.jsonl.gz" --weak weak --strong strong \
        --baselines 2>/dev/null >"$tmp/e"
    awk -v h="$held" '$1=="model"{n=$2; a=$3; c5=$4; c8=$5; auc=$6} $1=="length"{l=$3}
        END{printf "| %s | %s | %s | %s | %s | %s | %s |\n", h, n, a, c5, c8, auc, l}' "$tmp/e"
done
"$T" eval --model "$tmp/all.tmod" --data "$D/llmrouter_test.jsonl.gz" --weak weak --strong strong \
    --baselines 2>/dev/null >"$tmp/e"
awk '$1=="model"{n=$2; a=$3; c5=$4; c8=$5; auc=$6} $1=="length"{l=$3}
    END{printf "| llmrouter_test (all-data model) | %s | %s | %s | %s | %s | %s |\n", n, a, c5, c8, auc, l}' "$tmp/e"

echo
echo "Training on everything ($(grep -o '[0-9]* examples' "$tmp/train.log")):"
grep -o 'trained in [0-9.]*s' "$tmp/train.log" | sed 's/^/  /'
echo "  model file: $(stat -c %s "$tmp/all.tmod") bytes"
