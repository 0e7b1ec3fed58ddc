#!/usr/bin/env bash
# bench/streams/run.sh - SSE relay benchmarks with send-stamped chunks (mockllm --stamp):
#  1. forwarding delay: the same streams against the mock directly, through nginx and
#     through triaged (and triaged with busy_poll_us = 200), interleaved; per run the median/p99 of (receipt - mock send stamp)
#     for the first chunk and for all chunks, then the medians over runs and the delay each
#     proxy adds over direct;
#     with tcpdump (and root), also the delay inside each proxy, from a capture on lo: the
#     time from the packet carrying a chunk from the mock to the proxy to the packet
#     carrying it on to the client (what "forwarded within 0.1 ms of arriving" means; the
#     client's own wake-up is not in it);
#  2. slow streams held open through triaged (default 1,000 and 10,000 streams of 10 chunks
#     500 ms apart): streams intact (all chunks and one [DONE]), peak RSS / VmHWM of triaged.
#
#   bench/streams/run.sh [--reps N] [--slow "1000 10000"] [--no-latency] [--no-slow]
#                        [--workers N] [--ramp N] [--slow-chunks K] [--slow-delay-ms D]
#                        [--same-core] [--quick] [--build DIR]
#
# By default the proxies run on core 0 and the mock and client on core 1, so a proxied
# chunk crosses cores twice while a direct one does not (nginx pays the same, so compare
# with it); --same-core puts everything on one core instead (no cross-core wake-ups, but
# the proxy competes with the mock and client for it).
# --ramp: new client connections per millisecond in the slow test (default 5); each slow
# count also runs against the mock directly first, as the baseline. Slow streams are K=10
# chunks D=500 ms apart; a longer D keeps all N open at once even when triaged is slow to
# set them up (the client prints the peak number open).
#
# triaged needs 2 fds per open stream (client + upstream socket), ~40 more, and up to 512
# cached idle upstream connections: the script
# raises ulimit -n to the hard limit and warns when it is too low for a stream count.
# Needs: nginx (for the nginx column; skipped if missing), a release build (build-bench).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

reps=5
slow="1000 10000"
workers=1
ramp=5
slow_chunks=10
slow_delay=500
same_core=0
latency=1
build="$root/build-bench"
lat_args=(--concurrency 20 --requests 200 --chunks 20 --delay-ms 20 --ramp 1)
while [ $# -gt 0 ]; do
    case $1 in
    --reps) reps=$2; shift 2 ;;
    --slow) slow=$2; shift 2 ;;
    --no-latency) latency=0; shift ;;
    --no-slow) slow=""; shift ;;
    --quick) reps=2; slow="1000"; lat_args=(--concurrency 10 --requests 50 --chunks 10 --delay-ms 20 --ramp 1); shift ;;
    --build) build=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --ramp) ramp=$2; shift 2 ;;
    --slow-chunks) slow_chunks=$2; shift 2 ;;
    --same-core) same_core=1; shift ;;
    --slow-delay-ms) slow_delay=$2; shift 2 ;;
    -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "streams/run.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

if [ ! -d "$build" ]; then
    meson setup "$build" "$root" --buildtype=release -Dtests=enabled >/dev/null
fi
ninja -C "$build" daemon/triaged tests/mock/mockllm >/dev/null
client="$build/bench/sse_stamps"
mkdir -p "$build/bench"
cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -pedantic "$here/sse_stamps.c" -o "$client" \
    $(pkg-config --cflags --libs libuv)

ulimit -n "$(ulimit -Hn)"
fdlim=$(ulimit -n)
. "$root/bench/lib.sh"
bench_setup streams
[ "$same_core" = 1 ] && core_test=$core_load

mock_port=$(free_port)
taskset -c "$core_load" "$build/tests/mock/mockllm" --port "$mock_port" --stamp \
    >"$dir/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock_port"

t_port=$(free_port)
triaged_conf "$t_port" "$mock_port" "$workers" warn "$dir/triage.db" "max_connections = 100000" \
    >"$dir/triage.conf"
tcores=$core_test
[ "$workers" -gt 1 ] && [ "$same_core" = 0 ] && tcores="0-$((ncpu - 1))"
taskset -c "$tcores" "$build/daemon/triaged" --config "$dir/triage.conf" 2>"$dir/triaged.log" &
tpid=$!
pids+=($tpid)
wait_port "$t_port"

# the same with busy_poll_us (latency only): what spinning between events buys
bp_port=""
if [ "$latency" = 1 ]; then
    bp_port=$(free_port)
    triaged_conf "$bp_port" "$mock_port" "$workers" warn "$dir/triage-bp.db" \
        "max_connections = 100000" "busy_poll_us = 200" >"$dir/triage-bp.conf"
    taskset -c "$tcores" "$build/daemon/triaged" --config "$dir/triage-bp.conf" \
        2>"$dir/triaged-bp.log" &
    pids+=($!)
    wait_port "$bp_port"
