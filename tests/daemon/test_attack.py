#!/usr/bin/env python3
"""test_attack.py - hostile clients and a hostile backend against one triaged.

    test_attack.py TRIAGED MAKE_MODEL [GROUP...]

Raw sockets, because the bytes that matter are ones no client library sends. triaged runs
with policy = cascade, per-key budgets, the learning loop (shadow + judge) and an
Anthropic backend, in front of tests/mock/evilllm.py. Every request must get a valid
answer or a JSON error in its path's dialect (Anthropic-style on /v1/messages), /healthz
must answer after each case, every request that reached an API path must leave a row in
the outcome log, and the daemon's stderr must hold no sanitizer report.
Groups: client, backend (default: both).
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
EVIL = os.path.join(HERE, "..", "mock", "evilllm.py")
KEY = "sk-triage-attack-alice"
KEY_BOB = "sk-triage-attack-bob"
API_PATHS = ["/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings",
             "/v1/messages"]
OTHER_PATHS = ["/v1/models", "/v1/models/fast", "/v1/feedback", "/v1/stats", "/healthz",
               "/readyz", "/admin/reload", "/metrics", "/dashboard", "/dashboard/x", "/",
               "/nope"]
failures = []


def fail(what):
    failures.append(what)
    print("FAIL: " + what, file=sys.stderr)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


class Daemon:
    def __init__(self, triaged, make_model):
        triaged, make_model = os.path.abspath(triaged), os.path.abspath(make_model)
        self.dir = tempfile.mkdtemp(prefix="triage-attack-")
        self.proc = None
        self.port = free_port()
        portfile = os.path.join(self.dir, "evil.port")
        self.evil = subprocess.Popen([sys.executable, EVIL, portfile], stdout=subprocess.DEVNULL)
        try:
            self.start(triaged, make_model, portfile)
        except BaseException:
            self.evil.kill()
            self.evil.wait()
            if self.proc:
                self.proc.kill()
                self.proc.wait()
            raise

    def start(self, triaged, make_model, portfile):
        for _ in range(200):
            if os.path.exists(portfile):
                break
            time.sleep(0.05)
        self.evil_port = int(open(portfile).read())
        subprocess.check_call([make_model, os.path.join(self.dir, "m.tmod")],
                              stdout=subprocess.DEVNULL)
        with open(os.path.join(self.dir, "keys"), "w") as f:
            f.write("alice %s budget_usd=50/day\n" % hashlib.sha256(KEY.encode()).hexdigest())
            f.write("bob %s\n" % hashlib.sha256(KEY_BOB.encode()).hexdigest())
        self.db = os.path.join(self.dir, "t.db")
        url = "http://127.0.0.1:%d/v1" % self.evil_port
        conf = os.path.join(self.dir, "t.conf")
        with open(conf, "w") as f:
            f.write("[server]\nlisten = 127.0.0.1\nport = %d\nworkers = 2\nmax_body = 1m\n"
                    "max_header = 16k\nread_timeout_ms = 2000\nidle_timeout_ms = 3000\n"
                    "shutdown_timeout_ms = 2000\n"
                    "forward_headers = OpenAI-Beta, anthropic-beta\n"
                    "[auth]\nkeys_file = keys\nrate_limit_rpm = 0\nbudget_refresh_ms = 200\n"
                    "[router]\nmodel = m.tmod\naliases = triage\npolicy = cascade\n"
                    "tiers = fast, strong\ncascade_low = 0\ncascade_high = 1\n"
                    "escalate_at = 0.5\nsticky = yes\nfallback = strong, fast\n"
                    "[storage]\npath = t.db\nstore_prompts = full\nflush_interval_ms = 20\n"
                    "[learning]\nshadow_rate = 1\njudge = strong\nmax_concurrent = 4\n"
                    "retrain_every = 0\n"
                    "[backend fast]\nurl = %s\nprice_input = 1\nprice_output = 1\n"
                    "max_retries = 0\ntimeout_ms = 3000\nfirst_byte_timeout_ms = 1500\n"
                    "idle_timeout_ms = 1500\nbreaker_failures = 1000\n"
                    "[backend strong]\nurl = %s\nprice_input = 10\nprice_output = 30\n"
                    "max_retries = 0\ntimeout_ms = 3000\nfirst_byte_timeout_ms = 1500\n"
                    "idle_timeout_ms = 1500\nbreaker_failures = 1000\n"
                    "[backend claude]\nurl = %s\napi = anthropic\nprice_input = 3\n"
                    "price_output = 15\nmax_retries = 0\ntimeout_ms = 3000\n"
                    "first_byte_timeout_ms = 1500\nidle_timeout_ms = 1500\n"
                    "breaker_failures = 1000\n" % (self.port, url, url, url))
        self.errpath = os.path.join(self.dir, "triaged.err")
        self.err = open(self.errpath, "w")
        self.proc = subprocess.Popen([triaged, "--config", conf], cwd=self.dir,
                                     stderr=self.err, stdout=subprocess.DEVNULL)
        for _ in range(200):
            if self.alive():
                return
            time.sleep(0.05)
        raise SystemExit("triaged did not start; see " + self.errpath)

    def alive(self):
        if self.proc.poll() is not None:
            return False
        try:
            r = raw(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5)
            return r.startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    def mode(self, name):
        raw(self.evil_port, b"POST /_evil/mode HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s"
            % (len(name), name.encode()), 5, until_body=True)

    def stop(self):
        """Stops both; returns triaged's exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self.evil.terminate()
        self.evil.wait(5)
        self.err.close()
        return rc


