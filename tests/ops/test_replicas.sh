#!/bin/bash
# test_replicas.sh - three triaged replicas sharing one PostgreSQL outcome log behind
# nginx (#18): 10,000 requests while one replica is killed with SIGKILL and another is
# restarted; then every request a surviving replica answered has its row, /v1/stats on
# each replica equals the client's counts (less the killed replica's lost queue, which
# is reported), and a key's budget holds within one request across replicas.
#
# Usage: test_replicas.sh TRIAGED MOCKLLM TOY_MODEL TRIAGE_CLI
# Skips (77) only without PostgreSQL's server binaries or nginx.
set -u
triaged=$1 mockllm=$2 toy_model=$3 triage=$4
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
. "$root/tests/lib/free_port.sh"
. "$root/tests/lib/pg.sh"
. "$root/examples/replicas/lib.sh" # the mock, a replica's start, nginx: as the example
N=${REPLICAS_REQUESTS:-10000}

command -v nginx >/dev/null || { echo "SKIP: nginx not found (Debian package nginx)"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not found"; exit 77; }
tmp=$(mktemp -d /tmp/triage-replicas.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
    for p in "${pids[@]}" "${rpid[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
    for p in "${pids[@]}" "${rpid[@]:-}"; do [ -n "$p" ] && wait "$p" 2>/dev/null; done
    pg_stop
    [ -n "${REPLICAS_KEEP:-}" ] && echo "kept $tmp" || rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi
}
psql_q() { "$PG_BIN/psql" -qAt -h "$PG_DIR" -U triage -d triage -c "$1"; }

pg_start "$tmp/pg" || { echo "could not start PostgreSQL"; exit 1; }
"$toy_model" "$tmp/toy.tmod" || { echo "cannot build the toy model"; exit 1; }

replicas_mock "$tmp" "$mockllm" --latency-ms 1 --threads 2 || exit 1
pids+=("$MOCK_PID")
mport=$MOCK_PORT

# Keys: "load" for the traffic, "capped" for the budget (its budget is set later).
load_key=sk-triage-loadloadloadloadloadloadloadloadloadloadloa
capped_key=sk-triage-cappedcappedcappedcappedcappedcappedcapped
hash() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }
printf 'load %s\ncapped %s\n' "$(hash $load_key)" "$(hash $capped_key)" >"$tmp/keys"

declare -a rport rpid
write_conf() { # write_conf I
    cat >"$tmp/r$1.conf" <<CONF
[server]
listen = 127.0.0.1
port = ${rport[$1]}
workers = 2
[auth]
keys_file = $tmp/keys
budget_refresh_ms = 100
[router]
model = $tmp/toy.tmod
aliases = triage
policy = threshold
threshold = 0.5
tiers = fast, strong
[storage]
url = $PG_URL
flush_interval_ms = 50
[backend fast]
url = http://127.0.0.1:$mport/v1
model = small
head = weak
price_input = 0.6
price_output = 0.6
[backend strong]
url = http://127.0.0.1:$mport/v1
model = large
head = strong
price_input = 10
price_output = 30
CONF
}
start_replica() { # start_replica I: on its port (kept across restarts)
    write_conf "$1"
    replicas_start "$triaged" "$tmp/r$1.conf" "$tmp/r$1.err" "${rport[$1]}" || exit 1
    rpid[$1]=$REPLICA_PID
}
for i in 1 2 3; do
    rport[$i]=$(free_port)
    start_replica "$i"
done
echo "replicas on ${rport[1]} ${rport[2]} ${rport[3]}, log $PG_URL"

replicas_nginx "$tmp" 2s "${rport[1]}" "${rport[2]}" "${rport[3]}" || exit 1
pids+=("$NGINX_PID")
nport=$NGINX_PORT

# The load: replica 2 killed with SIGKILL at a third, replica 3 restarted (SIGTERM,
# start) at two thirds, while the client keeps sending.
wait_file() { for _ in $(seq 1200); do [ -e "$1" ] && return 0; sleep 0.05; done; return 1; }
t0=$(date +%s%3N)
python3 "$here/replicas_load.py" "http://127.0.0.1:$nport" "$load_key" "$N" 8 "$tmp/load.txt" \
    --at $((N / 3)) "$tmp/mark1" --at $((2 * N / 3)) "$tmp/mark2" &
lpid=$!
pids+=($lpid)
wait_file "$tmp/mark1" || { echo "the load did not get a third of the way"; exit 1; }
kill -9 "${rpid[2]}"
killed_at=$(date +%s%3N)
wait "${rpid[2]}" 2>/dev/null
rpid[2]=
wait_file "$tmp/mark2" || { echo "the load did not get two thirds of the way"; exit 1; }
kill -TERM "${rpid[3]}"
wait "${rpid[3]}"
rc3=$?
start_replica 3
check "replica 3 stopped cleanly on SIGTERM midway (exit $rc3) and came back" [ "$rc3" -eq 0 ]
wait "$lpid"
sleep 1 # the survivors' writers flush every 50 ms

