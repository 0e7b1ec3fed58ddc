#!/usr/bin/env python3
"""evilllm.py - a broken or malicious backend for triaged's hardening tests.

    evilllm.py PORTFILE

Listens on a free port of 127.0.0.1 and writes it to PORTFILE once ready. Every POST gets
the answer its scenario names: the request body's top-level "evil" string, else the mode
last set with POST /_evil/mode (body: the scenario's name; default "ok"). GET /_evil/count
answers how many non-control requests came. Each scenario is raw bytes on the socket, so
it can be anything a real backend gets wrong: bad JSON, wrong types, invalid UTF-8, SSE
garbage, truncated streams, bad chunk sizes, wrong Content-Length, 1xx/3xx/5xx, a close
in the middle. Stops on SIGTERM.
"""
import json
import signal
import socket
import sys
import threading
import time

MODE = ["ok"]
COUNT = [0]
LOCK = threading.Lock()


def chat(content, extra=None):
    """An OpenAI chat completion's JSON with content as its text."""
    body = {"id": "chatcmpl-evil", "object": "chat.completion", "model": "evil",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    if extra:
        body.update(extra)
    return json.dumps(body).encode()


def resp(status, body, ctype=b"application/json", extra=b"", length=None):
    """A whole HTTP/1.1 answer; length overrides the Content-Length sent."""
    n = len(body) if length is None else length
    return (b"HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n"
            % (status, ctype, n, extra)) + body


def sse_head(extra=b""):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n%s\r\n" % extra)


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse(events, end=True):
    """A chunked SSE answer of events (bytes each, 'data: ' added unless present)."""
    out = sse_head()
    for e in events:
        if not e.startswith(b"data:") and not e.startswith(b"event:") and not e.startswith(b":"):
            e = b"data: " + e
        out += chunk(e + b"\n\n")
    if end:
        out += b"0\r\n\r\n"
    return out


GOOD_CHUNK = (b'{"id":"c","object":"chat.completion.chunk","model":"evil","choices":'
              b'[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}')


def lp_answer(lps):
    return chat("The answer is 4.", {"choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "The answer is 4."},
        "logprobs": {"content": lps}}]})


