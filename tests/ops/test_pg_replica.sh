#!/bin/bash
# test_pg_replica.sh - one replica's life with a PostgreSQL outcome log (#18):
# it starts while the log is down: triaged starts (routing needs no database) and
# answers, /v1/stats and /v1/feedback answer 503 storage_unavailable, /readyz says
# degraded; once PostgreSQL is up the writer connects with its backoff, makes the
# schema in the empty database and writes every queued row. Then feedback on a request
# still queued on a second replica is taken (202 pending) and counts once that row is
# written; and a server that refuses the login stops the start.
#
# Usage: test_pg_replica.sh TRIAGED MOCKLLM TOY_MODEL
# Skips (77) without PostgreSQL's server binaries or in a build without the engine.
set -u
triaged=$1 mockllm=$2 toy_model=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tests/lib/free_port.sh"
. "$root/tests/lib/pg.sh"
N=40

tmp=$(mktemp -d /tmp/triage-pg-replica.XXXXXX)
chmod 755 "$tmp"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    pg_stop
    rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; fail=1; fi
}
psql_q() { "$PG_BIN/psql" -qAt -h "$PG_DIR" -U triage -d triage -c "$1"; }
pg_down() { pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null; }
pg_up() { pg_as "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start >/dev/null; }

pg_start "$tmp/pg" || { echo "could not start PostgreSQL"; exit 1; }
pg_down # an empty database "triage", its server down: the replica makes the schema later
"$toy_model" "$tmp/toy.tmod" || { echo "cannot build the toy model"; exit 1; }
"$mockllm" --port 0 --latency-ms 1 >"$tmp/mock.out" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
    mport=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$tmp/mock.out")
    [ -n "$mport" ] && break
    sleep 0.1
done
[ -n "$mport" ] || { echo "mockllm did not start"; exit 1; }

port=$(free_port)
cat >"$tmp/r.conf" <<CONF
[server]
listen = 127.0.0.1
port = $port
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
[backend strong]
url = http://127.0.0.1:$mport/v1
model = large
head = strong
CONF
"$triaged" --config "$tmp/r.conf" 2>"$tmp/r.err" &
rpid=$!
pids+=($rpid)
up=0
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && { up=1; break; }
    kill -0 "$rpid" 2>/dev/null || break
    sleep 0.1
done
check "triaged starts with PostgreSQL down" [ "$up" = 1 ]
[ "$up" = 1 ] || { cat "$tmp/r.err"; exit 1; }
check "it warns that the log is unreachable" grep -q 'outcome log unreachable, starting anyway' "$tmp/r.err"

answered=0
: >"$tmp/ids"
for i in $(seq $N); do
    code=$(curl -s -o /dev/null -D "$tmp/h" -w '%{http_code}' "http://127.0.0.1:$port/v1/chat/completions" \
        -H 'content-type: application/json' \
        -d '{"model":"triage","messages":[{"role":"user","content":"what is '$i' + 2"}]}')
    [ "$code" = 200 ] && answered=$((answered + 1))
    tr -d '\r' <"$tmp/h" | sed -n 's/^x-triage-request-id: *//Ip' >>"$tmp/ids"
done
first=$(head -1 "$tmp/ids")
check "it answers requests meanwhile ($answered of $N)" [ "$answered" -eq "$N" ]

code=$(curl -s -o "$tmp/stats.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/stats?window=15m")
check "/v1/stats answers 503 storage_unavailable ($code: $(head -c 200 "$tmp/stats.json"))" \
    sh -c "[ '$code' = 503 ] && grep -q '\"storage_unavailable\"' '$tmp/stats.json'"
code=$(curl -s -o "$tmp/fb.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/feedback" \
    -H 'content-type: application/json' -d '{"request_id":"'"$first"'","label":"good"}')
check "/v1/feedback answers 503 storage_unavailable ($code: $(head -c 200 "$tmp/fb.json"))" \
    sh -c "[ '$code' = 503 ] && grep -q '\"storage_unavailable\"' '$tmp/fb.json'"
ready=$(curl -s "http://127.0.0.1:$port/readyz")
check "/readyz says degraded ($(echo "$ready" | head -c 120))" grep -q degraded <<<"$ready"
check "triaged is still running" kill -0 "$rpid"

pg_up
rows=0
for _ in $(seq 200); do # the backoff's longest wait is 5 s
    rows=$(psql_q "SELECT count(*) FROM requests" 2>/dev/null || echo 0)
    [ "$rows" = "$N" ] && break
    sleep 0.1
done
check "every queued row is written once PostgreSQL is up ($rows of $N)" [ "$rows" = "$N" ]
psql_q "SELECT request_id FROM requests" | sort >"$tmp/rows"
check "they are the requests answered" cmp -s "$tmp/rows" <(sort "$tmp/ids")
code=$(curl -s -o "$tmp/stats.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/stats?window=15m")
check "/v1/stats answers 200 again with $N requests ($code)" \
    python3 -c "import json,sys; d=json.load(open('$tmp/stats.json')); sys.exit(0 if '$code' == '200' and d['requests'] == $N else 1)"
code=$(curl -s -o "$tmp/fb.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/feedback" \
    -H 'content-type: application/json' -d '{"request_id":"'"$first"'","label":"good"}')
check "/v1/feedback is stored ($code)" [ "$code" = 200 ]

# Feedback on a request whose row is still queued on another replica (#18): replica B
# holds its rows for a minute; A takes the feedback (202 pending) and it counts once B's
# row is written. Ids that are not ours, or too old to be queued, still get 404.
fb_count() { # fb_count PORT: the feedback count of that replica's 15 min stats
    curl -s "http://127.0.0.1:$1/v1/stats?window=15m" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['feedback']['count'])"
}
bport=$(free_port)
sed -e "s|^port = .*|port = $bport|" -e "s|^flush_interval_ms = .*|flush_interval_ms = 60000|" \
    "$tmp/r.conf" >"$tmp/b.conf"
