#!/bin/sh
# bench/learn/families.sh - the learning loop on prompt families the base model never saw,
# offline and deterministic (families.c says how): for each family, a base model trained
# without it, then challengers trained by the daemon's retraining recipe
# (router_train_log) on the base plus N judged prompts of the family, APGR on the family's
# other prompts. DEV families are the ones to tune on; TEST families are only reported.
#
#   bench/learn/families.sh [--split dev|test|all] [--noise P (0.03)] [--seed N (1)]
#                           [--n 50,100,200,400] [--only FAMILY] [--jobs J (2)]
#
# Needs a C compiler and jansson (as the daemon's build); builds the helper from the
# tree it sits in. About 7 min for all families with --jobs 2 on 2 busy cores; --split dev
# about half that.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${TMPDIR:-/tmp}/triage-learn-families
cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -I"$root/features" -I"$root/router" \
    "$root/bench/learn/families.c" "$root"/router/*.c "$root"/features/*.c -o "$out" \
    $(pkg-config --cflags --libs jansson) -lpthread -lm
d=$root/data
gzip -dc "$d/routellm_mmlu.jsonl.gz" "$d/mmlu_pro.jsonl.gz" "$d/llmrouter_train.jsonl.gz" \
    "$d/math_train.jsonl.gz" "$d/llmrouter_test.jsonl.gz" "$d/routellm_gsm8k.jsonl.gz" |
    nice "$out" "$@"
