#!/usr/bin/env bash
# storage_pg_bench.sh - rows/s into PostgreSQL against SQLite on this machine, same run.
# Starts a throwaway PostgreSQL cluster (Debian's postgresql package; tests/lib/pg.sh),
# then runs bench/storage_bench.sh with the same options on a SQLite file and on a fresh
# PostgreSQL database, alternating ROUNDS times.
# usage: bench/storage_pg_bench.sh [ROUNDS] [storage_bench options]  (default: 2, -n 200000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${1:-2}
shift || true
[ $# -gt 0 ] || set -- -n 200000
source "$root/tests/lib/pg.sh"
tmp=$(mktemp -d /tmp/triage-pgbench.XXXXXX)
chmod 755 "$tmp"
trap 'pg_stop; rm -rf "$tmp"' EXIT
pg_start "$tmp/pg"
# A server as a deployment would run it: fsync on (pg.sh turns it off for tests).
echo "fsync = on" | pg_as tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w restart >/dev/null
for r in $(seq "$rounds"); do
    echo "== round $r: SQLite"
    "$root/bench/storage_bench.sh" -d "$tmp/bench.db" "$@" | grep -E "records|submit|writer|stats"
    echo "== round $r: PostgreSQL (unix socket, fsync on)"
    "$PG_BIN/psql" -q -h "$PG_DIR" -U triage -d postgres -c "DROP DATABASE IF EXISTS b$r" -c "CREATE DATABASE b$r" >/dev/null
    "$root/bench/storage_bench.sh" -d "postgresql:///b$r?host=$PG_DIR&user=triage" "$@" \
        | grep -E "records|submit|writer|stats"
done
