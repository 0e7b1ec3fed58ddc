#!/bin/sh
# quality_speed.sh - builds bench/quality_speed.c against features/ and router/ and runs it.
# usage: bench/quality_speed.sh [MODEL (models/default.tmod)]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${TMPDIR:-/tmp}/triage-quality-speed
cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -I"$root/features" -I"$root/router" \
    "$root/bench/quality_speed.c" "$root"/router/*.c "$root"/features/*.c \
    -o "$out" \
    $(pkg-config --cflags --libs jansson) -lpthread -lm
cd "$root"
exec "$out" "$@"