def raw(port, data, timeout=8, until_body=False, shut=False):
    """Sends data on a new connection, returns all bytes until the peer closes, the
    timeout passes, or (until_body) one whole Content-Length answer has come."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        end = time.time() + timeout
        while time.time() < end:
            try:
                b = s.recv(65536)
            except socket.timeout:
                break
            if not b:
                break
            out += b
            if until_body and b"\r\n\r\n" in out:
                head, _, body = out.partition(b"\r\n\r\n")
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        if len(body) >= int(line.split(b":")[1]):
                            return out
    except OSError:  # the daemon may close before it has read all, or reset
        pass
    finally:
        s.close()
    return out


def answers(out):
    """Splits raw bytes into [(status, headers dict, body)] (Content-Length or chunked)."""
    res = []
    while out.startswith(b"HTTP/"):
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.split(b"\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            break
        h = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            h[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
        if "content-length" in h:
            n = int(h["content-length"])
            body, out = rest[:n], rest[n:]
        elif h.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size, _, rest = rest.partition(b"\r\n")
                try:
                    n = int(size.split(b";")[0], 16)
                except ValueError:
                    n = 0
                if n == 0:
                    rest = rest.partition(b"\r\n")[2]
                    break
                body += rest[:n]
                rest = rest[n + 2:]
            out = rest
        else:
            body, out = rest, b""
        res.append((status, h, body))
    return res


# Errors libmicrohttpd answers before the path is known (daemon/http/mhd_errors.c): OpenAI's
# shape on every path, /v1/messages too.
MHD_CODES = ("headers_too_large", "invalid_request", "http_version_not_supported",
             "body_too_large")


def check_error(case, path, status, body):
    """body is a JSON error of path's dialect."""
    try:
        j = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        fail("%s: %d body is not UTF-8 JSON: %r" % (case, status, body[:200]))
        return
    if not isinstance(j, dict) or not isinstance(j.get("error"), dict):
        fail("%s: %d not an error object: %r" % (case, status, body[:200]))
        return
    e = j["error"]
    if path == "/v1/messages" and e.get("code") not in MHD_CODES:
        if j.get("type") != "error" or not isinstance(e.get("type"), str) or \
                not isinstance(e.get("message"), str):
            fail("%s: %d not an Anthropic error: %r" % (case, status, body[:200]))
    elif not isinstance(e.get("message"), str) or not isinstance(e.get("code"), (str, type(None))):
        fail("%s: %d not an OpenAI error: %r" % (case, status, body[:200]))