fi

n_port=""
if command -v nginx >/dev/null; then
    n_port=$(free_port)
    mkdir -p "$dir/nginx"
    sed -e "s|@DIR@|$dir/nginx|g" -e "s|@PORT@|$n_port|g" -e "s|@UPSTREAM@|$mock_port|g" \
        -e "s|worker_connections 16384|worker_connections 40000|" \
        "$root/bench/proxy/nginx.conf.in" >"$dir/nginx/nginx.conf"
    taskset -c "$core_test" nginx -c "$dir/nginx/nginx.conf" -e "$dir/nginx/error.log" \
        2>>"$dir/nginx/stderr.log" &
    pids+=($!)
    wait_port "$n_port"
fi

declare -A url
url[direct]="http://127.0.0.1:$mock_port/v1/chat/completions"
url[triaged]="http://127.0.0.1:$t_port/v1/chat/completions"
[ -n "$n_port" ] && url[nginx]="http://127.0.0.1:$n_port/v1/chat/completions"
targets=(direct)
[ -n "$n_port" ] && targets+=(nginx)
targets+=(triaged)
[ -n "$bp_port" ] && url[triaged_bp]="http://127.0.0.1:$bp_port/v1/chat/completions" && targets+=(triaged_bp)

echo "triage SSE stream benchmark - $(date -u '+%Y-%m-%d %H:%M UTC'), $ncpu cores, fd limit $fdlim"
echo "nginx on core $core_test, triaged ($workers worker(s)) on cores $tcores; mock and client on core $core_load"
status=0

declare -A port
port[triaged]=$t_port
[ -n "$bp_port" ] && port[triaged_bp]=$bp_port
[ -n "$n_port" ] && port[nginx]=$n_port
capture=0
if command -v tcpdump >/dev/null && [ "$(id -u)" = 0 ]; then capture=1; fi

# hop_delays PCAP PROXY_PORT: for every chunk seen both ways, the microseconds from the
# packet carrying it mock -> proxy to the packet carrying it proxy -> client, then
# "first" for each client connection's earliest chunk ("<kind> <us>" lines).
hop_delays() {
    tcpdump -r "$1" -n -tt -A 2>/dev/null | awk -v mock="$mock_port" -v proxy="$2" '
        /^[0-9]+\.[0-9]+ IP / {
            t = substr($1, 6) + 0   # seconds mod 10^5: keeps microseconds exact in a double
            n = split($3, a, "."); sport = a[n]; n = split($5, b, "."); dport = b[n] + 0
            dir = sport == mock ? "in" : (sport == proxy ? "out" : "")
            next
        }
        dir != "" {
            line = $0
            while (match(line, /mockts:[0-9]+/)) {
                st = substr(line, RSTART + 7, RLENGTH - 7)
                if (dir == "in" && !(st in tin)) tin[st] = t
                if (dir == "out" && !(st in tout)) { tout[st] = t; conn[st] = dport }
                line = substr(line, RSTART + RLENGTH)
            }
        }
        END {
            for (st in tout) {
                if (!(st in tin)) continue
                d = (tout[st] - tin[st]) * 1e6
                print "all", d
                c = conn[st]
                if (!(c in first) || st < first[c]) { first[c] = st; fd[c] = d }
            }
            for (c in fd) print "first", fd[c]
        }'
}

