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
import subprocess
import sys
import tempfile
import threading
import time

failures = []
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
        its directory unless something failed."""
        before = len(failures)
        rc = self.stop()
        if rc != 0:
            fail("%s: triaged exited %d; see %s" % (what, rc, self.errpath))
        for s in SANITIZER:
            if s in self.stderr():
                fail("%s: %r in triaged's stderr (%s)" % (what, s, self.errpath))
                break
        if len(failures) == before:
            shutil.rmtree(self.dir, ignore_errors=True)


def rows(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
    try:
        return c.execute("SELECT count(*) FROM requests").fetchone()[0]
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


def expect_rows(d, n, what):
    """The log ends up holding n rows (its writer retries once the fault is gone)."""
    got = poll(lambda: (lambda k: k if k == n else None)(count_or_none(d.db)))
    if got != n:
        fail("%s: %s rows in the log, %d requests served (readyz %r)" %
             (what, count_or_none(d.db), n, d.readyz()))


def count_or_none(db):
    try:
        return rows(db)
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
        if st not in (500, 503):
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
        time.sleep(12)
        if not d.healthy():
            fail("locked: /healthz does not answer")
        release.set()
        t.join()
        expect_rows(d, 7, "locked: after the lock went")
    finally:
        d.finish("locked")


def storage_corrupt_start(a):
    d = Daemon(a.triaged, a.make_model, a.mock, start=False)
    with open(d.db, "wb") as f:
        f.write(b"SQLite format 3\0" + os.urandom(4096 - 16))
    d.start(wait=False)
    try:
        rc = d.proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        rc = None
    d.err.close()
    if rc is None:
        # Serving is fine too, if it says so and answers.
        if not d.healthy():
            fail("corrupt log at start: neither answers nor exits")
        d.start  # noqa: keep the object whole
        d.proc.terminate()
        d.proc.wait(30)
        return
    if rc < 0 or rc > 125:
        fail("corrupt log at start: triaged died of signal/status %d" % rc)
    err = d.stderr()
    if d.db not in err and "t.db" not in err:
        fail("corrupt log at start: the error does not name the file: %r" % err[-400:])
    for s in SANITIZER:
        if s in err:
            fail("corrupt log at start: %r in stderr" % s)


GROUPS = {
    "storage": [storage_disk_full, storage_deleted, storage_replaced, storage_locked,
                storage_corrupt_start],
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