def check_sse(case, path, body):
    """Each event's data is JSON (or [DONE]) and UTF-8."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        fail("%s: SSE is not UTF-8: %r" % (case, body[:200]))
        return
    for ev in text.split("\n\n"):
        for line in ev.split("\n"):
            if line.startswith("data:"):
                d = line[5:].strip()
                if d == "[DONE]":
                    continue
                try:
                    json.loads(d)
                except (ValueError, RecursionError):
                    fail("%s: SSE data is not JSON: %r" % (case, d[:200]))


def check_answer(d, case, path, out, want=None, stream=False):
    """out holds at least one answer: a valid one or an error of path's dialect."""
    a = answers(out)
    if not a:
        fail("%s: no HTTP answer: %r" % (case, out[:200]))
        return None
    status, h, body = a[0]
    if want and status not in want:
        fail("%s: status %d, wanted %s: %r" % (case, status, want, body[:200]))
    if status >= 400:
        ctype = h.get("content-type", "")
        if "text/event-stream" in ctype:
            check_sse(case, path, body)
        elif status != 405 or body:
            check_error(case, path, status, body)
    elif "text/event-stream" in h.get("content-type", ""):
        check_sse(case, path, body)
    elif status == 200 and path in API_PATHS:
        try:
            json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            fail("%s: 200 body is not UTF-8 JSON: %r" % (case, body[:200]))
    return status


def post(path, body, headers=b"", key=KEY, method=b"POST"):
    if isinstance(body, str):
        body = body.encode()
    auth = b""
    if key:
        auth = (b"x-api-key: %s\r\n" % key.encode()) if path == "/v1/messages" else \
            (b"Authorization: Bearer %s\r\n" % key.encode())
    if path == "/v1/messages":
        headers += b"anthropic-version: 2023-06-01\r\n"
    return (b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s%s"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (method, path.encode(), auth, headers, len(body), body))


def good_body(path, model="triage", **kw):
    if path == "/v1/chat/completions":
        b = {"model": model, "messages": [{"role": "user", "content": "What is 2+2?"}]}
    elif path == "/v1/responses":
        b = {"model": model, "input": "What is 2+2?"}
    elif path == "/v1/completions":
        b = {"model": model, "prompt": "What is 2+2?"}
    elif path == "/v1/embeddings":
        b = {"model": "fast" if model == "triage" else model, "input": "hello"}
    else:
        b = {"model": "claude" if model == "triage" else model, "max_tokens": 10,
             "messages": [{"role": "user", "content": "What is 2+2?"}]}
    b.update(kw)
    return b


def expect_alive(d, case):
    if not d.alive():
        fail("%s: daemon down after it" % case)
        raise SystemExit(1)


def wrong_types():
    """(path, body) pairs with a wrong type in a field the handlers read."""
    weird = [None, True, 0, -1, 1e308, 12345678901234567890123, "x", "\u0000",
             "\udfff" if False else "\u00ff", [], [None], [1, "a", {}], {}, {"a": {"b": []}},
             "a" * 70000]
    fields = {
        "/v1/chat/completions": ["model", "messages", "stream", "max_tokens", "tools", "n",
                                 "logprobs", "top_logprobs", "stream_options", "temperature",
                                 "user", "metadata", "tool_choice", "response_format"],
        "/v1/responses": ["model", "input", "instructions", "stream", "max_output_tokens",
                          "tools", "previous_response_id", "store", "reasoning"],
        "/v1/completions": ["model", "prompt", "stream", "max_tokens", "logprobs", "n",
                            "echo", "suffix", "best_of"],
        "/v1/embeddings": ["model", "input", "encoding_format", "dimensions"],
        "/v1/messages": ["model", "messages", "system", "max_tokens", "stream", "tools",
                         "metadata", "stop_sequences", "thinking"],
    }
    for path, fs in fields.items():
        for f in fs:
            for w in weird:
                b = good_body(path)
                b[f] = w
                yield path, "%s %s=%r" % (path, f, w if not isinstance(w, str) else w[:10]), b
    # inside messages / parts
    inner = [
        [{"role": 5, "content": "x"}], [{"content": "x"}], [{"role": "user", "content": 5}],
        [{"role": "user", "content": [5]}], [{"role": "user", "content": [{"type": 5, "text": 7}]}],
        [{"role": "user", "content": [{"type": "text", "text": ["a"]}]}],
        [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}],
        [{"role": "user", "content": None}], [{"role": "user", "content": {"text": "x"}}],
        [{"role": "tool", "content": "x", "tool_call_id": 5}],
        [{"role": "assistant", "content": None, "tool_calls": [5, {"function": 7}]}],
        [{"role": "user", "content": "x", "name": {"a": 1}}], [[]], [None], ["user"],
        [{"role": "user", "content": [{"type": "text", "text": "a" * 100000}] * 5}],
        [{"role": "\u0000\uffff", "content": "\u0000"}],
    ]
    for path in ("/v1/chat/completions", "/v1/messages"):
        for m in inner:
            b = good_body(path)
            b["messages"] = m
            yield path, "%s messages=%s" % (path, json.dumps(m)[:40]), b
    for inp in [[5], [None], [{"role": 5}], [{"role": "user", "content": 5}],
                [{"type": "function_call_output", "output": 5}], [{"output": ["x"]}],
                [{"role": "user", "content": [{"type": "input_text", "text": 5}]}],
                [[1, 2]], [{"role": "user", "content": [5, None]}]]:
        yield "/v1/responses", "responses input=%s" % json.dumps(inp)[:40], \
            good_body("/v1/responses", input=inp)
    for p in [[1, 2, 3], [[1, 2], [3]], [[-1, 1e30]], [None], [{}], [[]], [], [""], [[["x"]]],
              [1e308], [-9223372036854775809]]:
        yield "/v1/completions", "completions prompt=%s" % json.dumps(p)[:40], \
            good_body("/v1/completions", prompt=p)
        yield "/v1/embeddings", "embeddings input=%s" % json.dumps(p)[:40], \
            good_body("/v1/embeddings", input=p)
    for s in [[5], [{"type": "text", "text": 5}], [{"text": ["x"]}], [None], [[]], {"a": 1}, 5,
              [{"type": "text", "text": "x", "cache_control": 5}]]:
        yield "/v1/messages", "messages system=%s" % json.dumps(s)[:40], \
            good_body("/v1/messages", system=s)


