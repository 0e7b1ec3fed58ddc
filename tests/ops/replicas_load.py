#!/usr/bin/env python3
"""replicas_load.py - the client of test_replicas.sh: N chat requests through the load
balancer from T threads on keep-alive connections, creating FILE when the count reaches
COUNT (the test kills or restarts a replica then, while the load goes on). Writes one
line per request: "seq status request_id upstream backend t_ms" ("-" when absent).

usage: replicas_load.py URL KEY N THREADS OUT [--at COUNT FILE]...
"""
import http.client, json, sys, threading, time, urllib.parse

url, key, n, threads, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
marks = {}
args = sys.argv[6:]
while args:
    assert args[0] == "--at"
    marks[int(args[1])] = args[2]
    args = args[3:]

u = urllib.parse.urlparse(url)
body = json.dumps({"model": "triage", "messages": [{"role": "user", "content": "what is 2+2"}]})
lock = threading.Lock()
next_seq = [0]
rows = []


def take():
    with lock:
        if next_seq[0] >= n:
            return None
        s = next_seq[0]
        next_seq[0] += 1
        return s


def worker():
    conn = None
    while True:
        s = take()
        if s is None:
            break
        if s in marks:
            open(marks[s], "w").close()
        for attempt in range(3):  # a connection nginx closed is reopened, not a failure
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                conn.request("POST", "/v1/chat/completions", body,
                             {"content-type": "application/json", "authorization": "Bearer " + key})
                r = conn.getresponse()
                r.read()
                row = (s, r.status, r.getheader("x-triage-request-id") or "-",
                       (r.getheader("x-upstream") or "-").replace(" ", ""), r.getheader("x-triage-backend") or "-",
                       int(time.time() * 1000))
                break
            except (ConnectionError, http.client.HTTPException, OSError):
                if conn:
                    conn.close()
                conn = None
                row = (s, 0, "-", "-", "-", int(time.time() * 1000))
        with lock:
            rows.append(row)
    if conn:
        conn.close()


ts = [threading.Thread(target=worker) for _ in range(threads)]
t0 = time.time()
for t in ts:
    t.start()
for t in ts:
    t.join()
with open(out, "w") as f:
    for r in sorted(rows):
        f.write(" ".join(str(x) for x in r) + "\n")
print("%d requests in %.1f s" % (len(rows), time.time() - t0))
