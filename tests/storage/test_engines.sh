#!/usr/bin/env bash
# test_engines.sh - runs test_engines against SQLite and a throwaway PostgreSQL cluster.
# usage: test_engines.sh TEST_ENGINES_BINARY
set -uo pipefail
root=${TRIAGE_SOURCE_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
source "$root/tests/lib/pg.sh"
tmp=$(mktemp -d /tmp/triage-engines.XXXXXX)
chmod 755 "$tmp"
trap 'pg_stop; rm -rf "$tmp"' EXIT
pg_start "$tmp/pg" || { echo "could not start PostgreSQL"; exit 1; }
# The outage test stops and restarts the server with these.
{ declare -f pg_as; echo "pg_as '$PG_BIN/pg_ctl' -D '$PG_DIR/data' -m fast -w stop >/dev/null"; } >"$tmp/stop.sh"
{ declare -f pg_as; echo "pg_as '$PG_BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w start >/dev/null"; } >"$tmp/start.sh"
"$1" "$tmp/log.db" "$PG_URL" "bash $tmp/stop.sh" "bash $tmp/start.sh"
