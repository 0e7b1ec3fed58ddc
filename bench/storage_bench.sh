#!/bin/sh
# storage_bench.sh - builds bench/storage_bench.c against storage/ and runs it.
# usage: bench/storage_bench.sh [storage_bench options]   (default: 500k records, 2 threads)
# -d takes a SQLite file or a postgresql:// URL (bench/storage_pg_bench.sh compares both).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${TMPDIR:-/tmp}/triage-storage-bench
# storage.c reads TRIAGE_HAVE_POSTGRESQL from meson's config.h: this build has libpq.
mkdir -p "$out.inc"
echo '#define TRIAGE_HAVE_POSTGRESQL 1' >"$out.inc/config.h"
cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -I"$root/storage" -I"$out.inc" \
    "$root/bench/storage_bench.c" "$root/storage/storage.c" "$root/storage/stats.c" \
    "$root/storage/export.c" "$root/storage/registry.c" "$root/storage/db_sqlite.c" \
    "$root/storage/db_pg.c" -o "$out" \
    $(pkg-config --cflags --libs sqlite3 libpq jansson) -lpthread -lm
exec "$out" "$@"
