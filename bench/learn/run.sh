#!/usr/bin/env bash
# bench/learn/run.sh - the learning loop end to end, offline, and its learning curve.
#
# Half of GSM8K test (RouteLLM's 1,307 contamination-free prompts, split by a seeded
# shuffle) flows through triaged with [learning] shadow_rate = 1 and `triage replay
# --judge` as the judge: Mixtral's and GPT-4's recorded answers are the two tiers, the
# judge grades each answer against GSM8K's reference, and the labels land in the log.
# Then models are trained from the log alone (no human label, no shipped data) on the
# first N judged prompts and evaluated (APGR, `triage eval`) on the other half against
# RouteLLM's recorded correctness, beside the shipped model, random routing and a model
# trained on the same prompts' true labels.
#
#   bench/learn/run.sh [--build DIR] [--seed N] [--noise P]
#
# --noise P makes the judge give a wrong or unparseable verdict on a share P of answers.
# Needs python3 (for the split and the client) and a built tree (default: build).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$root/build
seed=1
noise=0
while [ $# -gt 0 ]; do
    case $1 in
    --build) build=$(cd "$2" && pwd); shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --noise) noise=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--seed N] [--noise P]" >&2; exit 2 ;;
    esac
done
triage=$build/cli/triage
triaged=$build/daemon/triaged
tmp=$(mktemp -d /tmp/triage-learn-bench-XXXXXX)
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# The split: A flows through the daemon, B is the test half.
python3 - "$root/data/routellm_gsm8k.jsonl.gz" "$tmp" "$seed" <<'PY'
import gzip, json, random, sys
rows = [json.loads(l) for l in gzip.open(sys.argv[1], 'rt')]
random.Random(int(sys.argv[3])).shuffle(rows)
half = len(rows) // 2
with open(sys.argv[2] + '/A.jsonl', 'w') as f:
    for r in rows[:half]:
        f.write(json.dumps(r) + '\n')
with open(sys.argv[2] + '/B.jsonl', 'w') as f:
    for r in rows[half:]:
        f.write(json.dumps(r) + '\n')
PY

# spawn NAME ARGS...: starts a replay on a free port; sets $port.
spawn() {
    local name=$1
    shift
    "$triage" replay --port 0 "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pids+=($!)
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on \([0-9]*\).*/\1/p' "$tmp/$name.out")
        [ -n "$port" ] && return 0
        sleep 0.05
    done
    echo "$name did not start" >&2
    exit 1
}
spawn fast --answers mixtral-8x7b-instruct; fast=$port
spawn strong --answers gpt-4-1106-preview; strong=$port
spawn judge --judge --judge-noise "$noise"; judge=$port
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$tmp/learn.conf" <<CONF
[server]
listen = 127.0.0.1
port = $port
workers = 1
log_level = warn
[router]
model = $root/models/default.tmod
tiers = fast, strong
[storage]
path = $tmp/learn.db
store_prompts = full
flush_interval_ms = 50
[learning]
shadow_rate = 1
judge = judge
shadow_budget_usd_per_day = 1000
max_concurrent = 8
[backend fast]
url = http://127.0.0.1:$fast/v1
model = mixtral-8x7b-instruct
head = weak
price_input = 0.6
price_output = 0.6
[backend strong]
url = http://127.0.0.1:$strong/v1
model = gpt-4-1106-preview
head = strong
price_input = 10
price_output = 30
[backend judge]
url = http://127.0.0.1:$judge/v1
model = judge
price_input = 10
price_output = 30
CONF
"$triaged" --config "$tmp/learn.conf" 2>"$tmp/triaged.err" &
pids+=($!)
for _ in $(seq 100); do
    curl -sf "127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.05
done