"$triaged" --config "$tmp/b.conf" 2>"$tmp/b.err" &
bpid=$!
pids+=($bpid)
for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$bport/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
curl -s -o /dev/null -D "$tmp/hb" "http://127.0.0.1:$bport/v1/chat/completions" \
    -H 'content-type: application/json' \
    -d '{"model":"triage","messages":[{"role":"user","content":"queued on B"}]}'
idb=$(tr -d '\r' <"$tmp/hb" | sed -n 's/^x-triage-request-id: *//Ip')
before=$(fb_count "$port")
code=$(curl -s -o "$tmp/fb.json" -w '%{http_code}' "http://127.0.0.1:$port/v1/feedback" \
    -H 'content-type: application/json' -d '{"request_id":"'"$idb"'","label":"good"}')
check "feedback to A on B's queued request $idb: 202 pending ($code: $(head -c 160 "$tmp/fb.json"))" \
    sh -c "[ '$code' = 202 ] && grep -q '\"pending\"' '$tmp/fb.json'"
check "it does not count while the row is queued ($(fb_count "$port") = $before)" \
    [ "$(fb_count "$port")" = "$before" ]
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/feedback" \
    -H 'content-type: application/json' -d '{"request_id":"req_000000000001aaaaaaaaaaaa","label":"good"}')
check "feedback on an id too old to be queued anywhere: 404 ($code)" [ "$code" = 404 ]
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/feedback" \
    -H 'content-type: application/json' -d '{"request_id":"nope","label":"good"}')
check "feedback on an id that is not triage's: 404 ($code)" [ "$code" = 404 ]
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$bport/v1/feedback" \
    -H 'content-type: application/json' -d '{"request_id":"'"$idb"'","label":"bad"}')
check "feedback to B itself (its own queue knows the id): 200 ($code)" [ "$code" = 200 ]
kill -TERM "$bpid" # drains B's queue
wait "$bpid"
pids=("${pids[@]/$bpid}")
n=0
for _ in $(seq 100); do
    n=$(fb_count "$port")
    [ "$n" = $((before + 1)) ] && break
    sleep 0.1
done
check "once B's row is written the feedback counts on A ($n = $before + 1)" [ "$n" = $((before + 1)) ]

# A server that answers but refuses the login is a config error, not an outage.
bad_url=${PG_URL/triage?/nosuchdb?}
sed -e "s|^url = postgresql.*|url = ${bad_url//&/\\&}|" -e "s|^port = .*|port = $(free_port)|" \
    "$tmp/r.conf" >"$tmp/bad.conf"
rc=0
timeout 30 "$triaged" --config "$tmp/bad.conf" 2>"$tmp/bad.err" || rc=$?
check "a database that does not exist stops the start (exit $rc: $(grep -o 'nosuchdb.*' "$tmp/bad.err" | head -c 160))" \
    sh -c "[ $rc -ne 0 ] && [ $rc -lt 124 ] && grep -q 'nosuchdb' '$tmp/bad.err'"

kill -TERM "$rpid"
wait "$rpid"
rc=$?
pids=("${pids[@]/$rpid}")
check "triaged stops cleanly (exit $rc)" [ "$rc" -eq 0 ]
check "no sanitizer report" sh -c "! grep -q 'Sanitizer' $tmp/r.err"
exit $fail
