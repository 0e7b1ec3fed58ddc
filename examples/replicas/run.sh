#!/usr/bin/env bash
# examples/replicas/run.sh - many replicas, one log, on this machine: a throwaway
# PostgreSQL cluster (Debian's postgresql package) on a socket in a temp directory,
# three triaged replicas sharing it, nginx in front, all on loopback. A fake backend
# (tests/mock/mockllm) answers, so no API key is needed. Ctrl-C stops everything and
# removes the directory.
#
# usage: examples/replicas/run.sh [BUILD_DIR] [--once]
#   BUILD_DIR default: build (meson setup build && ninja -C build). --once: stop after the
#   summary, exit 1 unless every replica's /v1/stats counts the 6 requests sent (the
#   suite runs it so: tests/ops/meson.build, 'replicas example').
# Then:  curl -s localhost:$PORT/v1/chat/completions -H "authorization: Bearer $KEY" \
#            -d '{"model":"triage","messages":[{"role":"user","content":"hi"}]}'
#        curl -s localhost:$PORT/v1/stats -H "authorization: Bearer $KEY"   (any replica: the same)
#        BUILD_DIR/cli/triage key list --file $DIR/keys --db "$URL"          (spend per key)
# Needs: postgresql, nginx, curl (Debian packages). Run as root, the server runs as the
# postgres user (initdb refuses root).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
once=0
[ "${2:-}" = --once ] && once=1
build=$(cd "${1:-$root/build}" && pwd)
for exe in daemon/triaged cli/triage tests/mock/mockllm tests/ops/toy_model; do
    [ -x "$build/$exe" ] || { echo "missing $build/$exe: build first (meson setup build && ninja -C build)"; exit 1; }
done
command -v nginx >/dev/null || { echo "needs nginx (apt-get install nginx)"; exit $((once ? 77 : 1)); }
source "$root/tests/lib/pg.sh"
source "$root/tests/lib/free_port.sh"
source "$root/examples/replicas/lib.sh" # shared with tests/ops/test_replicas.sh

dir=$(mktemp -d /tmp/triage-replicas.XXXXXX)
chmod 755 "$dir"
pids=()
stop() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    pg_stop
    rm -rf "$dir"
}
trap stop EXIT INT TERM

# 1. PostgreSQL: initdb + pg_ctl in $dir/pg, socket only, database "triage".
pg_start "$dir/pg"
echo "PostgreSQL: $PG_URL"

# 2. A fake backend and a routing model (a real deployment points at real backends).
replicas_mock "$dir" "$build/tests/mock/mockllm" --latency-ms 20
pids+=("$MOCK_PID")
mport=$MOCK_PORT
"$build/tests/ops/toy_model" "$dir/model.tmod"

# 3. One client key with a budget of $1 per day.
key=$("$build/cli/triage" key add --file "$dir/keys" demo --budget-usd 1/day 2>/dev/null)

# 4. Three replicas: the same config but the port; [storage] url makes them share the log.
ports=()
for i in 1 2 3; do
    port=$(free_port)
    ports+=("$port")
    cat >"$dir/r$i.conf" <<CONF
[server]
listen = 127.0.0.1
port = $port
[auth]
keys_file = $dir/keys
# each replica enforces a third of these: nginx spreads a key over the three
rate_limit_rpm = 600
rate_limit_replicas = 3
budget_refresh_ms = 1000
[router]
model = $dir/model.tmod
policy = threshold
threshold = 0.5
tiers = fast, strong
[storage]
url = $PG_URL
store_prompts = hash
[learning]
models_dir = $dir/models
[backend fast]
url = http://127.0.0.1:$mport/v1
model = small
head = weak
price_input = 0.15
price_output = 0.6
[backend strong]
url = http://127.0.0.1:$mport/v1
model = large
head = strong
price_input = 2.5
price_output = 10
CONF
    replicas_start "$build/daemon/triaged" "$dir/r$i.conf" "$dir/r$i.log" "$port"
    pids+=("$REPLICA_PID")
done

# 5. nginx in front: round robin, a replica that refuses connections is skipped.
replicas_nginx "$dir" 5s "${ports[@]}"
pids+=("$NGINX_PID")
nport=$NGINX_PORT

for n in 1 2 3 4 5 6; do
    curl -s -o /dev/null "http://127.0.0.1:$nport/v1/chat/completions" -H "authorization: Bearer $key" \
        -d '{"model":"triage","messages":[{"role":"user","content":"hello number '$n'"}]}'
done
echo
echo "nginx:    http://127.0.0.1:$nport  (replicas on ${ports[*]})"
echo "key:      $key   (budget \$1/day; DIR=$dir)"
echo "URL:      $PG_URL"
same=1
for p in "${ports[@]}"; do
    for _ in $(seq 100); do # the rows reach PostgreSQL within a flush_interval_ms or so
        n=$(curl -s "http://127.0.0.1:$p/v1/stats?window=1h" -H "authorization: Bearer $key" |
            grep -o '"requests": *[0-9]*' | head -1 | grep -o '[0-9]*$')
        [ "$n" = 6 ] && break
        sleep 0.1
    done
    printf 'replica %s /v1/stats: requests %s\n' "$p" "$n"
    [ "$n" = 6 ] || same=0
done
"$build/cli/triage" key list --file "$dir/keys" --db "$PG_URL"
if [ "$once" = 1 ]; then
    [ "$same" = 1 ] && echo "ok: every replica counts the 6 requests" && exit 0
    echo "FAIL: a replica's stats miss requests"; exit 1
fi
echo "Ctrl-C stops it all."
wait
