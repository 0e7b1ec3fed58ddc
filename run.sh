#!/usr/bin/env bash
# run.sh - build triage and start it offline on loopback: two `triage replay`
# backends (a fast, cheap model and a strong, expensive one, answering GSM8K prompts
# with their recorded real answers) and `triaged` with the shipped default model and
# example config. Ctrl-C stops all three. Then, in another terminal:
#   build/cli/triage demo            # route the GSM8K test set and print the table
#   build/cli/triage demo --learn    # the learning loop: labels, retrains, learning curve
#   curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \
#        -d '{"model":"triage","messages":[{"role":"user","content":"What is 2+2?"}]}'
set -euo pipefail
cd "$(dirname "$0")"

# Install what building and running needs when it is missing (Debian 12):
# .ci/packages-run only (SQLite's log needs no more: the PostgreSQL store is built only
# when libpq-dev is there, see README). The test tools (.ci/packages: chromium, prometheus, nginx,
# wrk, clang, cmocka, ...) are for `bash .ci/run`, not for a user's machine.
if ! pkg-config --exists libmicrohttpd libcurl libuv jansson sqlite3 libcrypto zlib 2>/dev/null \
    || ! command -v meson >/dev/null || ! command -v ninja >/dev/null \
    || ! command -v cc >/dev/null; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $(cat .ci/packages-run)
fi

[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null

pids=()
cleanup() {
    trap - EXIT INT TERM
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

data=data/replay/gsm8k.jsonl.gz
# Prompts outside the recorded set get a fallback answer instead of an error.
unknown="(offline replay) No recorded answer for this prompt: the demo backends know the GSM8K test questions. Configure real backends in conf/triage.conf to get real answers."
# Output-token latencies mimic a fast small model and a slower large one.
build/cli/triage replay --data "$data" --answers mixtral-8x7b-instruct \
    --port 9001 --ms-per-token 2 --fallback-answer "$unknown" &
pids+=($!)
build/cli/triage replay --data "$data" --answers gpt-4-1106-preview \
    --port 9002 --ms-per-token 8 --fallback-answer "$unknown" &
pids+=($!)

build/daemon/triaged --config conf/triage.conf &
pids+=($!)
echo "triaged: http://127.0.0.1:8080/v1  (model \"triage\" routes; Ctrl-C stops)" >&2
wait -n "${pids[@]}"
