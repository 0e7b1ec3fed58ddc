#!/bin/sh
# bench/cascade/run.sh - the cascade against prompt-only routing, offline and prequential, on
# the GSM8K replay data (data/replay/gsm8k.jsonl.gz: both models' recorded answers): models
# learned from judge labels of the first half, tested on the second (cascade_bench.c says how).
# usage: bench/cascade/run.sh [--dev] [--noise P] [--seed N] [--target F] [--margin F]
#                             [--routellm-labels] [--prices FI,FO,SI,SO]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
out=${TMPDIR:-/tmp}/triage-cascade-bench
cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -I"$root/features" -I"$root/router" \
    "$root/bench/cascade/cascade_bench.c" "$root/cli/grade.c" "$root"/router/*.c \
    "$root"/features/*.c -o "$out" $(pkg-config --cflags --libs jansson) -lpthread -lm
gzip -dc "$root/data/replay/gsm8k.jsonl.gz" | nice "$out" "$@"
