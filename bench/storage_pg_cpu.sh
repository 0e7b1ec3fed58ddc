#!/usr/bin/env bash
# storage_pg_cpu.sh - the request path's CPU per request with the outcome log in SQLite
# against PostgreSQL, same run: one triaged (pinned to core_test) behind the same wrk
# load, first with [storage] path, then with [storage] url, alternating ROUNDS times;
# CPU = triaged's utime + stime (/proc/PID/stat) over the requests wrk completed. The
# writer thread is in triaged, so its work (prepared INSERTs vs COPY) is counted; the
# PostgreSQL server's own CPU is printed apart.
# usage: bench/storage_pg_cpu.sh [--build DIR] [ROUNDS] [SECONDS]   (default: build-bench, 3, 10)
# Needs: wrk, postgresql (Debian packages), a release build (meson setup build-bench
# -Dbuildtype=release && ninja -C build-bench).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build-bench
if [ "${1:-}" = --build ]; then build=$2; shift 2; fi
rounds=${1:-3} secs=${2:-10}
. "$root/bench/lib.sh"
. "$root/tests/lib/pg.sh"
command -v wrk >/dev/null || { echo "needs wrk"; exit 1; }
bench_setup pgcpu
chmod 755 "$dir"
bench_on_exit() { pg_stop; }
pg_start "$dir/pg" >/dev/null
echo "fsync = on" | pg_as tee -a "$PG_DIR/data/postgresql.conf" >/dev/null
pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w restart >/dev/null
pg_pid=$(pg_as head -1 "$PG_DIR/data/postmaster.pid")

mport=$(free_port)
taskset -c "$core_load" "$build/tests/mock/mockllm" --port "$mport" --latency-ms 0 >/dev/null 2>&1 &
pids+=($!)
wait_port "$mport"
cat >"$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = '{"model":"triage","messages":[{"role":"user","content":"what is the capital of France?"}]}'
LUA

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# The postgres processes' CPU (the server and its backends), in ticks.
pg_ticks() { local t=0 p; for p in $(pgrep -P "$pg_pid") "$pg_pid"; do t=$((t + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done; echo $t; }

# run KIND: one triaged with the log in KIND (sqlite, postgresql) under wrk; prints its
# CPU per request (sampled before the stop: /proc/PID/stat goes with the process).
run() {
    local kind=$1 port db
    port=$(free_port)
    if [ "$kind" = sqlite ]; then
        rm -f "$dir/log.db"*
        db="path = $dir/log.db"
    else
        "$PG_BIN/psql" -q -h "$PG_DIR" -U triage -d postgres -c "DROP DATABASE IF EXISTS cpu" -c "CREATE DATABASE cpu" >/dev/null 2>&1
        db="url = postgresql:///cpu?host=$PG_DIR&user=triage"
    fi
    { triaged_conf "$port" "$mport" 1 warn ""; printf '[storage]\n%s\n' "$db"; } >"$dir/t.conf"
    taskset -c "$core_test" "$build/daemon/triaged" --config "$dir/t.conf" 2>"$dir/t.err" &
    local tp=$!
    wait_port "$port"
    taskset -c "$core_load" wrk -t1 -c8 -d2s -s "$dir/post.lua" "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
    local c0 p0 out n c1 p1 hz
    hz=$(getconf CLK_TCK)
    c0=$(cpu_ticks $tp); p0=$(pg_ticks)
    out=$(taskset -c "$core_load" wrk -t1 -c8 -d"${secs}s" -s "$dir/post.lua" "http://127.0.0.1:$port/v1/chat/completions")
    sleep 0.5 # the writer's last batches
    c1=$(cpu_ticks $tp); p1=$(pg_ticks)
    kill -TERM $tp; wait $tp || true
    n=$(echo "$out" | awk '/requests in/ { print $1 }')
    awk -v k="$kind" -v n="$n" -v c=$((c1 - c0)) -v p=$((p1 - p0)) -v hz="$hz" \
        -v rps="$(echo "$out" | awk '/Requests\/sec/ { print $2 }')" \
        'BEGIN { printf "%-10s %9s req/s %8d req  triaged %6.1f us/req  postgres %6.1f us/req\n", k, rps, n, c * 1e6 / hz / n, (k == "postgresql" ? p * 1e6 / hz / n : 0) }'
}
for r in $(seq "$rounds"); do
    run sqlite
    run postgresql
done