psql_q "SELECT request_id FROM requests" | sort >"$tmp/rows.txt"
killed="127.0.0.1:${rport[2]}"
python3 "$here/replicas_verdict.py" "$tmp/load.txt" "$tmp/rows.txt" "$killed" \
    "$killed_at" >"$tmp/verdict.txt"
tr '\n' ' ' <"$tmp/verdict.txt"; echo
v() { awk -v k="$1" '$1 == k { print $2 }' "$tmp/verdict.txt"; }
answered=$(v answered)
check "the client got $answered answers of $N from triaged" [ "$answered" -ge $((N * 9 / 10)) ]
check "every request a surviving replica answered has its row ($(v survivor_rows) rows, $(v missing) missing)" \
    [ "$(v missing)" -eq 0 ]
echo "loss window of the killed replica: $(v lost) answered requests without a row," \
    "answered over $(v lost_window_ms) ms, the first $(v lost_before_kill_ms) ms before SIGKILL"
# Not a pass mark: how much the killed replica's queue held depends on this machine's
# load (the writer flushes every flush_interval_ms when it gets the CPU).
logged=$(v logged)
for i in 1 3; do
    curl -s "http://127.0.0.1:${rport[$i]}/v1/stats?window=15m" \
        -H "authorization: Bearer $load_key" >"$tmp/stats$i.json"
    python3 "$here/replicas_verdict.py" --stats "$tmp/stats$i.json" "$tmp/verdict.txt" \
        >"$tmp/cmp$i.txt"
    check "/v1/stats on replica $i equals the client's counts: $(cat "$tmp/cmp$i.txt")" \
        grep -q '^ok' "$tmp/cmp$i.txt"
done

# The budget: one request's cost c (the same prompt routes the same way), a budget of
# 4.5 c: the 5th request crosses it, the 6th is refused, on whichever replica.
c=$(psql_q "SELECT cost_usd FROM requests WHERE key_id = 'load' AND status = 200 LIMIT 1")
budget=$(python3 -c "print('%.10f' % (4.5 * $c))")
printf 'load %s\ncapped %s budget_usd=%s/day\n' "$(hash $load_key)" "$(hash $capped_key)" \
    "$budget" >"$tmp/keys"
for i in 1 3; do kill -HUP "${rpid[$i]}"; done
sleep 1
admitted=0 refused=0 headers=0
for k in $(seq 10); do
    code=$(curl -s -D "$tmp/h$k" -o "$tmp/b$k" -w '%{http_code}' \
        "http://127.0.0.1:$nport/v1/chat/completions" \
        -H "authorization: Bearer $capped_key" -H 'content-type: application/json' \
        -d '{"model":"triage","messages":[{"role":"user","content":"what is 2+2"}]}')
    grep -qi '^x-triage-budget-remaining-usd:' "$tmp/h$k" && headers=$((headers + 1))
    [ "$code" = 200 ] && admitted=$((admitted + 1))
    [ "$code" = 429 ] && grep -q '"code": *"budget_exceeded"' "$tmp/b$k" && refused=$((refused + 1))
    sleep 0.4 # > flush_interval_ms + budget_refresh_ms: how long "across replicas" may take
done
check "a budget of 4.5 requests: exactly 5 admitted across replicas ($admitted), then 429 budget_exceeded ($refused)" \
    [ "$admitted" -eq 5 -a "$refused" -eq 5 ]
check "every answer carries the x-triage-budget-* headers ($headers of 10)" [ "$headers" -eq 10 ]
spent=$(psql_q "SELECT sum(cost_usd) FROM requests WHERE key_id = 'capped' AND status = 200")
echo "capped: budget \$$budget per day, spent \$$spent"
"$triage" key list --file "$tmp/keys" --db "$PG_URL" >"$tmp/keylist.txt" 2>&1
check "triage key list --db URL shows the spend: $(grep capped "$tmp/keylist.txt")" \
    grep -q '^capped  budget .* spent' "$tmp/keylist.txt"
"$triage" stats --db "$PG_URL" --window 15m --json >"$tmp/cli_stats.json" 2>&1
check "triage stats --db URL reads the shared log" python3 -c \
    "import json,sys; sys.exit(json.load(open('$tmp/cli_stats.json'))['requests'] < $logged)"

for i in 1 3; do
    kill -TERM "${rpid[$i]}"
    wait "${rpid[$i]}"
    rc=$?
    rpid[$i]=
    check "replica $i stops cleanly (exit $rc)" [ "$rc" -eq 0 ]
done
check "no sanitizer report" sh -c "! grep -q 'Sanitizer' $tmp/r*.err"
grep -h -A20 'Sanitizer' "$tmp"/r*.err | head -40
echo "elapsed $(( ($(date +%s%3N) - t0) / 1000 )) s"
exit $fail