def client_cases(d):
    n = 0
    # every path x every method
    for path in API_PATHS + OTHER_PATHS:
        for m in [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"TRACE",
                  b"CONNECT", b"FOO", b"G\xffT", b"get"]:
            body = json.dumps(good_body(path)) if path in API_PATHS else "{}"
            case = "%s %s" % (m.decode("latin-1"), path)
            out = raw(d.port, post(path, body, method=m))
            if m != b"HEAD":
                check_answer(d, case, path, out)
            expect_alive(d, case)
            n += 1
    # bytes in the request line, path, query, headers
    bad = [b"\x00", b"\xff", b"\x7f", b"\x01\x02", b"\xc0\xaf", b"\xed\xa0\x80", b"%00", b"%ff",
           b"%", b"%%", b"\t", b"\r", b"a" * 9000, b"\xe2\x80\xae"]
    for path in API_PATHS:
        for x in bad:
            for where in ("path", "query", "hname", "hvalue", "auth", "triage", "conv",
                          "version", "xkey", "share"):
                p, hdr = path.encode(), b""
                key = KEY
                if where == "path":
                    p += x
                elif where == "query":
                    p += b"?a=" + x + b"&" + x + b"=1"
                elif where == "hname":
                    hdr = b"X-" + x + b": 1\r\n"
                elif where == "hvalue":
                    hdr = b"X-Foo: " + x + b"\r\n"
                elif where == "auth":
                    key = None
                    hdr = b"Authorization: Bearer " + x + b"\r\n"
                elif where == "triage":
                    hdr = (b"x-triage-threshold: " + x + b"\r\nx-triage-route: " + x +
                           b"\r\nx-triage-model: " + x + b"\r\n")
                elif where == "conv":
                    hdr = (b"x-triage-conversation: " + x + b"\r\nx-triage-session: " + x +
                           b"\r\nx-triage-sticky: " + x + b"\r\n")
                elif where == "version":
                    hdr = b"anthropic-version: " + x + b"\r\nanthropic-beta: " + x + b"\r\n"
                elif where == "xkey":
                    key = None
                    hdr = b"x-api-key: " + x + b"\r\n"
                else:
                    hdr = (b"x-triage-strong-share: " + x + b"\r\nx-triage-budget: " + x +
                           b"\r\nOpenAI-Beta: " + x + b"\r\n")
                body = json.dumps(good_body(path)).encode()
                auth = b""
                if key:
                    auth = b"Authorization: Bearer " + key.encode() + b"\r\n"
                    if path == "/v1/messages":
                        auth = b"x-api-key: " + key.encode() + b"\r\n"
                if path == "/v1/messages" and where != "version":
                    hdr += b"anthropic-version: 2023-06-01\r\n"
                req = (b"POST " + p + b" HTTP/1.1\r\nHost: x\r\n" + auth + hdr +
                       b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
                case = "%s %s=%r" % (path, where, x[:12])
                out = raw(d.port, req)
                if out:  # a close with no answer is allowed for unparsable heads
                    check_answer(d, case, path if where != "path" else "/other", out)
                expect_alive(d, case)
                n += 1
    # bodies
    bodies = [b"", b"\xff\xfe", b"{\"model\":\"triage\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\"}]}",
              b"[" * 100000 + b"]" * 100000, b"{\"a\":" * 50000 + b"1" + b"}" * 50000,
              b"{\"model\":\"triage\",\"max_tokens\":1e999999}", b"null", b"[]", b"\"s\"", b"1",
              b"{\"model\":\"triage\"," + b"\"k\":1," * 100000 + b"\"z\":0}", b"\x00" * 100,
              b"{\"model\":\"\\u0000\"}", b"{\"model\":\"triage\\ud800\"}", b"{\"model\":\"triage\"}\x00",
              b"{\"model\":\"triage\"} {\"x\":1}", b"{\"model\":[\"triage\"]}", b"{\"model\":\"triage:9e999\"}",
              b"{\"model\":\"triage:-1\"}", b"{\"model\":\"triage:nan\"}", b"{\"model\":\"triage:\"}",
              b"{\"model\":\"" + b"m" * 100000 + b"\"}"]
    for path in API_PATHS:
        for b in bodies:
            case = "%s body=%r" % (path, b[:30])
            check_answer(d, case, path, raw(d.port, post(path, b)))
            expect_alive(d, case)
            n += 1
    for path, case, b in wrong_types():
        out = raw(d.port, post(path, json.dumps(b)))
        check_answer(d, case, path, out)
        expect_alive(d, case)
        n += 1
    # streams of each path, through the cascade
    for path in API_PATHS:
        for st in (True, False):
            b = good_body(path, stream=st)
            if st and path == "/v1/chat/completions":
                b["stream_options"] = {"include_usage": True}
            case = "%s stream=%s" % (path, st)
            check_answer(d, case, path, raw(d.port, post(path, json.dumps(b))), want=[200])
            expect_alive(d, case)
    # framing: chunked bodies with bad sizes, over-limit, pipelining
    frames = [
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nx\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdefgh\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n" + b"a" * 0x100000 + b"\r\n100000\r\n" + b"a" * 0x100000 + b"\r\n0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + b"X: a\r\n" * 5000 + b"\r\n",
        b"POST /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 50,
        b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET http://x/healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 999-weird\r\nContent-Length: 2\r\n\r\n{}",
    ]
    for path in API_PATHS:
        body = json.dumps(good_body(path)).encode()
        frames.append(post(path, body).replace(b"Connection: close\r\n", b"") * 3)
    for i, f in enumerate(frames):
        for shut in (False, True):
            case = "frame %d shut=%s %r" % (i, shut, f[:40])
            out = raw(d.port, f, timeout=4, shut=shut)
            for st, h, b in answers(out):
                # libmicrohttpd 0.9.75 writes its answer's head twice for a
                # Content-Length that is not a number or too large (its state machine
                # goes on after the error): the status is right, the body is not ours
                if st >= 400 and b and not b.startswith(b"HTTP/1.1 "):
                    check_error(case, "/", st, b)
            expect_alive(d, case)
    # slowloris + flood: many idle and half-sent connections, then a real request
    socks = []
    for i in range(300):
        try:
            s = socket.create_connection(("127.0.0.1", d.port), timeout=2)
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
                      if i % 2 else b"GET /heal")
            socks.append(s)
        except OSError:
            break
    expect_alive(d, "flood of 300 half-sent connections")
    for s in socks:
        s.close()
    expect_alive(d, "after the flood")
    return n


