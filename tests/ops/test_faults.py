#!/usr/bin/env python3
"""test_faults.py - what an operator's machine does to a running triaged, and bad input
to the triage CLI.

    test_faults.py TRIAGED TRIAGE MOCKLLM MAKE_MODEL [GROUP...]

Groups (default: all):
  storage  the SQLite log's disk fills (a small tmpfs; skipped where mount is refused),
           its file is deleted or replaced underneath, another process holds its lock
           past the busy timeout, a corrupt file at start. After each fault triaged still
           answers, /readyz says degraded with the error, and once the fault clears every
           request's row is in the log (no row lost within the queue's bound).
  reload   SIGHUP and POST /admin/reload with configs and model files that are invalid,
           truncated, unreadable, a directory, huge, garbage; a storm of SIGHUPs under
           load. The old config and model keep serving; the admin reply names the error.
  cli      every triage subcommand against garbage JSONL, foreign and corrupt SQLite
           files, missing files, unwritable outputs: a message and a non-zero exit, never
           a signal or a sanitizer report.
  signals  SIGPIPE, SIGTERM twice while streams are held, few file descriptors.
Every wait polls with a generous upper bound; nothing asserts how fast anything is.
"""
import http.client
import json
import os
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time

failures = []
HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZER = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
             "AddressSanitizer:DEADLYSIGNAL", "Assertion", "Aborted")
WAIT = 60  # s: upper bound of every poll


def fail(what):
    failures.append(what)
    print("FAIL: " + what, file=sys.stderr, flush=True)


