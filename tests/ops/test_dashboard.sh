#!/bin/sh
# test_dashboard.sh - loads the dashboard in headless Chromium from dashboard_server (the
# embedded page + tests/ops/fixtures/stats.json as /v1/stats), checks the rendered DOM
# (totals, chart bars, labels, tables) and saves a screenshot.
#
# Usage: test_dashboard.sh SERVER STATS.json OUTDIR. Exits 77 (skip) without chromium.
# The expected figures below come from the committed fixture (make_stats.py).
set -u
server=$1
fixture=$2
outdir=$3

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "chromium not found: skipping (Debian package chromium)"
    exit 77
fi
tmp=$(mktemp -d)
spid=
cleanup() {
    [ -n "$spid" ] && kill "$spid" 2>/dev/null && wait "$spid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT

"$server" "$fixture" 0 >"$tmp/port" &
spid=$!
for _ in $(seq 50); do
    grep -q '^port ' "$tmp/port" 2>/dev/null && break
    sleep 0.1
done
port=$(sed -n 's/^port //p' "$tmp/port")
[ -n "$port" ] || { echo "server did not start"; exit 1; }
url="http://127.0.0.1:$port/dashboard"
echo "serving $url"

# run_chromium ARGS...: one headless run with a fresh profile, no network but loopback.
run_chromium() {
    rm -rf "$tmp/profile"
    "$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run --disable-extensions \
        --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$tmp/profile" \
        --virtual-time-budget=4000 "$@" 2>>"$tmp/chromium.log"
}

run_chromium --window-size=1280,900 --dump-dom "$url" >"$tmp/dom.html"
if ! grep -q 'data-rendered=' "$tmp/dom.html"; then
    echo "FAIL: the page did not render (no data-rendered on <body>)"
    tail -n 20 "$tmp/chromium.log"
    exit 1
fi

fail=0
# expect NAME PATTERN: the DOM must contain the fixed string PATTERN.
expect() {
    if grep -qF -- "$2" "$tmp/dom.html"; then
        echo "ok   $1"
    else
        echo "FAIL $1: no '$2' in the DOM"
        fail=1
    fi
}
# count NAME PATTERN N: PATTERN occurs exactly N times.
count() {
    n=$(grep -oF -- "$2" "$tmp/dom.html" | wc -l)
    if [ "$n" -eq "$3" ]; then
        echo "ok   $1 ($n)"
    else
        echo "FAIL $1: $n times '$2', want $3"
        fail=1
    fi
}
# the <svg id=...> element's markup, for per-chart counts
chart() {
    sed -n "s/.*\(<svg id=\"$1\".*\)/\1/p" "$tmp/dom.html" | sed 's#</svg>.*#</svg>#'
}
count_in() {
    n=$(chart "$2" | grep -oF -- "$3" | wc -l)
    if [ "$n" -eq "$4" ]; then
        echo "ok   $1 ($n)"
    else
        echo "FAIL $1: $n times '$3' in #$2, want $4"
        fail=1
    fi
}

expect "total requests"        'id="kpi-requests">2,427<'
expect "strong share"          'id="kpi-share">27.1%<'
expect "spent"                 'id="kpi-cost">$9.68<'
expect "saved vs all-strong"   'id="kpi-saving">$18.41<'
expect "saving share"          '65.5% below $28.09'
expect "errors"                'id="kpi-errors">15<'
expect "feedback"              'id="kpi-feedback">0.86<'
expect "labels gathered"       'id="kpi-labels">250<'
expect "learning spend"        '$2.11 on 363 shadow + judge calls'
# routing share: one bar per non-empty (backend, minute): 60 minutes x 2 backends
count_in "share bars"          chart-share 'class="bar"' 120
count_in "share bars fast"     chart-share 'data-backend="fast"' 60
expect "share legend"          'fast 72.9%'
# cost: the routed line and the all-strong line, with their end values
count_in "cost lines"          chart-cost 'class="line ' 2
expect "cost baseline label"   '>$28.09<'
# latency: p50/p95/p99 per backend, labelled
count_in "latency bars"        chart-latency 'class="bar"' 6
expect "fast p50 label"        '>844 ms<'
expect "strong p50 label"      '>4.26 s<'
expect "strong p99 label"      '>13.3 s<'
# score histogram: 20 non-empty bins, axis 0..1
count_in "score bars"          chart-score 'class="bar"' 20
expect "score axis"            '>0.50<'
expect "axis titles"           '>difficulty score<'
# tables
# 2 backends x 6 numeric columns (strong's errors cell carries a title) + 10 error
# statuses (the table shows the latest 10) + 1 fallback row
count "numeric cells"          '<td class="num">' 22
count "error rows"             '<td class="id">' 10
expect "errors hint"           'latest 10 of 15'
expect "newest error first"    '<td>07:56:54</td><td>strong</td>'
expect "backend row"           '>1,770</td><td class="num">5</td><td class="num">0</td><td class="num">180 ms</td><td class="num">$0.654</td><td class="num">0.83 (41)</td>'
# honest errors: strong's own 10 plus 14 attempts it failed before a retry or fallback
expect "strong errors"         'title="14 of them attempts retried or fallen back from">24</td><td class="num">9</td>'
expect "error split"           '0.62% of requests · 29 backend, 0 client'
# fallbacks: strong -> fast, 9 requests
count "fallback rows"          '<tr class="fallback">' 1
expect "fallback pair"         'strong</span></td><td class="arrow">→</td><td><span><span class="sw"'
expect "fallback count"        '>fast</span></td><td class="num">9</td>'
expect "fallbacks hint"        '9 of 2,427 requests (0.37%)'

expect "error kind"            '>timeout<'
# shares held online: a row per tier of each route (2 + 3), 4 figures each
count "share cells"            '<td class="num share">' 18
count "share off target"       '<td class="num share off">' 2
expect "share row"             '<td>think</td><td>fast</td><td class="num share">40.0%</td><td class="num share">40.2%</td><td class="num share">40.2%</td><td class="num share">0.593</td>'
expect "share last tier"       '<td>strong</td><td class="num share">20.0%</td><td class="num share off">26.0%</td><td class="num share">20.0%</td><td class="num share">–</td>'
expect "shares hint"           'live, since start: triage 2,306, think 500'
# share of requests vs spend: two 100% bars of two backends each
count_in "mix bars"            chart-mix 'class="mix"' 4
expect "spend share label"     '>93%<'

# stable colours: a backend's swatch colour comes from its name (FNV-1a), the same on
# every load whatever else is in the window
expect "fast colour"           'background: rgb(155, 89, 182);'
expect "strong colour"         'background: rgb(43, 182, 115);'

# run_page FIXTURE|--unauthorized OUT: the page's DOM against another server.
run_page() {
    "$server" "$1" 0 >"$tmp/port2" &
    p2=$!
    for _ in $(seq 50); do
        grep -q '^port ' "$tmp/port2" 2>/dev/null && break
        sleep 0.1
    done
    run_chromium --window-size=1280,900 --dump-dom \
        "http://127.0.0.1:$(sed -n 's/^port //p' "$tmp/port2")/dashboard" >"$2"
    kill "$p2" 2>/dev/null
    wait "$p2" 2>/dev/null
}
# money: float residue (a saving of -1.4e-20) prints as $0, tiny spend without exponent
sed 's/"saving_usd": 18.409222/"saving_usd": -1.4e-20/; s/"judge_cost_usd": 0.8765/"judge_cost_usd": 0.0000031/; s/"shadow_cost_usd": 1.2345/"shadow_cost_usd": 0/' \
    "$fixture" >"$tmp/tiny.json"
run_page "$tmp/tiny.json" "$tmp/tiny.html"
if grep -qF 'id="kpi-saving">$0<' "$tmp/tiny.html" && grep -qF '$0.0000031 on 363' "$tmp/tiny.html" \
    && ! grep -q 'e-[0-9]' "$tmp/tiny.html"; then
    echo "ok   money rounding"
else
    echo "FAIL money rounding: $(grep -o 'id="kpi-saving">[^<]*<' "$tmp/tiny.html") $(grep -o '[^>]* on 363' "$tmp/tiny.html")"
    fail=1
fi
# a 401 says how to pass the key
run_page --unauthorized "$tmp/401.html"
if grep -qF '/dashboard#key=YOUR_KEY' "$tmp/401.html" && grep -qF 'stats_need_admin' "$tmp/401.html"; then
    echo "ok   401 banner"
else
    echo "FAIL 401 banner: $(grep -o 'id="banner"[^<]*<' "$tmp/401.html")"
    fail=1
fi

# model versions: a reign per change, a marker per change in the window, the rollback
# named, and the registry's rows newest first
count_in "model markers"       chart-models 'class="marker ' 3
count_in "rollback marker"     chart-models 'class="marker rollback"' 1
count_in "model reigns"        chart-models 'class="reign"' 3
expect "models hint"           'serving 101de45d · 3 retrains, 2 promoted since start'
count "model rows"             '<td class="id vers">' 4
expect "newest version first"  '<td class="id vers">072604a0</td><td><span class="pill retired">retired</span></td><td>retrain</td>'
expect "held-out delta"        '>+0.037 (a84c7543)<'

run_chromium --window-size=1280,1500 --screenshot="$outdir/dashboard.png" "$url" >/dev/null
if [ -s "$outdir/dashboard.png" ]; then
    echo "screenshot: $outdir/dashboard.png"
else
    echo "FAIL: no screenshot"
    fail=1
fi
exit $fail
