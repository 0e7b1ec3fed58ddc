#!/usr/bin/env bash
# examples/replicas/run.sh - many replicas, one log, on this machine: a throwaway
# PostgreSQL cluster (Debian's postgresql package) on a socket in a temp directory,
# three triaged replicas sharing it, nginx in front, all on loopback. A fake backend
# (tests/mock/mockllm) answers, so no API key is needed. Ctrl-C stops everything and
# removes the directory.
#
# usage: examples/replicas/run.sh [BUILD_DIR]   (default: build; meson setup build && ninja -C build)
# Then:  curl -s localhost:$PORT/v1/chat/completions -H "authorization: Bearer $KEY" \
#            -d '{"model":"triage","messages":[{"role":"user","content":"hi"}]}'
#        curl -s localhost:$PORT/v1/stats -H "authorization: Bearer $KEY"   (any replica: the same)
#        BUILD_DIR/cli/triage key list --file $DIR/keys --db "$URL"          (spend per key)
# Needs: postgresql, nginx, curl (Debian packages). Run as root, the server runs as the
# postgres user (initdb refuses root).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
for exe in daemon/triaged cli/triage tests/mock/mockllm tests/ops/toy_model; do
    [ -x "$build/$exe" ] || { echo "missing $build/$exe: build first (meson setup build && ninja -C build)"; exit 1; }
done
command -v nginx >/dev/null || { echo "needs nginx (apt-get install nginx)"; exit 1; }
source "$root/tests/lib/pg.sh"
source "$root/tests/lib/free_port.sh"

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
"$build/tests/mock/mockllm" --port 0 --latency-ms 20 >"$dir/mock.out" 2>&1 &
pids+=($!)
until mport=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$dir/mock.out") && [ -n "$mport" ]; do sleep 0.1; done
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
    "$build/daemon/triaged" --config "$dir/r$i.conf" 2>"$dir/r$i.log" &
    pids+=($!)
done
for p in "${ports[@]}"; do
    until curl -sf "http://127.0.0.1:$p/healthz" >/dev/null; do sleep 0.1; done
done

# 5. nginx in front: round robin, a replica that refuses connections is skipped.
nport=$(free_port)
mkdir -p "$dir/nginx"
cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/body;
    proxy_temp_path $dir/nginx/proxy;
    fastcgi_temp_path $dir/nginx/fastcgi;
    uwsgi_temp_path $dir/nginx/uwsgi;
    scgi_temp_path $dir/nginx/scgi;
    upstream triage {
        server 127.0.0.1:${ports[0]} max_fails=1 fail_timeout=5s;
        server 127.0.0.1:${ports[1]} max_fails=1 fail_timeout=5s;
        server 127.0.0.1:${ports[2]} max_fails=1 fail_timeout=5s;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$nport;
        location / {
            proxy_pass http://triage;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;              # SSE streams through
            proxy_next_upstream error timeout; # never resend a POST a replica has read
        }
    }
}
CONF
nginx -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log" &
pids+=($!)
until curl -s -o /dev/null "http://127.0.0.1:$nport/healthz"; do sleep 0.1; done

for n in 1 2 3 4 5 6; do
    curl -s -o /dev/null "http://127.0.0.1:$nport/v1/chat/completions" -H "authorization: Bearer $key" \
        -d '{"model":"triage","messages":[{"role":"user","content":"hello number '$n'"}]}'
done
sleep 1
echo
echo "nginx:    http://127.0.0.1:$nport  (replicas on ${ports[*]})"
echo "key:      $key   (budget \$1/day; DIR=$dir)"
echo "URL:      $PG_URL"
for p in "${ports[@]}"; do
    printf 'replica %s /v1/stats: requests %s\n' "$p" \
        "$(curl -s "http://127.0.0.1:$p/v1/stats?window=1h" -H "authorization: Bearer $key" | sed -n 's/.*"requests": *\([0-9]*\).*/\1/p' | head -1)"
done
"$build/cli/triage" key list --file "$dir/keys" --db "$PG_URL"
echo "Ctrl-C stops it all."
wait