def rows(d):
    con = sqlite3.connect(d.db, timeout=10)
    try:
        return con.execute("SELECT count(*) FROM requests WHERE kind IS NULL OR kind = 'client'"
                           ).fetchone()[0]
    except sqlite3.Error:
        return -1
    finally:
        con.close()


def check_backend_answer(case, path, out, sc):
    """What a broken backend gets the client: an answer with a status HTTP has; a 2xx one
    held whole is a JSON object; triage's own error (a code backend_*) is in the path's
    dialect. The backend's own errors (4xx, 5xx) and its streams' events are relayed as
    they came (daemon/README.md)."""
    a = answers(out)
    if not a:
        fail("%s: no HTTP answer: %r" % (case, out[:200]))
        return
    status, h, body = a[0]
    if not 200 <= status <= 599:
        fail("%s: status %d relayed" % (case, status))
    if "text/event-stream" in h.get("content-type", ""):
        if sc.startswith("sse_ok") or sc in ("sse_crlf", "sse_many", "sse_nodone", "sse_trunc"):
            check_sse(case, path, body)
        return
    try:
        j = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        j = None
    if 200 <= status <= 299 and not isinstance(j, dict):
        fail("%s: %d with a body that is not a JSON object: %r" % (case, status, body[:200]))
    e = j.get("error") if isinstance(j, dict) else None
    if isinstance(e, dict) and str(e.get("code", "")).startswith("backend_") or \
            isinstance(e, dict) and e.get("type") in ("api_error", "overloaded_error") and \
            status in (502, 503, 504):
        check_error(case, path, status, body)


