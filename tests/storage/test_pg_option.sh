#!/bin/sh
# test_pg_option.sh - a postgresql:// target in a build without the PostgreSQL engine
# (meson option postgresql, libpq-dev absent) is a clear error that names the option:
# triaged refuses the config at start (exit non-zero, no crash), the CLI's --db too.
# In a build with the engine, an unreachable URL is a clear error as well.
# usage: test_pg_option.sh TRIAGED TRIAGE
set -u
triaged=$1 triage=$2
dir=$(mktemp -d /tmp/triage-pg-option-XXXXXX)
trap 'rm -rf "$dir"' EXIT
failed=0
fail() { echo "FAIL: $*"; failed=1; }

url="postgresql:///triage?host=$dir/nowhere&user=triage"
cat >"$dir/t.conf" <<CONF
[server]
listen = 127.0.0.1
port = 65000
[storage]
url = $url
[backend fast]
url = http://127.0.0.1:9/v1
model = small
CONF

# run NAME WANT COMMAND...: wants a failure (not a signal, not a hang) and WANT on stderr.
run() {
    name=$1 want=$2
    shift 2
    rc=0
    timeout 20 "$@" >"$dir/out" 2>"$dir/err" || rc=$?
    if [ "$rc" -eq 0 ] || [ "$rc" -ge 124 ]; then
        fail "$name: exit $rc (wanted an error): $(cat "$dir/err")"
        return
    fi
    if ! grep -q -- "$want" "$dir/err"; then
        fail "$name: stderr does not say '$want': $(cat "$dir/err")"
        return
    fi
    echo "ok   $name (exit $rc): $(head -c 300 "$dir/err" | tr '\n' ' ')"
}

if [ "${TRIAGE_POSTGRESQL:-}" = disabled ]; then
    run "triaged with [storage] url" '-Dpostgresql=enabled' "$triaged" --config "$dir/t.conf"
    run "triage stats --db URL" '-Dpostgresql=enabled' "$triage" stats --db "$url"
    run "triage export --db URL" '-Dpostgresql=enabled' "$triage" export --db "$url" --out "$dir/x.jsonl"
    run "triage models list --db URL" '-Dpostgresql=enabled' "$triage" models list --db "$url"
else
    # The engine is there: the same commands name the server that is not there.
    run "triage stats --db URL (no server)" 'nowhere' "$triage" stats --db "$url"
    run "triage export --db URL (no server)" 'nowhere' "$triage" export --db "$url" --out "$dir/x.jsonl"
    run "triage models list --db URL (no server)" 'nowhere' "$triage" models list --db "$url"
fi
exit "$failed"