# Half A through the daemon, as a client would send it (model "triage", no labels).
python3 - "$tmp/A.jsonl" "$port" <<'PY'
import json, sys, urllib.request
ok = 0
for line in open(sys.argv[1]):
    body = json.dumps({"model": "triage",
                       "messages": [{"role": "user", "content": json.loads(line)["prompt"]}]})
    req = urllib.request.Request("http://127.0.0.1:%s/v1/chat/completions" % sys.argv[2],
                                 body.encode(), {"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        ok += r.status == 200
print("sent %d prompts, %d answered 200" % (sum(1 for _ in open(sys.argv[1])), ok))
PY
n_a=$(wc -l <"$tmp/A.jsonl")
# wait until every answer is judged (or nothing moves for 10 s)
last=-1; still=0
while :; do
    n=$(sqlite3 "$tmp/learn.db" "SELECT count(*) FROM outcomes" 2>/dev/null || echo 0)
    [ "$n" -ge $((2 * n_a)) ] && break
    if [ "$n" = "$last" ]; then still=$((still + 1)); else still=0; fi
    [ $still -ge 100 ] && break
    last=$n
    sleep 0.1
done
curl -s "127.0.0.1:$port/metrics" | grep '^triage_learning' | sed 's/^/  /'
kill "${pids[@]}" 2>/dev/null || true
wait 2>/dev/null || true
pids=()

labels=$(sqlite3 "$tmp/learn.db" "SELECT count(*) FROM outcomes")
prompts=$(sqlite3 "$tmp/learn.db" "SELECT count(DISTINCT request_id) FROM outcomes")
agree=$(python3 - "$tmp/A.jsonl" "$tmp/learn.db" <<'PY'
import json, sqlite3, sys
truth = {}
for l in open(sys.argv[1]):
    r = json.loads(l); truth[r["prompt"]] = r["outcomes"]
db = sqlite3.connect(sys.argv[2])
rows = db.execute("""SELECT r.prompt, o.backend, o.q FROM outcomes o JOIN requests r
                     ON r.request_id = o.request_id""").fetchall()
n = a = 0
for prompt, backend, q in rows:
    text = json.loads(prompt)[-1]["content"]
    t = truth.get(text, {}).get("weak" if backend == "fast" else "strong")
    if t is None: continue
    n += 1; a += (q >= 0.5) == (t >= 0.5)
print("%.3f" % (a / n if n else 0))
PY
)
echo "judge labels: $labels for $prompts of $n_a prompts; agreement with RouteLLM's labels: $agree"

"$triage" export --db "$tmp/learn.db" --config "$tmp/learn.conf" --out "$tmp/log.jsonl" 2>/dev/null
eval_apgr() { # MODEL -> APGR on B
    "$triage" eval --model "$1" --data "$tmp/B.jsonl" --weak weak --strong strong 2>/dev/null |
        awk '$1 == "model" { print $3 }'
}
echo
echo "| judged prompts trained on | APGR on the other half (from the log) | same prompts, true labels |"
echo "|---:|---:|---:|"
for k in 50 100 200 400 $prompts; do
    [ "$k" -gt "$prompts" ] && continue
    head -n "$k" "$tmp/log.jsonl" >"$tmp/log_$k.jsonl"
    "$triage" train --data "$tmp/log_$k.jsonl" --out "$tmp/m_$k.tmod" >/dev/null 2>&1
    python3 - "$tmp/log_$k.jsonl" "$tmp/A.jsonl" "$tmp/true_$k.jsonl" <<'PY'
import json, sys
truth = {}
for l in open(sys.argv[2]):
    r = json.loads(l); truth[r["prompt"]] = r
with open(sys.argv[3], 'w') as f:
    for l in open(sys.argv[1]):
        text = json.loads(l)["messages"][-1]["content"]
        if text in truth:
            f.write(json.dumps(truth[text]) + '\n')
PY
    "$triage" train --data "$tmp/true_$k.jsonl" --out "$tmp/t_$k.tmod" >/dev/null 2>&1
    echo "| $k | $(eval_apgr "$tmp/m_$k.tmod") | $(eval_apgr "$tmp/t_$k.tmod") |"
done
"$triage" train --db "$tmp/learn.db" --config "$tmp/learn.conf" --out "$tmp/db.tmod" >/dev/null 2>&1
echo
echo "triage train --db --config (all judged prompts): APGR $(eval_apgr "$tmp/db.tmod")"
echo "shipped model:                                  APGR $(eval_apgr "$root/models/default.tmod")"
"$triage" eval --model "$root/models/default.tmod" --data "$tmp/B.jsonl" --weak weak \
    --strong strong --baselines 2>/dev/null | sed 's/^/  /'
