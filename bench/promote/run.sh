#!/bin/sh
# bench/promote/run.sh - the escalation part of a retrain's promotion on the GSM8K replay
# data: champion and challengers on the held-out judged fast answers (promote_bench.c).
# usage: bench/promote/run.sh [--model M] [--noise P] [--seed N] [--escalate-at E]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${TMPDIR:-/tmp}/triage-promote-bench
cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -I"$root/features" -I"$root/router" \
    "$root/bench/promote/promote_bench.c" "$root/cli/grade.c" "$root"/router/*.c \
    "$root"/features/*.c -o "$out" $(pkg-config --cflags --libs jansson) -lpthread -lm
cd "$root"
gzip -dc data/replay/gsm8k.jsonl.gz | nice "$out" "$@"
