# bench/lib.sh - what the benchmark scripts share: cores, a scratch folder cleaned up
# on exit with every process started, free ports, waiting for a listener, and the
# triaged config they run. Source it after setting `root` (the repository).

# bench_setup NAME: core_test (the process under test), core_load (clients, mock),
# ncpu, dir (/tmp/triage-NAME.XXXXXX) and pids (killed on exit). A script may define
# bench_on_exit to save something from $dir before it is removed.
bench_setup() {
    ncpu=$(nproc)
    core_test=0
    core_load=$((ncpu > 1 ? 1 : 0))
    dir=$(mktemp -d "/tmp/triage-$1.XXXXXX")
    pids=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if declare -F bench_on_exit >/dev/null; then bench_on_exit; fi
    rm -rf "$dir"
}

# free_port: a loopback port below the outgoing-connection range, free a moment ago.
. "$root/tests/lib/free_port.sh"

# wait_port PORT: until something accepts on 127.0.0.1:PORT (5 s at most).
wait_port() {
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): nothing listening on port $1" >&2
    return 1
}

# triaged_conf PORT UPSTREAM WORKERS LOG_LEVEL DB [SERVER_LINE...]: prints a config
# routing with the default model between two backends on the mock at UPSTREAM, with
# the outcome log at DB (empty: no log) and extra [server] lines.
triaged_conf() {
    local port=$1 upstream=$2 workers=$3 level=$4 db=$5
    shift 5
    printf '[server]\nlisten = 127.0.0.1\nport = %s\nworkers = %s\nlog_level = %s\n' \
        "$port" "$workers" "$level"
    for line in "$@"; do printf '%s\n' "$line"; done
    printf '[router]\nmodel = %s/models/default.tmod\naliases = triage\nthreshold = 0.5\n' "$root"
    printf 'tiers = fast, strong\n'
    [ -n "$db" ] && printf '[storage]\npath = %s\n' "$db"
    printf '[backend fast]\nurl = http://127.0.0.1:%s/v1\nhead = weak\nprice_input = 0.6\nprice_output = 0.6\n' \
        "$upstream"
    printf '[backend strong]\nurl = http://127.0.0.1:%s/v1\nhead = strong\nprice_input = 10\nprice_output = 30\n' \
        "$upstream"
}
