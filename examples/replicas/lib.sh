# lib.sh - the pieces examples/replicas/run.sh and tests/ops/test_replicas.sh share
# (sourced, bash): a fake backend, a replica's start, and nginx in front of replicas.
# Needs tests/lib/free_port.sh sourced first.

# replicas_mock DIR MOCKLLM [ARGS...]: starts the fake backend on a free port; sets
# MOCK_PORT and MOCK_PID. Returns 1 when it did not start within 5 s.
replicas_mock() {
    local dir=$1 mock=$2
    shift 2
    "$mock" --port 0 "$@" >"$dir/mock.out" 2>&1 &
    MOCK_PID=$!
    for _ in $(seq 50); do
        MOCK_PORT=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$dir/mock.out")
        [ -n "$MOCK_PORT" ] && return 0
        sleep 0.1
    done
    echo "mockllm did not start: $(cat "$dir/mock.out")" >&2
    return 1
}

# replicas_start TRIAGED CONF LOG PORT: starts a replica (stderr appended to LOG) and
# waits for its /healthz (30 s); sets REPLICA_PID. Returns 1 when it did not come up.
replicas_start() {
    local triaged=$1 conf=$2 log=$3 port=$4
    "$triaged" --config "$conf" 2>>"$log" &
    REPLICA_PID=$!
    for _ in $(seq 300); do
        curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
        kill -0 "$REPLICA_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the replica on port $port did not start:" >&2
    cat "$log" >&2
    return 1
}

# replicas_nginx DIR FAIL_TIMEOUT PORT...: nginx on a free loopback port in front of the
# replicas on PORT...: round robin, keepalive, a replica that refuses connections
# skipped for FAIL_TIMEOUT, a POST resent elsewhere only when the first replica never
# received it, streams unbuffered; each answer says which replica gave it
# (x-upstream). Sets NGINX_PORT and NGINX_PID; waits until it answers (5 s).
replicas_nginx() {
    local dir=$1 fail_timeout=$2 servers="" p
    shift 2
    for p in "$@"; do
        servers+="        server 127.0.0.1:$p max_fails=1 fail_timeout=$fail_timeout;"$'\n'
    done
    NGINX_PORT=$(free_port)
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
$servers        keepalive 32;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://triage;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;               # SSE streams through
            proxy_next_upstream error timeout; # never resend a POST a replica has read
            add_header x-upstream \$upstream_addr always;
        }
    }
}
CONF
    nginx -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log" &
    NGINX_PID=$!
    for _ in $(seq 50); do
        curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/healthz" && return 0
        sleep 0.1
    done
    echo "nginx did not start: $(cat "$dir/nginx/error.log")" >&2
    return 1
}