def note(what):
    print(what, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def poll(cond, timeout=WAIT, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def request(port, method, path, body=None, timeout=30, headers=None):
    """Returns (status, parsed JSON or raw bytes); (0, error text) when no answer came."""
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
    except (OSError, http.client.HTTPException) as e:
        return 0, str(e)
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data


def chat(port, text="what is 3 plus 5"):
    return request(port, "POST", "/v1/chat/completions",
                   json.dumps({"model": "triage",
                               "messages": [{"role": "user", "content": text}]}))


class Mock:
    def __init__(self, mockllm):
        self.proc = subprocess.Popen([mockllm, "--port", "0", "--listen", "127.0.0.1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on"):
            raise SystemExit("mockllm did not start: %r" % line)
        self.port = int(line.split()[-1])

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


class Daemon:
    """One triaged in its own directory; the log at db (relative to dir or absolute)."""

    def __init__(self, triaged, make_model, mock, db="t.db", extra="", storage_extra="",
                 start=True):
        self.triaged, self.mock = triaged, mock
        self.dir = tempfile.mkdtemp(prefix="triage-faults-")
        self.port = free_port()
        self.db = db if os.path.isabs(db) else os.path.join(self.dir, db)
        self.model = os.path.join(self.dir, "m.tmod")
        subprocess.check_call([make_model, self.model], stdout=subprocess.DEVNULL)
        self.conf = os.path.join(self.dir, "t.conf")
        self.storage_extra, self.extra = storage_extra, extra
        self.write_conf()
        self.errpath = os.path.join(self.dir, "triaged.err")
        self.proc = None
        if start:
            self.start()

    def conf_text(self, model="m.tmod", level="info"):
        return ("[server]\nlisten = 127.0.0.1\nport = %d\nworkers = 2\nlog_level = %s\n"
                "shutdown_timeout_ms = 3000\n%s"
                "[router]\nmodel = %s\ntiers = fast, strong\n"
                "[storage]\npath = %s\nflush_interval_ms = 20\ndegraded_hold_ms = 500\n%s"
                "[backend fast]\nurl = http://127.0.0.1:%d/v1\nprice_input = 1\n"
                "price_output = 1\n"
                "[backend strong]\nurl = http://127.0.0.1:%d/v1\nprice_input = 10\n"
                "price_output = 30\n"
                % (self.port, level, self.extra, model, self.db, self.storage_extra,
                   self.mock.port, self.mock.port))

    def write_conf(self, text=None):
        with open(self.conf, "w") as f:
            f.write(text if text is not None else self.conf_text())

    def start(self, wait=True):
        self.err = open(self.errpath, "a")
        self.proc = subprocess.Popen([self.triaged, "--config", self.conf], cwd=self.dir,
                                     stderr=self.err, stdout=subprocess.DEVNULL)
        if wait and not poll(self.healthy):
            raise SystemExit("triaged did not start; see " + self.errpath)

    def healthy(self):
        if self.proc.poll() is not None:
            return False
        return request(self.port, "GET", "/healthz", timeout=5)[0] == 200

    def readyz(self):
        return request(self.port, "GET", "/readyz", timeout=10)

    def stderr(self):
        with open(self.errpath, errors="replace") as f:
            return f.read()

    def stop(self, sig=signal.SIGTERM):
        """Stops triaged; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self.err.close()
        return rc

    def finish(self, what):
        """Stops triaged and checks it stopped cleanly with no sanitizer report; removes
        its directory while nothing has failed."""
        rc = self.stop()
        if rc != 0:
            fail("%s: triaged exited %d; see %s" % (what, rc, self.errpath))
        for s in SANITIZER:
            if s in self.stderr():
                fail("%s: %r in triaged's stderr (%s)" % (what, s, self.errpath))
                break
        if not failures:
            shutil.rmtree(self.dir, ignore_errors=True)


def rows(db, where="1"):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return c.execute("SELECT count(*) FROM requests WHERE " + where).fetchone()[0]
    finally:
        c.close()


def serve_n(d, n, what):
    """n chat requests; each must be a 200."""
    for i in range(n):
        st, body = chat(d.port, "%s question %d" % (what, i))
        if st != 200:
            fail("%s: request %d answered %s %r" % (what, i, st, body))
            return False
    return True


def expect_degraded(d, what):
    st = poll(lambda: (lambda r: r if r[0] == 200 and isinstance(r[1], dict) and
                       r[1].get("status") == "degraded" else None)(d.readyz()))
    if not st:
        fail("%s: /readyz never said degraded: %r" % (what, d.readyz()))
        return
    if not st[1].get("storage_error"):
        fail("%s: /readyz degraded without a reason: %r" % (what, st[1]))


def expect_rows(d, n, what, where="1"):
    """The log ends up holding n rows (its writer retries once the fault is gone)."""
    got = poll(lambda: (lambda k: k if k == n else None)(count_or_none(d.db, where)))
    if got != n:
        fail("%s: %s rows in the log, %d requests served (readyz %r)" %
             (what, count_or_none(d.db, where), n, d.readyz()))


def count_or_none(db, where="1"):
    try:
        return rows(db, where)
    except sqlite3.Error:
        return None


# ---- storage ----

def mount_tmpfs(path, size):
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return r.returncode == 0, r.stderr.decode().strip()


def fill(path):
    """Writes a file until the file system is full."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def storage_disk_full(a):
    mnt = tempfile.mkdtemp(prefix="triage-faults-mnt-")
    ok, why = mount_tmpfs(mnt, "4m")
    if not ok:
        note("SKIP storage disk full: cannot mount a tmpfs (%s)" % why)
        os.rmdir(mnt)
        return
    try:
        d = Daemon(a.triaged, a.make_model, a.mock, db=os.path.join(mnt, "t.db"))
        try:
            serve_n(d, 3, "disk full: before")
            expect_rows(d, 3, "disk full: before")
            fill(os.path.join(mnt, "filler"))
            # The WAL may still have room for a few pages: write until a batch fails.
            n = 3
            for i in range(200):
                if not serve_n(d, 1, "disk full"):
                    break
                n += 1
                st = d.readyz()
                if isinstance(st[1], dict) and st[1].get("status") == "degraded":
                    break
                time.sleep(0.02)
            expect_degraded(d, "disk full")
            serve_n(d, 5, "disk full: while full")
            n += 5
            st, body = request(d.port, "POST", "/v1/feedback",
                               json.dumps({"request_id": "req_nope", "score": 1}))
            if st not in (404, 503):
                fail("disk full: feedback answered %d %r" % (st, body))
            time.sleep(1.5)  # past the writer's first retries
            os.unlink(os.path.join(mnt, "filler"))
            expect_rows(d, n, "disk full: after the space came back")
            if not poll(lambda: d.readyz()[1].get("status") == "ready"):
                fail("disk full: /readyz never ready again: %r" % (d.readyz(),))
            if "database or disk is full" not in d.stderr():
                fail("disk full: no warning naming the error in the log")
        finally:
            d.finish("disk full")
    finally:
        subprocess.run(["umount", "-l", mnt])
        os.rmdir(mnt)


def storage_deleted(a):
    d = Daemon(a.triaged, a.make_model, a.mock)
    try:
        serve_n(d, 2, "deleted")
        expect_rows(d, 2, "deleted: before")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(d.db + suffix)
            except FileNotFoundError:
                pass
        serve_n(d, 4, "deleted")
        # The rows since go to a new file at the same path, not into the deleted one.
        expect_rows(d, 4, "deleted: the new file")
    finally:
        d.finish("deleted")


def storage_replaced(a):
    d = Daemon(a.triaged, a.make_model, a.mock)
    try:
        serve_n(d, 2, "replaced")
        expect_rows(d, 2, "replaced: before")
        tmp = d.db + ".new"
        with open(tmp, "wb") as f:
            f.write(os.urandom(8192))
        for suffix in ("-wal", "-shm"):
            try:
                os.unlink(d.db + suffix)
            except FileNotFoundError:
                pass
        os.rename(tmp, d.db)
        serve_n(d, 3, "replaced by garbage")
        expect_degraded(d, "replaced by garbage")
        if not d.healthy():
            fail("replaced by garbage: /healthz does not answer")
        st, body = request(d.port, "GET", "/v1/stats?window=1h")
        if st != 503:
            fail("replaced by garbage: stats answered %d %r" % (st, body))
        os.unlink(d.db)
        # The garbage gone, a new log is made and the queued rows land in it.
        expect_rows(d, 3, "replaced, then removed: the new file")
    finally:
        d.finish("replaced")


def storage_locked(a):
    d = Daemon(a.triaged, a.make_model, a.mock)
    try:
        serve_n(d, 2, "locked")
        expect_rows(d, 2, "locked: before")
        c = sqlite3.connect("file:%s?mode=ro" % d.db, uri=True)
        known = c.execute("SELECT request_id FROM requests LIMIT 1").fetchone()[0]
        c.close()
        held = threading.Event()
        release = threading.Event()

        def hold():
            c = sqlite3.connect(d.db, timeout=30, isolation_level=None)
            c.execute("BEGIN EXCLUSIVE")
            held.set()
            release.wait(60)
            c.execute("ROLLBACK")
            c.close()

        t = threading.Thread(target=hold)
        t.start()
        held.wait(30)
        serve_n(d, 5, "locked")
        # Longer than the writer's busy timeout (5 s) and its retries (250 + 500 ms).
        expect_degraded(d, "locked")
        st, body = request(d.port, "POST", "/v1/feedback",
                           json.dumps({"request_id": known, "label": "good"}))
        if st != 503 or body.get("error", {}).get("code") != "storage_unavailable":
            fail("locked: feedback answered %d %r" % (st, body))
        time.sleep(6)
        if not d.healthy():
            fail("locked: /healthz does not answer")
        release.set()
        t.join()
        expect_rows(d, 7, "locked: after the lock went")
    finally:
        d.finish("locked")


def storage_corrupt_start(a):
    """A log file that is not a database at start: triaged serves anyway, degraded with
    the reason, queues the rows, and writes them once the file is moved away."""
    d = Daemon(a.triaged, a.make_model, a.mock, start=False)
    with open(d.db, "wb") as f:
        f.write(b"SQLite format 3\0" + os.urandom(4096 - 16))
    d.start(wait=False)
    try:
        if not poll(d.healthy):
            fail("corrupt log at start: triaged does not answer (status %s): %s" %
                 (d.proc.poll(), d.stderr()[-400:]))
            return
        expect_degraded(d, "corrupt log at start")
        serve_n(d, 3, "corrupt log at start")
        st, body = request(d.port, "GET", "/v1/stats?window=1h")
        if st != 503:
            fail("corrupt log at start: stats answered %d %r" % (st, body))
        os.rename(d.db, d.db + ".corrupt")
        expect_rows(d, 3, "corrupt log moved away: the new file")
    finally:
        d.finish("corrupt log at start")


# ---- cli ----

def run_cli(a, args, stdin=b"", timeout=120, env=None, with_stdout=False):
    """Runs triage; returns (status, stderr text). A timeout is status None. With
    with_stdout the text is stderr and stdout (triage score reports a line's error on
    stdout, in its place)."""
    try:
        r = subprocess.run([a.triage] + args, input=stdin, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout, cwd=a.work, env=env)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    text = r.stderr.decode(errors="replace")
    if with_stdout:
        text += r.stdout.decode(errors="replace")
    return r.returncode, text


def expect_refusal(a, what, args, stdin=b"", ok_zero=False, with_stdout=False):
    """triage must exit with a status (1..125) and a message, or 0 where the input is
    valid after all (ok_zero); never a signal, a sanitizer report or silence."""
    rc, err = run_cli(a, args, stdin, with_stdout=with_stdout)
    bad = rc is None or rc < 0 or rc > 125 or any(x in err for x in SANITIZER)
    if not bad and rc == 0 and not ok_zero:
        bad = True
    if not bad and rc != 0 and not err.strip():
        bad = True
    if bad:
        fail("cli %s: triage %s -> status %s: %s" % (what, " ".join(args), rc, err[-600:]))


def bad_jsonl(d):
    """Files of hostile JSONL, by name."""
    deep = b"[" * 100000 + b"]" * 100000
    files = {
        "empty": b"",
        "blank": b"\n\n  \n",
        "notjson": b"hello\n",
        "utf8": b'{"prompt": "\xff\xfe\xc0\x80 bad", "outcomes": {"weak": 1, "strong": 0}}\n',
        "nul": b'{"prompt": "a\x00b", "outcomes": {"weak": 1, "strong": 0}}\n',
        "types": b'{"prompt": 5, "outcomes": {"weak": "x", "strong": []}}\n'
                 b'{"messages": "x", "outcomes": 3}\n{"messages": [1, null, {"role": 5}]}\n'
                 b'[1, 2]\nnull\n"str"\n{"prompt": "a", "outcomes": {"weak": 1e400}}\n',
        "nan": b'{"prompt": "a", "outcomes": {"weak": NaN, "strong": Infinity}}\n'
               b'{"prompt": "b", "outcomes": {"weak": -1, "strong": 2}}\n',
        "deep": deep + b"\n",
        "huge": b'{"prompt": "' + b"a" * (20 << 20) + b'", "outcomes": {"weak": 1}}\n',
        "longword": b'{"prompt": "' + b"\xe4\xb8\x80" * 300000 + b'"}\n',
        "binary": os.urandom(65536),
        "gz": b"\x1f\x8b\x08\x00" + os.urandom(200),
        "answers": b'{"prompt": "a", "outcomes": {"weak": 1, "strong": 0},'
                   b' "answers": {"weak": {"text": 5, "logprobs": "x"}},'
                   b' "answer_signals": {"weak": "!!!notbase64", "strong": "VEE="}}\n',
        "features": b'{"features": "VEYBAAAA", "prompt_hash": "zz", "outcomes": {"weak": 1}}\n'
                    b'{"features": 7, "outcomes": {"weak": 1}}\n',
    }
    out = {}
    for name, data in files.items():
        path = os.path.join(d, name + (".jsonl.gz" if name == "gz" else ".jsonl"))
        with open(path, "wb") as f:
            f.write(data)
        out[name] = path
    return out


def insert(c, sql, vals):
    """Inserts, unless the schema's constraints refuse these values."""
    try:
        c.execute(sql, vals)
    except sqlite3.IntegrityError:
        pass


def poisoned_db(a, path):
    """A triage log whose rows hold what no daemon writes: wrong types, garbage blobs,
    prompts that are not JSON, NULLs where values were expected."""
    rc, err = run_cli(a, ["models", "add", a.model, "--db", path])
    if rc != 0:
        fail("cli: triage models add on a new log failed: %s" % err)
        return
    c = sqlite3.connect(path)
    cols = [r[1] for r in c.execute("PRAGMA table_info(requests)")]
    junk = ["x", None, -1, 1e308, b"\xff\x00garbage", "9" * 40, float("nan"), "",
            '{"role": 5}', "[[[[", b"TF\x01\x20\x00\x00\x00\x00" + b"\xff" * 40,
            b"TA\x01\x00" + b"\xff" * 200]
    for i in range(60):
        vals = {}
        for j, col in enumerate(cols):
            if col == "id":
                continue
            vals[col] = junk[(i * 7 + j * 3) % len(junk)]
        vals["request_id"] = "req_%d" % i
        vals["started_ms"] = int(time.time() * 1000) - i * 1000 if i % 3 else "soon"
        vals["kind"] = [None, "shadow", "judge", "cascade", "weird"][i % 5]
        vals["parent_id"] = "req_%d" % (i - 1)
        vals["prompt"] = ['[{"role":"user","content":"hi %d"}]' % i, "not json", b"\xff",
                          '{"messages": 3}', None][i % 5]
        names = ",".join(vals)
        insert(c, "INSERT INTO requests (%s) VALUES (%s)" % (names, ",".join("?" * len(vals))),
               list(vals.values()))
        insert(c, "INSERT OR REPLACE INTO outcomes (request_id, backend, source, q, detail,"
                  " created_ms) VALUES (?,?,?,?,?,?)",
                  ("req_%d" % i, junk[i % len(junk)], ["judge", "offline", "x"][i % 3],
                   junk[(i + 1) % len(junk)], junk[(i + 2) % len(junk)], junk[i % len(junk)]))
        insert(c, "INSERT OR REPLACE INTO feedback (request_id, source, score, label,"
                  " created_ms) VALUES (?,?,?,?,?)",
                  ("req_%d" % i, "client", junk[(i + 3) % len(junk)],
                   junk[(i + 4) % len(junk)], int(time.time() * 1000)))
    n = c.execute("SELECT count(*) FROM requests").fetchone()[0]
    if n < 30:
        fail("cli: the poisoned log took only %d rows" % n)
    # Costs JSON cannot sum (1e308 three times is inf) and token counts that overflow.
    for i in range(3):
        c.execute("INSERT INTO requests (request_id, started_ms, backend, status, cost_usd,"
                  " tokens_in, tokens_out, latency_ms, ttfb_ms, score, key_id) VALUES"
                  " (?, ?, 'fast', 200, 1e308, 9223372036854775807, 9223372036854775807,"
                  " 1e999, -1e999, 1e308, 'k')", ("big_%d" % i, int(time.time() * 1000)))
    c.execute("INSERT INTO models (version, path, parent, source, created_ms, promoted_ms,"
              " status) VALUES ('zz', ?, 'nope', 'manual', 'x', 'y', 'candidate')",
              (b"\xff\xfe",))
    c.commit()
    c.close()


def cli_bad_input(a):
    a.work = tempfile.mkdtemp(prefix="triage-faults-cli-")
    w = a.work
    a.model = os.path.join(w, "m.tmod")
    subprocess.check_call([a.make_model, a.model], stdout=subprocess.DEVNULL)
    files = bad_jsonl(w)
    models = {"garbage": os.urandom(4096), "empty": b"",
              "truncated": open(a.model, "rb").read()[:200],
              "half": open(a.model, "rb").read()[:len(open(a.model, "rb").read()) // 2]}
    for name, data in models.items():
        with open(os.path.join(w, name + ".tmod"), "wb") as f:
            f.write(data)
    os.mkdir(os.path.join(w, "adir"))
    dbs = {"garbage": os.urandom(8192), "empty": b"",
           "sqlite_header": b"SQLite format 3\0" + os.urandom(4080)}
    for name, data in dbs.items():
        with open(os.path.join(w, name + ".db"), "wb") as f:
            f.write(data)
    foreign = sqlite3.connect(os.path.join(w, "foreign.db"))
    foreign.execute("CREATE TABLE requests (a, b)")
    foreign.execute("INSERT INTO requests VALUES (1, 2)")
    foreign.commit()
    foreign.close()
    newer = sqlite3.connect(os.path.join(w, "newer.db"))
    newer.execute("CREATE TABLE t (a)")
    newer.execute("PRAGMA user_version = 9999")
    newer.commit()
    newer.close()
    poisoned = os.path.join(w, "poisoned.db")
    poisoned_db(a, poisoned)
    out = os.path.join(w, "out.tmod")

    for name, path in files.items():
        empty = name in ("empty", "blank")
        valid = name in ("huge", "longword", "answers")  # odd, but prompts all the same
        expect_refusal(a, "train --data " + name,
                       ["train", "--data", path, "--out", out, "--epochs", "1"], ok_zero=valid)
        expect_refusal(a, "score " + name, ["score", "--model", a.model],
                       stdin=open(path, "rb").read(), ok_zero=empty or valid, with_stdout=True)
        expect_refusal(a, "eval " + name, ["eval", "--model", a.model, "--data", path,
                                           "--weak", "weak", "--strong", "strong"])
        expect_refusal(a, "eval --cv " + name, ["eval", "--cv", "3", "--data", path,
                                                "--weak", "weak", "--strong", "strong",
                                                "--epochs", "1"])
        expect_refusal(a, "calibrate " + name, ["calibrate", "--model", a.model, "--data",
                                                path, "--strong-share", "0.5"], ok_zero=valid)
        expect_refusal(a, "key hash " + name, ["key", "hash", "bob"],
                       stdin=open(path, "rb").read()[:1 << 20], ok_zero=True)
    for name in list(models) + ["adir", "missing"]:
        m = os.path.join(w, name + ("" if name == "adir" else ".tmod"))
        expect_refusal(a, "score with model " + name, ["score", "--model", m],
                       stdin=b'{"prompt": "hi"}\n')
        expect_refusal(a, "calibrate with model " + name,
                       ["calibrate", "--model", m, "--strong-share", "0.5"])
        expect_refusal(a, "models add " + name, ["models", "add", m, "--db",
                                                  os.path.join(w, "reg.db")])
    for bad in ["nan", "-1", "2", "x", "1e999", ""]:
        expect_refusal(a, "calibrate share " + bad,
                       ["calibrate", "--model", a.model, "--strong-share", bad])
    for bad in ["x", "50,60", "-5,10", "nan,10", ",,,", "1e999,1"]:
        expect_refusal(a, "calibrate tiers " + bad, ["calibrate", "--model", a.model,
                                                      "--tiers", bad])
    for name in list(dbs) + ["foreign", "newer", "adir", "missing"]:
        db = os.path.join(w, name + ("" if name == "adir" else ".db"))
        expect_refusal(a, "stats --db " + name, ["stats", "--db", db])
        expect_refusal(a, "export --db " + name, ["export", "--db", db, "--out",
                                                  os.path.join(w, "x.jsonl")])
        expect_refusal(a, "train --db " + name, ["train", "--db", db, "--out", out])
        expect_refusal(a, "models list --db " + name, ["models", "list", "--db", db])
        expect_refusal(a, "models rollback --db " + name, ["models", "rollback", "--db", db])
    # The poisoned log: readable, so a 0 is fine; what matters is no crash.
    for args in (["stats", "--db", poisoned, "--json"], ["stats", "--db", poisoned],
                 ["stats", "--db", poisoned, "--window", "7d"],
                 ["export", "--db", poisoned, "--out", os.path.join(w, "p.jsonl")],
                 ["models", "list", "--db", poisoned], ["models", "list", "--db", poisoned,
                                                        "--json"],
                 ["models", "rollback", "--db", poisoned],
                 ["models", "promote", "zz", "--db", poisoned],
                 ["train", "--db", poisoned, "--out", out, "--epochs", "1"]):
        expect_refusal(a, "poisoned log", args, ok_zero=True)
    keys = os.path.join(w, "keys")
    with open(keys, "wb") as f:
        f.write(b"alice " + b"a" * 64 + b" budget_usd=5/day\n\xff\xfe junk\n" + os.urandom(300))
    expect_refusal(a, "key list garbage file", ["key", "list", "--file", keys, "--db", poisoned],
                   ok_zero=True)
    # Outputs that cannot be written, or must not be replaced: a directory, a missing
    # directory, a FIFO and (as root) a private twin of /dev/null. The model and the
    # export are written beside --out and renamed over it, which would turn a device or
    # a pipe into a regular file (as root, /dev/null itself).
    os.mkfifo(os.path.join(w, "fifo"))
    targets = ["/nonexistent/dir/out", os.path.join(w, "adir"), os.path.join(w, "fifo")]
    try:
        os.mknod(os.path.join(w, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        targets.append(os.path.join(w, "null"))
    except OSError:
        note("SKIP cli: a device node as --out (mknod refused)")
    for where in targets:
        expect_refusal(a, "train --out " + where,
                       ["train", "--db", poisoned, "--out", where, "--epochs", "1"])
        kind = os.stat(where).st_mode if os.path.exists(where) else None
        if kind is not None and stat.S_ISREG(kind):
            fail("cli: train --out %s replaced it with a regular file" % where)
        if where.endswith("/null"):
            rc, err = run_cli(a, ["export", "--db", poisoned, "--out", where])
            if rc != 0 or not stat.S_ISCHR(os.stat(where).st_mode):
                fail("cli: export --out a device: status %s, %s" % (rc, err[-300:]))
        elif not where.endswith("fifo"):
            expect_refusal(a, "export --out " + where,
                           ["export", "--db", poisoned, "--out", where])
        if not where.endswith("fifo"):  # opening a FIFO to append waits for a reader
            expect_refusal(a, "key add --file " + where,
                           ["key", "add", "--file", where, "carol"],
                           ok_zero=where.endswith("/null"))
    mnt = os.path.join(w, "small")
    os.mkdir(mnt)
    ok, why = mount_tmpfs(mnt, "64k")
    if not ok:
        note("SKIP cli: outputs on a full disk (cannot mount a tmpfs: %s)" % why)
    else:
        try:
            fill(os.path.join(mnt, "filler"))
            expect_refusal(a, "train --out on a full disk",
                           ["train", "--db", poisoned, "--out", os.path.join(mnt, "m.tmod"),
                            "--epochs", "1"])
            expect_refusal(a, "export --out on a full disk",
                           ["export", "--db", poisoned, "--out", os.path.join(mnt, "x.jsonl")])
            left = sorted(set(os.listdir(mnt)) - {"filler"})
            if left:
                fail("cli: a failed write on a full disk left %s" % left)
        finally:
            subprocess.run(["umount", "-l", mnt])
    if not failures:
        shutil.rmtree(w, ignore_errors=True)


# ---- reload ----

def generation(d):
    st, body = d.readyz()
    return body.get("generation") if st == 200 and isinstance(body, dict) else None


def reload_bad_files(a):
    d = Daemon(a.triaged, a.make_model, a.mock)
    try:
        good = d.conf_text()
        model = open(d.model, "rb").read()
        gen = generation(d)
        st, body = request(d.port, "POST", "/admin/reload")
        if st != 200:
            fail("reload: a good reload answered %s %r" % (st, body))
        gen = generation(d)
        confs = {
            "garbage key": good + "[server]\nno_such_key = 1\n",
            "truncated": good[:len(good) // 2],
            "empty": "",
            "binary": os.urandom(4096).decode("latin-1"),
            "bad utf-8": good.replace("tiers = fast, strong", "tiers = fast\udcff, strong"),
            "huge garbage": good + "x" * (20 << 20) + "\n",
            "huge comment": good + "# " + "x" * (20 << 20) + "\n",  # over the 16 MB cap
            "bad value": good.replace("workers = 2", "workers = 2").replace(
                "flush_interval_ms = 20", "flush_interval_ms = -5"),
            "nul": good.replace("[router]", "[rou\0ter]"),
        }
        for name, text in confs.items():
            with open(d.conf, "wb") as f:
                f.write(text.encode("utf-8", "surrogateescape"))
            check_bad_reload(d, "config " + name, gen)
        # The config path a directory, then missing.
        os.unlink(d.conf)
        os.mkdir(d.conf)
        check_bad_reload(d, "config is a directory", gen)
        os.rmdir(d.conf)
        check_bad_reload(d, "config missing", gen)
        # A FIFO blocked the reload for good (a device like /dev/zero was read until
        # memory ran out): only a regular file is read.
        os.mkfifo(d.conf)
        check_bad_reload(d, "config is a FIFO", gen)
        os.unlink(d.conf)
        os.symlink("/dev/null", d.conf)
        check_bad_reload(d, "config is /dev/null", gen)
        os.unlink(d.conf)
        # Model files.
        d.write_conf(good)
        models = {"garbage": os.urandom(4096), "empty": b"", "truncated": model[:100],
                  "half": model[:len(model) // 2], "header only": model[:32],
                  "flipped": model[:-40] + bytes(b ^ 0x5a for b in model[-40:])}
        for name, data in models.items():
            with open(d.model, "wb") as f:
                f.write(data)
            check_bad_reload(d, "model " + name, gen)
        os.unlink(d.model)
        os.mkdir(d.model)
        check_bad_reload(d, "model is a directory", gen)
        os.rmdir(d.model)
        check_bad_reload(d, "model missing", gen)
        with open(d.model, "wb") as f:
            f.write(model)
        st, body = request(d.port, "POST", "/admin/reload")
        if st != 200 or generation(d) == gen:
            fail("reload: the good files back, reload answered %s %r" % (st, body))
    finally:
        d.finish("reload bad files")


def check_bad_reload(d, what, gen):
    st, body = request(d.port, "POST", "/admin/reload", timeout=60)
    msg = body.get("error", {}).get("message", "") if isinstance(body, dict) else ""
    if st < 400 or not msg:
        fail("reload %s: /admin/reload answered %s %r" % (what, st, body))
    d.proc.send_signal(signal.SIGHUP)
    time.sleep(0.2)
    if not d.healthy():
        fail("reload %s: triaged does not answer after SIGHUP" % what)
        return
    if generation(d) != gen:
        fail("reload %s: the snapshot changed (generation %s, was %s)" %
             (what, generation(d), gen))
    st, body = chat(d.port)
    if st != 200:
        fail("reload %s: a request after it answered %s %r" % (what, st, body))


def reload_storm(a):
    """100 SIGHUPs while clients send requests, the model file rewritten in place (not
    atomically) meanwhile: every request is answered, triaged stays up."""
    d = Daemon(a.triaged, a.make_model, a.mock)
    stop = threading.Event()
    bad = []
    served = [0]
    model = open(d.model, "rb").read()

    def client():
        while not stop.is_set():
            st, body = chat(d.port)
            if st != 200:
                bad.append((st, body))
            served[0] += 1

    def scribbler():
        i = 0
        while not stop.is_set():
            with open(d.model, "r+b") as f:  # in place: a reader may see any mix
                f.write(model[:len(model) // 2] if i % 2 else os.urandom(len(model) // 2))
                f.truncate(len(model) // 3 if i % 3 == 0 else len(model))
                f.seek(0)
                f.write(model)
            i += 1
            time.sleep(0.003)

    threads = [threading.Thread(target=client) for _ in range(4)]
    threads.append(threading.Thread(target=scribbler))
    try:
        for t in threads:
            t.start()
        for i in range(100):
            d.proc.send_signal(signal.SIGHUP)
            time.sleep(0.01)
            if i % 10 == 0:
                request(d.port, "POST", "/admin/reload")
        stop.set()
        for t in threads:
            t.join()
        with open(d.model, "wb") as f:
            f.write(model)
        if bad:
            fail("reload storm: %d of %d requests failed, e.g. %r" % (len(bad), served[0],
                                                                      bad[0]))
        if not d.healthy():
            fail("reload storm: triaged does not answer")
        st, body = request(d.port, "POST", "/admin/reload")
        if st != 200:
            fail("reload storm: a good reload after it answered %s %r" % (st, body))
        note("   reload storm: %d requests served" % served[0])
    finally:
        stop.set()
        d.finish("reload storm")


# ---- signals ----

class SlowMock(Mock):
    """A backend whose streams take a while: 40 pieces, 100 ms apart."""

    def __init__(self, mockllm):
        self.proc = subprocess.Popen([mockllm, "--port", "0", "--listen", "127.0.0.1",
                                      "--chunks", "40", "--chunk-delay-ms", "100"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = self.proc.stdout.readline().decode()
        if not line.startswith("listening on"):
            raise SystemExit("mockllm did not start: %r" % line)
        self.port = int(line.split()[-1])


def open_stream(port):
    """Starts a streamed chat on a raw socket; returns the socket once the answer began."""
    body = json.dumps({"model": "triage", "stream": True,
                       "messages": [{"role": "user", "content": "tell a long story"}]})
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
               "application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode())
    s.recv(1)
    return s


def signals_drain(a):
    """SIGPIPE is ignored; SIGTERM with streams held, a SIGHUP during the drain, then a
    second SIGTERM: triaged exits by itself (no signal death) and every request that
    reached it has its row."""
    slow = SlowMock(a.mockllm)
    d = Daemon(a.triaged, a.make_model, slow, storage_extra="")
    try:
        d.proc.send_signal(signal.SIGPIPE)
        time.sleep(0.2)
        if not d.healthy():
            fail("SIGPIPE: triaged does not answer")
        streams = [open_stream(d.port) for _ in range(6)]
        # A client that hangs up mid-stream: the daemon writes into a closed socket.
        streams.pop().close()
        d.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGHUP)  # a reload during the drain
        time.sleep(0.3)
        d.proc.send_signal(signal.SIGTERM)  # the second: exit now
        try:
            rc = d.proc.wait(30)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            rc = "hung"
        for s in streams:
            s.close()
        d.err.close()
        if rc not in (0, 1):
            fail("SIGTERM twice: triaged exited %s" % rc)
        err = d.stderr()
        for x in SANITIZER:
            if x in err:
                fail("SIGTERM twice: %r in stderr (%s)" % (x, d.errpath))
        n = count_or_none(d.db)
        if n != 6:
            fail("SIGTERM twice: %s rows for the 6 requests" % n)
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        slow.stop()


def signals_few_fds(a):
    """triaged with 64 file descriptors and 300 clients connecting at once: it refuses
    or queues what it cannot take, answers again once they leave, and stops cleanly."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    d = Daemon(a.triaged, a.make_model, a.mock, start=False)
    d.err = open(d.errpath, "a")
    d.proc = subprocess.Popen([d.triaged, "--config", d.conf], cwd=d.dir, stderr=d.err,
                              stdout=subprocess.DEVNULL, preexec_fn=limit)
    if not poll(d.healthy):
        fail("few fds: triaged did not start with 64 descriptors: %s" % d.stderr()[-400:])
        d.finish("few fds")
        return
    socks = []
    try:
        for _ in range(300):
            try:
                socks.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
            except OSError:
                break
        results = []

        def one():
            results.append(chat(d.port)[0])

        ts = [threading.Thread(target=one) for _ in range(20)]
        for t in ts:
            t.start()
        time.sleep(1)
        for s_ in socks:
            s_.close()
        socks = []
        for t in ts:
            t.join(60)
        if d.proc.poll() is not None:
            fail("few fds: triaged died: %s" % d.stderr()[-400:])
            return
        later = []  # a breaker opened by failed backend connects answers 503 for a while

        def one_more():
            later.append(chat(d.port)[0])
            return later[-1] == 200

        if not poll(one_more, step=0.2):
            fail("few fds: no 200 once the clients left; while they stayed: %r" % results)
        # Connections that sent nothing may have rows of their own (408): count the chats.
        # Every answered chat has its row; one the client gave up on may have one too.
        answered = sum(1 for r in results + later if r)
        where = "requested_model = 'triage'"
        n = poll(lambda: (lambda k: k if k is not None and k >= answered else None)(
            count_or_none(d.db, where))) or count_or_none(d.db, where)
        if n is None or not answered <= n <= len(results + later):
            fail("few fds: %s chat rows in the log, %d chats answered of %d" %
                 (n, answered, len(results + later)))
    finally:
        for s_ in socks:
            s_.close()
        d.finish("few fds")


GROUPS = {
    "storage": [storage_disk_full, storage_deleted, storage_replaced, storage_locked,
                storage_corrupt_start],
    "reload": [reload_bad_files, reload_storm],
    "cli": [cli_bad_input],
    "signals": [signals_drain, signals_few_fds],
}


class Args:
    pass


def main():
    if len(sys.argv) < 5:
        raise SystemExit(__doc__)
    a = Args()
    a.triaged, a.triage, a.mockllm, a.make_model = (os.path.abspath(p) for p in sys.argv[1:5])
    # A group's name runs the group, a case's name (storage_locked) the case alone.
    cases = []
    for g in sys.argv[5:] or list(GROUPS):
        cases += GROUPS.get(g) or [c for cs in GROUPS.values() for c in cs if c.__name__ == g]
    mock = Mock(a.mockllm)
    a.mock = mock
    try:
        for case in cases:
            if True:
                note("-- %s" % case.__name__)
                before = len(failures)
                case(a)
                note("   %s" % ("ok" if len(failures) == before else "FAILED"))
    finally:
        mock.stop()
    if failures:
        print("%d failures" % len(failures), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
