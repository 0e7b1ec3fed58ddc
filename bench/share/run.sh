#!/bin/sh
# run.sh - the strong share held online: streams GSM8K, RouteLLM MMLU, MMLU-Pro and
# LLMRouter prompts through the shipped model and router/share.c offline, and prints the
# realised shares per window size, the reaction to a change of traffic and the cost
# per decision (bench/README.md, "Strong share").
# usage: bench/share/run.sh [MODEL (models/default.tmod)]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${TMPDIR:-/tmp}/triage-share-sim
cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -I"$root/features" -I"$root/router" \
    "$root/bench/share/share_sim.c" "$root"/router/*.c "$root"/features/*.c -o "$out" \
    $(pkg-config --cflags --libs jansson zlib) -lpthread -lm
d=$root/data
exec "$out" "${1:-$root/models/default.tmod}" "$d/routellm_gsm8k.jsonl.gz" \
    "$d/routellm_mmlu.jsonl.gz" "$d/mmlu_pro.jsonl.gz" "$d/llmrouter_test.jsonl.gz"