# (path, model, stream) each scenario is tried on: every path, routed (chat through the
# cascade, whose fast answer is parsed for signals and logprobs) and passed through,
# JSON and SSE.
BACKEND_CASES = [
    ("/v1/chat/completions", "triage", False), ("/v1/chat/completions", "triage", True),
    ("/v1/chat/completions", "fast", True), ("/v1/responses", "triage", False),
    ("/v1/responses", "fast", True), ("/v1/completions", "triage", True),
    ("/v1/embeddings", "fast", False), ("/v1/messages", "claude", False),
    ("/v1/messages", "triage", True),
]


def backend_cases(d, scenarios):
    sent = 0
    for sc in scenarios:
        d.mode(sc)  # the judge and shadow calls have no "evil" field
        for path, m, st in BACKEND_CASES:
            b = good_body(path, model=m, evil=sc)
            if st:
                b["stream"] = True
            case = "backend %s %s model=%s stream=%s" % (sc, path, m, st)
            out = raw(d.port, post(path, json.dumps(b), key=KEY_BOB), timeout=12)
            sent += 1
            check_backend_answer(case, path, out, sc)
            expect_alive(d, case)
    d.mode("ok")
    return sent


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    groups = sys.argv[3:] or ["client", "backend"]
    d = Daemon(sys.argv[1], sys.argv[2])
    try:
        if "client" in groups:
            n = client_cases(d)
            print("client: %d cases" % n)
        if "backend" in groups:
            import importlib.util
            spec = importlib.util.spec_from_file_location("evil", EVIL)
            evil = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(evil)
            names = [s for s in evil.SCENARIOS if s not in ("slow_head",)]
            before = rows(d)
            sent = backend_cases(d, names)
            # every client request leaves a row, whatever the backend did
            end = time.time() + 20
            while time.time() < end and rows(d) < before + sent:
                time.sleep(0.2)
            if rows(d) < before + sent:
                fail("outcome log: %d rows for %d requests" % (rows(d) - before, sent))
            print("backend: %d scenarios, %d requests" % (len(names), sent))
    finally:
        rc = d.stop()
    err = open(d.errpath, errors="replace").read()
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
        if marker in err:
            i = err.index(marker)
            fail("sanitizer: " + err[max(0, i - 200):i + 3000])
    if rc != 0:
        fail("triaged exited %d" % rc)
    print("%s: %d failures (daemon log %s)" % ("FAIL" if failures else "PASS", len(failures),
                                               d.errpath))
    if not failures:
        shutil.rmtree(d.dir, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