if [ "$latency" = 1 ]; then
    echo
    echo "== forwarding delay: ${lat_args[*]}, $reps interleaved reps =="
    res="$dir/latency.tsv"
    : >"$res"
    hops="$dir/hops.tsv"
    : >"$hops"
    for rep in $(seq "$reps"); do
        for t in "${targets[@]}"; do
            cap_pid=""
            if [ "$capture" = 1 ] && [ "$t" != direct ]; then
                tcpdump -i lo -n -s 0 -U -Z root -w "$dir/$t.pcap" \
                    "tcp and (port $mock_port or src port ${port[$t]})" 2>"$dir/tcpdump.log" &
                cap_pid=$!
                for _ in $(seq 50); do grep -q listening "$dir/tcpdump.log" 2>/dev/null && break; sleep 0.1; done
                sleep 1.5 # "listening" comes a while before packets are captured
            fi
            out=$(taskset -c "$core_load" "$client" --url "${url[$t]}" "${lat_args[@]}" --label "$t rep $rep") || status=1
            if [ -n "$cap_pid" ]; then
                sleep 0.2
                kill -INT "$cap_pid"; wait "$cap_pid" 2>/dev/null || true
                hop_delays "$dir/$t.pcap" "${port[$t]}" | sed "s/^/$t\t/" >>"$hops"
            fi
            echo "$out" | sed 's/^/  /'
            # target, first median, first p99, all median, all p99
            awk -v t="$t" '
                $1 == "first" { for (i = 1; i <= NF; i++) { if ($i == "median") fm = $(i+1); if ($i == "p99") fp = $(i+1) } }
                $1 == "all"   { for (i = 1; i <= NF; i++) { if ($i == "median") am = $(i+1); if ($i == "p99") ap = $(i+1) } }
                END { printf "%s\t%s\t%s\t%s\t%s\n", t, fm, fp, am, ap }' <<<"$out" >>"$res"
        done
    done
    echo
    awk -F'\t' '
    function median(k, c,   n, i, j, t, a) {
        n = split(v[k, c], a, " ")
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] + 0 < a[i] + 0) { t = a[i]; a[i] = a[j]; a[j] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 } for (c = 2; c <= 5; c++) v[$1, c] = v[$1, c] " " $c }
    END {
        print "| target | first chunk median us | first chunk p99 us | all chunks median us | all chunks p99 us | added first median | added first p99 | added all median | added all p99 |"
        print "|---|---|---|---|---|---|---|---|---|"
        for (i = 1; i <= n; i++) {
            t = order[i]
            printf "| %s | %.1f | %.1f | %.1f | %.1f |", t, median(t, 2), median(t, 3), median(t, 4), median(t, 5)
            if (t == "direct") print " - | - | - | - |"
            else printf " %.1f | %.1f | %.1f | %.1f |\n", median(t, 2) - median("direct", 2), median(t, 3) - median("direct", 3), median(t, 4) - median("direct", 4), median(t, 5) - median("direct", 5)
        }
        print ""
        print "(medians over reps of each run'"'"'s median / p99; added = target - direct; target: first chunk within 100 us)"
    }' "$res"
    if [ -s "$hops" ]; then
        echo
        echo "Inside the proxy (capture on lo; proxy->client packet - mock->proxy packet of the same chunk, all reps):"
        echo
        echo "| proxy | first chunk n | first chunk median us | first chunk p90 us | first chunk p99 us | all chunks n | all chunks median us | all chunks p99 us |"
        echo "|---|---|---|---|---|---|---|---|"
        for t in nginx triaged triaged_bp; do
            for k in first all; do
                awk -F'\t' -v t="$t" -v k="$k" '$1 == t { split($2, a, " "); if (a[1] == k) print a[2] }' "$hops" |
                    sort -g | awk '{ v[NR] = $1 } END {
                        if (!NR) { print "-|-|-|-|"; exit }
                        i90 = int(NR * 0.9); if (i90 < 1) i90 = 1
                        i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
                        printf "%d|%.1f|%.1f|%.1f|\n", NR, v[int((NR + 1) / 2)], v[i90], v[i99] }' >"$dir/q.$k"
            done
            IFS='|' read -r fn fm f90 f99 _ <"$dir/q.first"
            IFS='|' read -r an am _ a99 _ <"$dir/q.all"
            [ "$fn" = - ] || echo "| $t | $fn | $fm | $f90 | $f99 | $an | $am | $a99 |"
        done
    fi
fi

for n in $slow; do
    echo
    echo "== $n slow streams through triaged ($slow_chunks chunks $slow_delay ms apart) =="
    need=$((2 * n + 40))
    if [ "$fdlim" -lt "$need" ]; then
        echo "  warning: fd limit $fdlim < $need that triaged needs for $n streams (2 per stream + ~40);"
        echo "  raise the hard limit (ulimit -Hn, LimitNOFILE=) to run it intact"
    fi
    fds_idle=$(ls /proc/$tpid/fd | wc -l)
    out=$(taskset -c "$core_load" "$client" --url "${url[direct]}" --concurrency "$n" \
        --chunks "$slow_chunks" --delay-ms "$slow_delay" --ramp "$ramp" --timeout-s 120 \
        --label "slow $n direct (baseline)") || true
    echo "$out" | sed 's/^/  /'
    out=$(taskset -c "$core_load" "$client" --url "${url[triaged]}" --concurrency "$n" \
        --chunks "$slow_chunks" --delay-ms "$slow_delay" --ramp "$ramp" --timeout-s 120 --rss-pid "$tpid" --label "slow $n") || status=1
    echo "$out" | sed 's/^/  /'
    echo "  triaged fds idle: $fds_idle; after: $(ls /proc/$tpid/fd | wc -l)"
done
exit $status
