#!/usr/bin/env python3
"""replicas_verdict.py - test_replicas.sh's bookkeeping.

replicas_verdict.py LOAD ROWS KILLED KILLED_AT_MS
    LOAD: replicas_load.py's lines; ROWS: the request ids in PostgreSQL; KILLED: the
    upstream address of the replica killed with SIGKILL. Prints "key value" lines:
    answered (answers from triaged), survivor_rows, missing (answered by a live
    replica, no row: must be 0), lost (answered by the killed one, no row), the lost
    rows' time span and how long before the kill the first was answered, logged (the
    rows the log must hold), errors and backend_NAME counts among them.
replicas_verdict.py --stats STATS_JSON VERDICT
    Prints "ok ..." when /v1/stats equals the logged counts, else "differ ...".
"""
import json
import sys


def stats(path, verdict):
    s = json.load(open(path))
    v = dict(line.split() for line in open(verdict))
    ok = s["requests"] == int(v["logged"]) and s["errors"] == int(v["errors"])
    for k, c in v.items():
        if k.startswith("backend_") and k != "backend_(none)":  # rows without a backend are nobody's
            ok = ok and s["backends"].get(k[8:], {}).get("requests") == int(c)
    print("ok" if ok else "differ", "requests", s["requests"], "errors", s["errors"],
          "backends", {k: x["requests"] for k, x in s["backends"].items()},
          "client", v["logged"], v["errors"])


def verdict(load, rows, killed, killed_at):
    have = set(line.strip() for line in open(rows))
    answered = survivors = missing = errors = 0
    lost = []
    by_backend = {}
    for line in open(load):
        _seq, status, rid, up, backend, t = line.split()
        if rid == "-":
            continue  # no answer from triaged (nginx could not reach a replica)
        answered += 1
        last = up.split(",")[-1].strip()
        if rid in have:
            if int(status) >= 400:
                errors += 1
            by_backend[backend if backend != "-" else "(none)"] = \
                by_backend.get(backend if backend != "-" else "(none)", 0) + 1
            if last != killed:
                survivors += 1
        elif last == killed:
            lost.append(int(t))
        else:
            missing += 1
    print("answered", answered)
    print("survivor_rows", survivors)
    print("missing", missing)
    print("lost", len(lost))
    print("lost_window_ms", (max(lost) - min(lost)) if lost else 0)
    print("lost_before_kill_ms", (killed_at - min(lost)) if lost else 0)
    print("logged", answered - missing - len(lost))
    print("errors", errors)
    for b, c in sorted(by_backend.items()):
        print("backend_" + b, c)


if sys.argv[1] == "--stats":
    stats(sys.argv[2], sys.argv[3])
else:
    verdict(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