# scenario -> bytes to send (a whole answer) or a callable(sock) that does it
SCENARIOS = {
    "ok": resp(200, chat("fine")),
    "badjson": resp(200, b'{"choices":[{"message":{"content":"x"'),
    "notjson": resp(200, b"<html>hello</html>", b"text/html"),
    "empty": resp(200, b""),
    "jsonarray": resp(200, b"[1,2,3]"),
    "jsonstring": resp(200, b'"just a string"'),
    "jsonnull": resp(200, b"null"),
    "choices_obj": resp(200, b'{"choices":{"0":{"message":{"content":"x"}}}}'),
    "choices_empty": resp(200, b'{"choices":[],"usage":{}}'),
    "choices_num": resp(200, b'{"choices":[5,"x",null],"usage":[]}'),
    "message_num": resp(200, b'{"choices":[{"message":5,"finish_reason":7}]}'),
    "content_obj": resp(200, b'{"choices":[{"message":{"content":{"a":[1]}},"finish_reason":["stop"]}]}'),
    "content_arr": resp(200, b'{"choices":[{"message":{"content":[{"type":"text","text":5},7]}}]}'),
    "usage_str": resp(200, chat("x", {"usage": {"prompt_tokens": "7", "completion_tokens": "x"}})),
    "usage_huge": resp(200, b'{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],'
                       b'"usage":{"prompt_tokens":1e308,"completion_tokens":1e308,"total_tokens":-1}}'),
    "usage_inf": resp(200, b'{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],'
                      b'"usage":{"prompt_tokens":1e999,"completion_tokens":-1e999}}'),
    "usage_big_int": resp(200, b'{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],'
                          b'"usage":{"prompt_tokens":99999999999999999999999,'
                          b'"completion_tokens":-9223372036854775808}}'),
    "usage_neg": resp(200, chat("x", {"usage": {"prompt_tokens": -5, "completion_tokens": -9}})),
    "utf8": resp(200, b'{"choices":[{"message":{"content":"\xff\xfe\xc0\xaf"},"finish_reason":"st\xffop"}],'
                 b'"model":"\xed\xa0\x80"}'),
    "nul": resp(200, b'{"choices":[{"message":{"content":"a\\u0000b"},"finish_reason":"\\u0000"}],'
                b'"id":"\\u0000\\ud800"}'),
    "deep": resp(200, b'{"choices":' + b"[" * 5000 + b"]" * 5000 + b"}"),
    "huge_body": resp(200, chat("y" * (4 << 20))),
    "lp_types": resp(200, lp_answer([{"logprob": "x"}, 5, None, {"logprob": 1e308},
                                     {"logprob": -1e308}, {"logprob": [1]}, {"logprob": 0.5}])),
    "lp_many": resp(200, lp_answer([{"logprob": -0.01 * (i % 300)} for i in range(20000)])),
    "lp_obj": resp(200, chat("x", {"choices": [{"index": 0, "message": {"content": "x"},
                                                 "logprobs": {"content": {"a": 1}}}]})),
    "lp_str": resp(200, chat("x", {"choices": [{"index": 0, "message": {"content": "x"},
                                                 "logprobs": "many"}]})),
    "cl_short": resp(200, chat("short body longer than said"), length=10),
    "cl_long": lambda s: (s.sendall(resp(200, chat("x"), length=100000)), s.shutdown(socket.SHUT_WR)),
    "cl_bad": resp(200, chat("x"), extra=b"Content-Length: 5\r\n"),
    "cl_neg": (b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n" + chat("x")),
    "cl_junk": (b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\n" + chat("x")),
    "cl_huge": (b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n" + chat("x")),
    "te_and_cl": (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + chunk(chat("x")) + b"0\r\n\r\n"),
    "chunk_huge": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"ffffffffffffffffff\r\n" + chat("x")),
    "chunk_ovf": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"fffffffffffffff0\r\n" + chat("x")),
    "chunk_neg": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nxx\r\n0\r\n\r\n"),
    "chunk_junk": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxx\r\n0\r\n\r\n"),
    "chunk_nocrlf": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcdefghij0\r\n\r\n"),
    "chunk_ext": (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"%x;foo=bar\r\n%s\r\n0\r\nTrailer: x\r\n\r\n" % (len(chat("x")), chat("x"))),
    "te_gzip": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n" + chat("x")),
    "ce_gzip": resp(200, b"\x1f\x8b\x08\x00garbage", extra=b"Content-Encoding: gzip\r\n"),
    "s100": b"HTTP/1.1 100 Continue\r\n\r\n" + resp(200, chat("after100")),
    "s100_only": lambda s: (s.sendall(b"HTTP/1.1 100 Continue\r\n\r\n"), s.shutdown(socket.SHUT_WR)),
    "s101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n\x00\x00\x12",
    "s103": b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + resp(200, chat("after103")),
    "s100_many": b"HTTP/1.1 100 Continue\r\n\r\n" * 2000 + resp(200, chat("x")),
    "s199": b"HTTP/1.1 199 Odd\r\n\r\n" + resp(200, chat("x")),
    "s204": b"HTTP/1.1 204 No Content\r\n\r\n",
    "s204_body": b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
    "s301": resp(301, b"", extra=b"Location: http://127.0.0.1:1/v1/chat/completions\r\n"),
    "s302_loop": resp(302, b"", extra=b"Location: /v1/chat/completions\r\n"),
    "s304": b"HTTP/1.1 304 Not Modified\r\n\r\n",
    "s400": resp(400, b'{"error":{"message":"bad","type":"invalid_request_error"}}'),
    "s401_utf8": resp(401, b'{"error":{"message":"\xff\xfe bad"}}'),
    "s429": resp(429, b'{"error":"slow"}', extra=b"Retry-After: 99999999999999999999\r\n"),
    "s429_date": resp(429, b"x", extra=b"Retry-After: Wed, 21 Oct 2015 07:28:00 GMT\r\n"),
    "s500": resp(500, b"<html>oops</html>", b"text/html"),
    "s502_empty": b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n",
    "s503_json_garbage": resp(503, b'{"error":'),
    "s999": resp(999, chat("x")),
    "s000": b"HTTP/1.1 000 X\r\nContent-Length: 0\r\n\r\n",
    "status_junk": b"HTTP/1.1 2xx OK\r\nContent-Length: 0\r\n\r\n",
    "not_http": b"SSH-2.0-OpenSSH\r\n\r\n",
    "http09": chat("x"),
    "http10_close": lambda s: (s.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + chat("x")),
                               s.shutdown(socket.SHUT_WR)),
    "header_nul": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n" + resp(200, chat("x"))[17:],
    "header_utf8": b"HTTP/1.1 200 OK\r\nX-\xff: \xfe\xfd\r\n" + resp(200, chat("x"))[17:],
    "header_nocolon": b"HTTP/1.1 200 OK\r\nnocolonhere\r\n" + resp(200, chat("x"))[17:],
    "header_long": b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (1 << 20) + b"\r\n" + resp(200, chat("x"))[17:],
    "headers_many": b"HTTP/1.1 200 OK\r\n" + b"X-M: 1\r\n" * 50000 + resp(200, chat("x"))[17:],
    "header_fold": b"HTTP/1.1 200 OK\r\nX-F: a\r\n  folded\r\n" + resp(200, chat("x"))[17:],
    "bare_lf": b"HTTP/1.1 200 OK\nContent-Type: application/json\nContent-Length: %d\n\n%s" % (len(chat("x")), chat("x")),
    "ctype_sse_json": resp(200, chat("x"), b"text/event-stream"),
    "close_now": lambda s: s.close(),
    "close_head": lambda s: (s.sendall(b"HTTP/1.1 200 OK\r\nContent-Le"), s.close()),
    "close_body": lambda s: (s.sendall(resp(200, chat("x" * 500))[:150]), s.close()),
    "rst": lambda s: (s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"),
                      s.close()),
    "slow_head": lambda s: [(s.sendall(bytes([b])), time.sleep(0.02)) for b in resp(200, chat("x"))[:60]],
    # streams
    "sse_ok": sse([GOOD_CHUNK, b"[DONE]"]),
    "sse_garbage": sse([b"{not json", b"garbage line", b"\xff\xfe", b"event: x\ndata: {}", b": comment",
                        b"data:", b'{"choices":5}', b'{"choices":[{"delta":5}]}', b'{"choices":[{"delta":{"content":7}}]}',
                        b'{"usage":"x"}', b'{"usage":{"completion_tokens":1e999}}', b"[DONE]", b"after done"]),
    "sse_nodone": sse([GOOD_CHUNK, GOOD_CHUNK]),
    "sse_trunc": lambda s: (s.sendall(sse_head() + chunk(b"data: " + GOOD_CHUNK + b"\n\n") + b"50\r\ndata: {\"ch"),
                            s.close()),
    "sse_bigline": sse([b"{" + b"a" * (8 << 20)]),
    "sse_bigchunk": sse([b'{"choices":[{"delta":{"content":"' + b"b" * (3 << 20) + b'"}}]}', b"[DONE]"]),
    "sse_many": sse([GOOD_CHUNK] * 20000 + [b"[DONE]"]),
    "sse_utf8": sse([b'{"choices":[{"delta":{"content":"\xff\xc3"},"finish_reason":"\xfe"}]}', b"[DONE]"]),
    "sse_nul": sse([b'{"choices":[{"delta":{"content":"a\\u0000"}}]}\x00\x00', b"[DONE]"]),
    "sse_crlf": sse_head() + chunk(b"data: " + GOOD_CHUNK + b"\r\n\r\n" + b"data: [DONE]\r\r\r\n") + b"0\r\n\r\n",
    "sse_noLF": sse_head() + chunk(b"data: " + GOOD_CHUNK) + b"0\r\n\r\n",
    "sse_err": sse([b'{"error":{"message":"\xff","type":5}}']),
    "sse_deep": sse([b"[" * 100000 + b"]" * 100000, b"[DONE]"]),
    "sse_lp": sse([b'{"choices":[{"delta":{"content":"x"},"logprobs":{"content":[{"logprob":"a"},{"logprob":1e999}]}}]}',
                   b"[DONE]"]),
    # Anthropic-shaped streams
    "ant_garbage": sse([b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":5}",
                        b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":\"x\"},\"delta\":{\"stop_reason\":7}}",
                        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":[1]}}",
                        b"event: message_stop\ndata: {garbage", b"event: \xff\ndata: \xff"]),
    "ant_json_types": resp(200, b'{"type":"message","content":"x","usage":{"input_tokens":"a","output_tokens":1e999},'
                           b'"stop_reason":[1]}'),
    "ant_content_types": resp(200, b'{"type":"message","content":[5,{"type":"text","text":7},{"type":5}],'
                              b'"usage":5,"stop_reason":"end_turn"}'),
    # Responses-shaped
    "resp_types": resp(200, b'{"id":5,"object":"response","output":"x","usage":{"input_tokens":[],"output_tokens":{}}}'),
    "resp_id_long": resp(200, b'{"id":"' + b"r" * 100000 + b'","object":"response","output":[],"usage":{}}'),
    "resp_id_utf8": resp(200, b'{"id":"\xff\x00","object":"response","output":[{"type":"message","content":5}]}'),
    "resp_sse": sse([b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":7,\"usage\":\"u\"}}",
                     b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":5}",
                     b"{\"type\":\"response.created\",\"response\":[]}", b"{\"type\":7}"]),
    # embeddings
    "emb_types": resp(200, b'{"object":"list","data":5,"usage":{"prompt_tokens":"x"}}'),
}


def read_request(f):
    """Reads one request from file f; returns (method, path, body) or None at EOF."""
    line = f.readline(65536)
    if not line:
        return None
    parts = line.split()
    if len(parts) < 2:
        return None
    headers = {}
    while True:
        h = f.readline(65536)
        if not h or h in (b"\r\n", b"\n"):
            break
        k, _, v = h.partition(b":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if b"content-length" in headers:
        body = f.read(int(headers[b"content-length"]))
    elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            n = int(f.readline().split(b";")[0], 16)
            if n == 0:
                f.readline()
                break
            body += f.read(n)
            f.readline()
    return parts[0], parts[1], body


def serve(s):
    f = s.makefile("rb")
    try:
        while True:
            rq = read_request(f)
            if rq is None:
                break
            method, path, body = rq
            if path.startswith(b"/_evil/"):
                if path == b"/_evil/mode":
                    MODE[0] = body.decode()
                    s.sendall(resp(200, b"{}"))
                else:
                    s.sendall(resp(200, json.dumps({"count": COUNT[0]}).encode()))
                continue
            with LOCK:
                COUNT[0] += 1
            name = MODE[0]
            try:
                j = json.loads(body)
                if isinstance(j, dict) and isinstance(j.get("evil"), str):
                    name = j["evil"]
            except ValueError:
                pass
            what = SCENARIOS.get(name, SCENARIOS["ok"])
            if callable(what):
                what(s)
                return
            s.sendall(what)
    except (OSError, ValueError):
        pass
    finally:
        try:
            s.close()
        except OSError:
            pass


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(256)
    with open(sys.argv[1] + ".tmp", "w") as pf:
        pf.write(str(ls.getsockname()[1]))
    import os
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    if len(sys.argv) == 2 and sys.argv[1] == "--list":
        print("\n".join(SCENARIOS))
    else:
        main()
